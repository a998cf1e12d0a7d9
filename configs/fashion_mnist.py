"""Fashion-MNIST (28×28 padded to 32×32, 1 channel, 10 classes): the embedded default.

Sized so a useful run fits in minutes to hours on a 2-core CPU with mixed_bfloat16.
"""
from sagan_tf.config import default_config


def get_config():
    config = default_config()
    config.update(dict(
        dataset="fashion_mnist_idx", resolution=32, ch=16, num_classes=10, image_channels=1,
        g_attention=(16,), d_attention=(16,), batch_size=64, train_steps=2000, ema_decay=0.99, ema_start=100,
        checkpoint_every=250, sample_every=250, log_every=50))
    return config
