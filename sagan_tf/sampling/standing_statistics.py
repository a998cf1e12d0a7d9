"""Standing statistics (BigGAN): a generator's batch-norm statistics recomputed for its own weights.

Inference-mode batch norm normalises with stored moving statistics. For the EMA generator those must be
recomputed for the averaged weights (G's running statistics belong to G's current weights), and for
truncated sampling they must be recomputed for the truncated noise: a smaller |z| shrinks every
activation's variance, and normalising with the untruncated statistics then under-scales every layer.

* `StandingStatistics(generator, strategy)(batches)` sets them from batches of (z, labels);
* `truncation_statistics(generator, t)` is a context in which they are those of z truncated to
  [-t, t], with every non-trainable variable restored on leaving it.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf

from sagan_tf.layers.spectral_norm import SpectralNormalization, power_iteration_paused
from sagan_tf.runtime.replicas import replica_rows
from sagan_tf.sampling.noise import check_truncation, noise_batches

__all__ = ["StandingStatistics", "standing_statistics", "truncation_statistics"]


class StandingStatistics:
    """`StandingStatistics(generator, strategy)(batches)` sets every BatchNormalization's moving mean and
    variance in `generator` to the average of its batch statistics over `batches` of (z, labels), run in
    training mode with the generator's own weights, through `strategy` (default: the current one).

    The passes run in one compiled function (kept by the object, so later calls reuse it), through
    `strategy.run`: each of the N replicas takes one whole batch of a group of N, and its statistics
    are read in replica context and averaged over all replicas in the graph (`strategy.reduce`: every
    device and every worker). So `len(batches)` must be a multiple of N, and the result is the
    single-device average over the same batches. First the spectral-norm u vectors take one power
    iteration per batch on these weights (as one training-mode pass per batch would); then each pass runs
    with the power iteration paused, so every batch sees the σ of that final u, the one the inference
    calls these statistics are for use, and neither the order of the batches nor the replica count
    matters. Each pass also runs with momentum 0 (the moving statistics become that batch's) and with
    cross-replica BN switched off (a batch's own statistics, also under sync_bn); both are read when the
    pass is traced, inside that window.
    """

    def __init__(self, generator, strategy=None):
        self.generator = generator
        self.strategy = strategy or tf.distribute.get_strategy()
        self.layers = [layer for layer in generator._flatten_layers(include_self=False)
                       if isinstance(layer, keras.layers.BatchNormalization)]
        self.sn_layers = [layer for layer in generator._flatten_layers(include_self=False)
                          if isinstance(layer, SpectralNormalization)]
        self._pass = self._iteration = None

    def _replica_iteration(self):
        for layer in self.sn_layers:  # advances u (the same on every replica: the same weights and u)
            layer.kernel_for_call(training=True)

    def _power_iteration(self):
        """One power iteration of every u, compiled, through the strategy."""
        if self._iteration is None:
            strategy = self.strategy
            self._iteration = tf.function(lambda: strategy.run(self._replica_iteration))
        return self._iteration

    def _replica_pass(self, z, labels):
        z, labels = replica_rows(z, labels)
        with power_iteration_paused():  # here: MirroredStrategy runs each replica in a thread of its own
            self.generator((z, labels), training=True)
        # tf.identity: this replica's copy as a tensor (a variable returned as such would come back as
        # the mirrored variable itself, i.e. replica 0's copy).
        return ([tf.identity(layer.moving_mean.value) for layer in self.layers],
                [tf.identity(layer.moving_variance.value) for layer in self.layers])

    def _compiled_pass(self):
        if self._pass is None:
            strategy = self.strategy

            @tf.function
            def one_pass(z, labels):
                per_replica = strategy.run(self._replica_pass, args=(z, labels))
                return strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)

            self._pass = one_pass
        return self._pass

    def __call__(self, batches):
        replicas = self.strategy.num_replicas_in_sync
        if not batches or len(batches) % replicas:
            raise ValueError(f"standing statistics over {len(batches)} batches on {replicas} replicas: the number "
                             f"of batches must be a positive multiple of the replica count")
        saved = [(layer.momentum, layer.synchronized) for layer in self.layers]
        means = [np.zeros(layer.moving_mean.shape, np.float64) for layer in self.layers]
        variances = [np.zeros(layer.moving_variance.shape, np.float64) for layer in self.layers]
        try:
            for layer in self.layers:
                layer.momentum, layer.synchronized = 0.0, False
            iteration = self._power_iteration()
            for _ in batches:
                iteration()
            one_pass = self._compiled_pass()
            for first in range(0, len(batches), replicas):
                group = batches[first:first + replicas]
                z = np.concatenate([np.asarray(z, np.float32) for z, _ in group])
                labels = np.concatenate([np.asarray(labels, np.int32) for _, labels in group])
                batch_means, batch_variances = one_pass(z, labels)
                for total, value in zip(means + variances, list(batch_means) + list(batch_variances)):
                    total += value.numpy() * len(group)
        finally:
            for layer, (momentum, synchronized) in zip(self.layers, saved):
                layer.momentum, layer.synchronized = momentum, synchronized
        for layer, mean, variance in zip(self.layers, means, variances):
            layer.moving_mean.assign((mean / len(batches)).astype(np.float32))
            layer.moving_variance.assign((variance / len(batches)).astype(np.float32))


def standing_statistics(generator: keras.Model, batches: Sequence[tuple[np.ndarray, np.ndarray]],
                        strategy: tf.distribute.Strategy | None = None) -> None:
    """Standing statistics of `generator` over `batches` (see StandingStatistics), compiled for this call."""
    StandingStatistics(generator, strategy)(batches)


@contextlib.contextmanager
def truncation_statistics(generator: keras.Model, truncation, num_batches: int = 16, batch_size: int = 64,
                          seed: int = 0, strategy: tf.distribute.Strategy | None = None) -> Iterator[None]:
    """Inside the block, `generator`'s batch-norm statistics are the standing statistics of z ~ N(0, I)
    truncated to [-truncation, truncation] (`num_batches` batches of `batch_size`, labels uniform over the
    classes, drawn from `seed`), for sampling with that truncation. On leaving it every non-trainable
    variable (moving statistics and spectral-norm u vectors) gets its value back.

    `truncation` None (or 0) changes nothing: a trained generator's stored statistics are already the
    standing statistics of untruncated z. Under a strategy with N replicas `num_batches` is rounded up
    to a multiple of N (one whole batch per replica).
    """
    if check_truncation(truncation) is None:
        yield
        return
    strategy = strategy or tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    spec = generator.spec
    batches = noise_batches(spec["z_dim"], spec["num_classes"], -(-num_batches // replicas) * replicas,
                            batch_size, seed, truncation=truncation)
    saved = [(variable, variable.numpy()) for variable in generator.non_trainable_variables]
    try:
        _kept(generator, strategy)(batches)
        yield
    finally:
        for variable, value in saved:
            variable.assign(value)


# The last StandingStatistics made here, so that a sheet of several truncations or a sweep compiles the
# passes once rather than once per truncation. One entry: it holds its generator, which it keeps alive.
_LAST: list = []


def _kept(generator: keras.Model, strategy: tf.distribute.Strategy) -> StandingStatistics:
    if not (_LAST and _LAST[0].generator is generator and _LAST[0].strategy is strategy):
        _LAST[:] = [StandingStatistics(generator, strategy)]
    return _LAST[0]
