"""How everything outside the train step calls a network under a tf.distribute strategy: through
`strategy.run` in a compiled function, each replica on its own rows, as the train step itself runs
(`distributed_call` for row-wise calls, `replica_rows` for a replica's share of a global batch)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

__all__ = ["replica_rows", "distributed_call"]


def replica_rows(*tensors: tf.Tensor) -> list[tf.Tensor]:
    """This replica's share of each global-batch tensor, in replica context: replica r of N takes rows
    [r·B/N, (r+1)·B/N) (B must be a multiple of N). Under no strategy, the tensors unchanged."""
    context = tf.distribute.get_replica_context()
    replicas = context.num_replicas_in_sync if context else 1
    replica = context.replica_id_in_sync_group if context else 0
    shares = []
    for tensor in tensors:
        rows = tf.shape(tensor)[0] // replicas
        shares.append(tensor[replica * rows:(replica + 1) * rows])
    return shares


def distributed_call(fn: Callable, strategy: tf.distribute.Strategy | None = None) -> Callable:
    """`call(*arrays)`: `fn(*tensors)` on every replica of `strategy` (default: the current one), each on
    its own equal share of the rows of the global `arrays`, in one compiled function (traced once per
    input shape); returns `fn`'s outputs for all the rows, in order, as numpy arrays (any nest of them).

    For row-wise functions (a network in inference mode): the rows are padded to a multiple of the
    replica count by repeating the last one, and the padding is cut from the outputs. This is how the
    sample grids, attention maps and evaluation samples run on GPUs and TPUs (under TPUStrategy a
    network's variables can only be read inside `strategy.run`).
    """
    strategy = strategy or tf.distribute.get_strategy()
    # Several hosts: every worker gathers all rows (a collective). One host: this process holds every
    # replica's result, so they are concatenated here, without a collective.
    gather = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)

    @tf.function(reduce_retracing=True)
    def run(*args):
        outputs = strategy.run(lambda *rows: fn(*replica_rows(*rows)), args=args)
        return tf.nest.map_structure(lambda value: strategy.gather(value, axis=0), outputs) if gather else outputs

    def rows_of(value):
        if gather:
            return np.asarray(value)
        return np.concatenate([np.asarray(part) for part in strategy.experimental_local_results(value)])

    def call(*arrays):
        arrays = [np.asarray(array) for array in arrays]
        num, replicas = len(arrays[0]), strategy.num_replicas_in_sync
        padding = -num % replicas
        if padding:
            arrays = [np.concatenate([array, np.repeat(array[-1:], padding, axis=0)]) for array in arrays]
        return tf.nest.map_structure(lambda value: rows_of(value)[:num], run(*arrays))

    return call
