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


def standing_statistics(generator, batches, forward=None):
    """Sets every BatchNormalization's moving mean/variance in `generator` to the average of its batch
    statistics over `batches` of (z, labels), run in training mode with the generator's own weights.

    Each pass runs with momentum 0 (the moving statistics become that batch's), and the average over
    passes is assigned at the end. `forward(z, labels)` may be a compiled training-mode call of
    `generator`, traced while momentum is 0 (callers keep it for reuse). Training mode also advances
    the spectral-norm u vectors: more power iterations on these weights.
    """
    layers = [layer for layer in generator._flatten_layers(include_self=False)
              if isinstance(layer, keras.layers.BatchNormalization)]
    forward = forward or (lambda z, labels: generator((z, labels), training=True))
    momenta = [layer.momentum for layer in layers]
    means = [np.zeros(layer.moving_mean.shape, np.float64) for layer in layers]
    variances = [np.zeros(layer.moving_variance.shape, np.float64) for layer in layers]
    count = 0
    try:
        for layer in layers:
            layer.momentum = 0.0
        for z, labels in batches:
            forward(z, labels)
            count += 1
            for layer, mean, variance in zip(layers, means, variances):
                mean += layer.moving_mean.numpy()
                variance += layer.moving_variance.numpy()
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    for layer, mean, variance in zip(layers, means, variances):
        layer.moving_mean.assign((mean / max(count, 1)).astype(np.float32))
        layer.moving_variance.assign((variance / max(count, 1)).astype(np.float32))
