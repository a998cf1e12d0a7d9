"""Exponential moving average of the generator's weights (the generator used for sampling).

The EMA generator's weights are an average of G's, but G's batch-norm running statistics belong to
G's current weights, not to the average. Before the EMA generator is used in inference mode
(sample grids, checkpoints that export/evaluation read, periodic evaluation), its statistics are
recomputed for its own weights from batches of noise (`sagan_tf.sampling.standing_statistics`, by the
`EMAStatistics` callback).
"""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

__all__ = ["update_ema"]


def update_ema(ema_model: keras.Model, model: keras.Model, decay: float | tf.Tensor) -> None:
    """ema ← decay·ema + (1 − decay)·w for trainable weights; non-trainable state (BN moving
    statistics, spectral-norm u vectors) is copied. `decay=0` makes the EMA an exact copy."""
    with keras.name_scope("ema"):  # the ops' names say what they are in a profile
        decay = ops.cast(decay, "float32")
        for ema_weight, weight in zip(ema_model.trainable_weights, model.trainable_weights):
            value = ops.cast(weight, "float32")
            ema_weight.assign(decay * ops.cast(ema_weight, "float32") + (1.0 - decay) * value)
        for ema_weight, weight in zip(ema_model.non_trainable_weights, model.non_trainable_weights):
            ema_weight.assign(weight)
