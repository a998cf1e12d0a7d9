"""Exponential moving average of the generator's weights (the generator used for sampling).

The EMA generator's weights are an average of G's, but G's batch-norm running statistics belong to
G's current weights, not to the average. Before the EMA generator is used in inference mode
(sample grids, checkpoints that export/evaluation read, periodic evaluation), its statistics are
recomputed for its own weights from batches of noise ("standing statistics", as in BigGAN).
"""
import keras
import numpy as np
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


def noise_batches(z_dim, num_classes, num_batches=16, batch_size=64, seed=0):
    """Fixed (z, labels) batches: z ~ N(0, I), labels uniform over the classes."""
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((batch_size, z_dim)).astype(np.float32),
             rng.integers(0, max(num_classes, 1), batch_size).astype(np.int32)) for _ in range(num_batches)]


def standing_statistics(generator, batches):
    """Sets every BatchNormalization's moving mean/variance in `generator` to the average of its batch
    statistics over `batches` of (z, labels), run in training mode with the generator's own weights.

    Momentum 1 − 1/i at the i-th batch turns the running average into the exact mean over batches.
    (Training mode also advances the spectral-norm u vectors: more power iterations on these weights.)
    """
    layers = [layer for layer in generator._flatten_layers(include_self=False)
              if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in layers]
    try:
        for i, (z, labels) in enumerate(batches, start=1):
            for layer in layers:
                layer.momentum = 1.0 - 1.0 / i
            generator((z, labels), training=True)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
