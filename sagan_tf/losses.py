"""GAN losses as per-example vectors (the caller averages over the GLOBAL batch).

Hinge (the paper, after Lim & Ye 2017 and Miyato et al. 2018):
    L_D = E[relu(1 − D(x, y))] + E[relu(1 + D(G(z), y))],   L_G = −E[D(G(z), y)]
Non-saturating (Goodfellow et al. 2014), as an ablation:
    L_D = E[softplus(−D(x, y))] + E[softplus(D(G(z), y))],  L_G = E[softplus(−D(G(z), y))]
All computed in float32.
"""
from __future__ import annotations

from typing import Callable

import tensorflow as tf
from keras import ops

__all__ = ["hinge_d_loss", "hinge_g_loss", "non_saturating_d_loss", "non_saturating_g_loss", "get_losses"]


def hinge_d_loss(real_logits: tf.Tensor, fake_logits: tf.Tensor) -> tf.Tensor:
    real_logits, fake_logits = ops.cast(real_logits, "float32"), ops.cast(fake_logits, "float32")
    return ops.relu(1.0 - real_logits) + ops.relu(1.0 + fake_logits)


def hinge_g_loss(fake_logits: tf.Tensor) -> tf.Tensor:
    return -ops.cast(fake_logits, "float32")


def non_saturating_d_loss(real_logits: tf.Tensor, fake_logits: tf.Tensor) -> tf.Tensor:
    real_logits, fake_logits = ops.cast(real_logits, "float32"), ops.cast(fake_logits, "float32")
    return ops.softplus(-real_logits) + ops.softplus(fake_logits)


def non_saturating_g_loss(fake_logits: tf.Tensor) -> tf.Tensor:
    return ops.softplus(-ops.cast(fake_logits, "float32"))


LOSSES = {
    "hinge": (hinge_d_loss, hinge_g_loss),
    "non_saturating": (non_saturating_d_loss, non_saturating_g_loss),
}


def get_losses(name: str) -> tuple[Callable[[tf.Tensor, tf.Tensor], tf.Tensor], Callable[[tf.Tensor], tf.Tensor]]:
    """Returns (d_loss_fn, g_loss_fn) for `name` in LOSSES."""
    if name not in LOSSES:
        raise ValueError(f"Unknown loss {name!r}; allowed: {sorted(LOSSES)}.")
    return LOSSES[name]
