"""Fashion-MNIST (28×28 padded to 32×32, 1 channel, 10 classes): the embedded default.

Sized for a 2-core CPU: ch=16 (G 0.38 M, D 0.27 M parameters; 0.11 / 0.07 GMAC per image), batch 64,
self-attention at 16×16 in both networks, the paper's TTUR (Adam(0, 0.9), lr_G 1e-4, lr_D 4e-4, one D
step per G step). The EMA (decay 0.999 from step 1000, i.e. an average over the last ≈ 1000 steps) is
what samples and evaluations use.

4,000 G steps: the length every result in docs/results.md and the committed generator were measured
at (conditional accuracy ≈ 0.89). One such run takes ≈ 1.6 h on one core of a Xeon with AVX-512 and
≈ 4.4 h on one core of an AVX2-only AMD EPYC (float32; bfloat16 with AMX is several times faster), so
the seeds, placements and truncation runs that the results table needs fit a CPU budget only at
this length. The FID curve is still falling at 4,000: `--train_steps=N` with N > 4000 trains longer
(it is the total step count and resume is exact, so a finished run is extended by rerunning it with the
same --model_dir and a larger N).
"""
from sagan_tf.config import default_config


def get_config():
    config = default_config()
    config.update(dict(
        dataset="fashion_mnist_idx", resolution=32, ch=16, num_classes=10, image_channels=1,
        g_attention=(16,), d_attention=(16,), batch_size=64, train_steps=4000, ema_decay=0.999, ema_start=1000,
        checkpoint_every=1000, sample_every=1000, log_every=100))
    return config
