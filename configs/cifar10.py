"""CIFAR-10 32×32 (the SNGAN/SAGAN CIFAR layout: all blocks at 4·ch channels, attention at 16²)."""
from sagan_tf.config import default_config


def get_config():
    config = default_config()
    config.update(dict(
        dataset="tfds:cifar10", resolution=32, num_classes=10, image_channels=3, random_flip=True,
        g_attention=(16,), d_attention=(16,), batch_size=64, train_steps=100_000, ema_start=1000,
        checkpoint_every=1000, sample_every=1000))
    return config
