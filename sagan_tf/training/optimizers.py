"""The optimizers of a run: TTUR's two Adams, each in its own dynamic loss scale under mixed_float16.

`StepCountingLossScaleOptimizer` is Keras' LossScaleOptimizer with two repairs a GAN's custom train step
needs (a skipped update still counts as a step; on several replicas all skip together); it is registered
with Keras serialisation as ``sagan_tf>StepCountingLossScaleOptimizer``.
"""
from __future__ import annotations

import keras
import ml_collections
import tensorflow as tf

from sagan_tf.runtime.precision import resolve_precision

__all__ = ["StepCountingLossScaleOptimizer", "make_optimizers"]


@keras.saving.register_keras_serializable(package="sagan_tf")
class StepCountingLossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
    """Keras' dynamic LossScaleOptimizer, except that a skipped update still counts as a step, and that
    on several replicas the skip is decided on every replica's gradients.

    When the scaled gradients are not finite, Keras 3 skips the update (variables and Adam slots
    unchanged) and halves the scale, but also leaves `iterations` where it was. G's `iterations` is the
    run's step, which the noise, the data position of a resume and every callback cadence follow, so
    here a skipped update advances it by one, as tf.keras' LossScaleOptimizer did: `step` counts train
    steps (G updates attempted) exactly as in float32. Variables and checkpoint layout are Keras' own.

    Keras decides "finite or skip" from the gradients it is given, which in a custom train step are
    each replica's own, before the inner optimizer sums them: under MirroredStrategy from the first
    replica's alone, under XLA on each replica for itself. An overflow on another replica would then be
    summed into the update (non-finite weights and slots, scale kept), or replicas would take different
    branches around the all-reduce and hang. So `apply` first sums every replica's "not finite" flag
    (one scalar all-reduce) and, if any replica's gradients are not finite, makes them not finite on
    every replica: all skip together, or all apply the summed gradients.
    """

    def apply(self, grads, trainable_variables=None):
        return super().apply(self._non_finite_on_every_replica_if_on_any(grads), trainable_variables)

    def _non_finite_on_every_replica_if_on_any(self, grads):
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return grads
        grads = list(grads)
        locally_finite = self.check_finite(grads)
        replicas_not_finite = context.all_reduce(tf.distribute.ReduceOp.SUM,
                                                 tf.cast(tf.logical_not(locally_finite), tf.float32))
        # NaN added to one gradient when any replica overflowed (0 otherwise): Keras' own check then
        # sees "not finite" on every replica. One gradient suffices; the others are left as they are.
        first = next(i for i, grad in enumerate(grads) if grad is not None)
        grad = grads[first]
        poison = tf.where(replicas_not_finite > 0, float("nan"), 0.0)
        if isinstance(grad, tf.IndexedSlices):
            grads[first] = tf.IndexedSlices(grad.values + tf.cast(poison, grad.dtype), grad.indices, grad.dense_shape)
        else:
            grads[first] = grad + tf.cast(poison, grad.dtype)
        return grads

    def _stateful_handle_non_finite_grads(self):
        super()._stateful_handle_non_finite_grads()
        self.inner_optimizer.iterations.assign_add(1)


def make_optimizers(config: ml_collections.ConfigDict) -> tuple[keras.optimizers.Optimizer, keras.optimizers.Optimizer]:
    """TTUR: Adam(β1, β2) for each network with its own learning rate. Under mixed_float16 each is wrapped
    in its own dynamic loss scale (StepCountingLossScaleOptimizer): D and G skip and rescale independently."""
    g_opt = keras.optimizers.Adam(config.g_lr, beta_1=config.beta1, beta_2=config.beta2, name="g_adam")
    d_opt = keras.optimizers.Adam(config.d_lr, beta_1=config.beta1, beta_2=config.beta2, name="d_adam")
    if resolve_precision(config.mixed_precision) == "mixed_float16":
        g_opt = StepCountingLossScaleOptimizer(g_opt, name="g_loss_scale")
        d_opt = StepCountingLossScaleOptimizer(d_opt, name="d_loss_scale")
    return g_opt, d_opt
