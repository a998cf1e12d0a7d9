"""Checks of layer arguments that the networks' model fields and the config validate too, without
TensorFlow (`sagan_tf.config` reads them while a trainer parses its flags)."""
from __future__ import annotations

__all__ = ["check_query_block"]


def check_query_block(query_block, name: str = "query_block") -> int:
    """`query_block` as an int >= 0, or a ValueError naming `name` (the layer's argument, or the config
    field ``config.attention_query_block``) and the value. The one check of the layer, the networks'
    model fields and the config validation."""
    if isinstance(query_block, bool) or not isinstance(query_block, int) or query_block < 0:
        raise ValueError(f"{name}={query_block!r} is not allowed; allowed: an integer >= 0 "
                         f"(query rows per attention block; 0 = one einsum over all queries).")
    return query_block
