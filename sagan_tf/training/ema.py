"""Exponential moving average of the generator's weights (the generator used for sampling)."""
from keras import ops


def update_ema(ema_model, model, decay):
    """ema ← decay·ema + (1 − decay)·w for trainable weights; non-trainable state (BN moving
    statistics, spectral-norm u vectors) is copied. `decay=0` makes the EMA an exact copy."""
    decay = ops.cast(decay, "float32")
    for ema_weight, weight in zip(ema_model.trainable_weights, model.trainable_weights):
        value = ops.cast(weight, "float32")
        ema_weight.assign(decay * ops.cast(ema_weight, "float32") + (1.0 - decay) * value)
    for ema_weight, weight in zip(ema_model.non_trainable_weights, model.non_trainable_weights):
        ema_weight.assign(weight)
