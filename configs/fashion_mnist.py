"""Fashion-MNIST (28×28 padded to 32×32, 1 channel, 10 classes): the embedded default.

Sized for a 2-core CPU with mixed_bfloat16: ch=16 (G 0.38 M, D 0.27 M parameters; 0.11 / 0.07 GMAC
per image), batch 64, self-attention at 16×16 in both networks, the paper's TTUR (Adam(0, 0.9),
lr_G 1e-4, lr_D 4e-4, one D step per G step). 12,000 G steps take ≈ 1.7 h on one core; the EMA
(decay 0.999 from step 1000, i.e. an average over the last ≈ 1000 steps) is what samples and
evaluations use. docs/results.md has the measured FID / conditional accuracy and how to reproduce them.
"""
from sagan_tf.config import default_config


def get_config():
    config = default_config()
    config.update(dict(
        dataset="fashion_mnist_idx", resolution=32, ch=16, num_classes=10, image_channels=1,
        g_attention=(16,), d_attention=(16,), batch_size=64, train_steps=12000, ema_decay=0.999, ema_start=1000,
        checkpoint_every=1000, sample_every=1000, log_every=100))
    return config
