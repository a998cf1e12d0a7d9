"""How everything outside the train step calls a network under a tf.distribute strategy: through
`strategy.run` in a compiled function, each replica on its own rows, as the train step itself runs
(`distributed_call` for row-wise calls, `replica_rows` for a replica's share of a global batch), and how
a replica-local value becomes the same on every replica (`mean_over_replicas`).

Reading a variable needs no `strategy.run`: a mirrored variable (every trainable weight, optimizer slot
and u here; under TPUStrategy too) holds the same value on every replica, and read in cross-replica
context it gives that value (the copy on this host's first device; batch norm's moving statistics,
which each replica updates itself, read as the first replica's). So the values that live in the
weights (σ, γ, learning rates: `SAGAN.health_scalars`) and the non-finite weight check are read there,
on the host.
What needs `strategy.run` is computation with per-replica rows: the train step and forward passes."""
from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

__all__ = ["replica_count", "replica_rows", "replica_major_order", "mean_over_replicas", "distributed_call"]


def replica_count() -> int:
    """N, the replicas in sync, in a strategy's replica context (the train step, `strategy.run`); 1 under no
    strategy or in cross-replica context. A global batch is N times a replica's rows."""
    context = tf.distribute.get_replica_context()
    return context.num_replicas_in_sync if context else 1


def replica_rows(*tensors: tf.Tensor) -> list[tf.Tensor]:
    """This replica's share of each global-batch tensor, in replica context: replica r of N takes rows
    [r·B/N, (r+1)·B/N) (B must be a multiple of N). Under no strategy, the tensors unchanged."""
    context = tf.distribute.get_replica_context()
    replicas = replica_count()
    replica = context.replica_id_in_sync_group if context else 0
    shares = []
    for tensor in tensors:
        rows = tf.shape(tensor)[0] // replicas
        shares.append(tensor[replica * rows:(replica + 1) * rows])
    return shares


def replica_major_order(global_batch: int, blocks: int, replicas: int) -> np.ndarray:
    """The row order that gives each of `replicas` its share of every one of `blocks` consecutive batches.

    A train step's data is `blocks` (n_dis) batches of `global_batch` rows, one per D update, one after
    the other; tf.distribute hands replica r the r-th contiguous 1/N of all of it, and the replica cuts
    that into `blocks` pieces. Reordered by this permutation (`rows[order]`), replica r's piece k is rows
    [k·B + r·B/N, k·B + (r+1)·B/N) of the original: D update k sees, across the replicas, the same real
    images as on one device. The identity for one block or one replica."""
    if global_batch % replicas:
        raise ValueError(f"a global batch of {global_batch} rows does not split evenly over {replicas} replicas")
    rows = np.arange(blocks * global_batch).reshape(blocks, replicas, global_batch // replicas)
    return rows.transpose(1, 0, 2).reshape(-1)


def mean_over_replicas(values):
    """Each tensor of the nest `values` averaged over the replicas, in replica context (one batched
    all-reduce): every replica then holds the same values, so whatever a caller's cross-replica reduction
    does (Keras reduces a train step's logs with "mean", or with "first" under TPUStrategy) gives the
    average. Under no strategy, `values` unchanged."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return values
    return context.all_reduce(tf.distribute.ReduceOp.MEAN, values)


def distributed_call(fn: Callable, strategy: tf.distribute.Strategy | None = None) -> Callable:
    """`call(*arrays)`: `fn(*tensors)` on every replica of `strategy` (default: the current one), each on
    its own equal share of the rows of the global `arrays`, in one compiled function (traced once per
    input shape); returns `fn`'s outputs for all the rows, in order, as numpy arrays (any nest of them).

    For row-wise functions (a network in inference mode): the rows are padded to a multiple of the
    replica count by repeating the last one, and the padding is cut from the outputs. This is how the
    sample grids, attention maps and evaluation samples run on GPUs and TPUs: a forward pass must run
    in `strategy.run` to run on the replicas' devices (under TPUStrategy, on the TPU cores at all).
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
