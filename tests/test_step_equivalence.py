"""The train step's fast forms compute the plain float32 step: a bfloat16 step tracks it within bfloat16's
rounding, and the XLA-compiled (`jit_compile`) step equals it within float32's.

Each pair of models starts from the same weights (and spectral-norm u vectors) and trains on the same
batches with the same noise; the steps' losses and every spectral-norm σ are compared after each step.
"""
import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.training import build_model
from sagan_tf.training.gan import spectral_norm_layers
from tests.helpers import tiny_config
from tests.shared_runs import StepLogs, in_memory_dataset

# Six models traced and trained (one XLA-compiled): about a minute and a half on a quiet 2-core machine.
pytestmark = pytest.mark.slow

STEPS = 4
LOSSES = ("d_loss", "g_loss", "d_real", "d_fake")


def sn_layers(model):
    return spectral_norm_layers(model.generator) + spectral_norm_layers(model.discriminator)


def sigmas(model):
    """σ of every spectral-normalised kernel at the model's current u (float64 numpy: one power step)."""
    values = []
    for layer in sn_layers(model):
        w = layer.kernel.numpy().astype(np.float64).reshape(-1, layer.kernel.shape[-1])
        u = layer.u.numpy().astype(np.float64).reshape(-1)
        v = w @ u
        v /= np.linalg.norm(v)
        values.append(float(np.linalg.norm(w.T @ v)))
    return np.array(values)


def train_from(config, source=None):
    """A model of `config` (weights copied from `source` when given) and what trains it STEPS steps on the
    shared in-memory batches: (model, StepLogs, [σ after each step], run), filled in when run() is called."""
    model = build_model(config, tf.distribute.get_strategy())
    if source is not None:
        for a, b in ((source.generator, model.generator), (source.discriminator, model.discriminator),
                     (source.ema_generator, model.ema_generator)):
            b.set_weights([w.numpy() for w in a.weights])
    logs, history = StepLogs(), []

    class Sigmas(tf.keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            history.append(sigmas(model))

    return model, logs, history, lambda: model.fit(in_memory_dataset(config.batch_size), epochs=1,
                                                   steps_per_epoch=STEPS, verbose=0, callbacks=[logs, Sigmas()])


def paired_runs(noise_table=False, **variant):
    """The plain float32 step and `variant` from identical weights: ({step: logs} × 2, [σ] × 2). With
    `noise_table`, both read z and labels from one constant table: inside an XLA cluster TF's stateless
    random ops draw other numbers from the same run-time seed (docs/performance.md, XLA)."""
    config = tiny_config(init="normal", batch_size=4, n_dis=1, ema_start=0, ema_decay=0.9)
    plain, plain_logs, plain_sigmas, run_plain = train_from(config)
    assert sn_layers(plain)
    other, other_logs, other_sigmas, run_other = train_from(tiny_config(**{**config.to_dict(), **variant}), plain)
    if noise_table:
        from benchmarks.train_step import _table_replica_noise
        for model in (plain, other):
            model.replica_noise = _table_replica_noise(model, config.batch_size)
    run_plain()
    run_other()
    return plain_logs.logs, other_logs.logs, plain_sigmas, other_sigmas


def tracking_errors(plain, other, plain_sigmas, other_sigmas):
    """Where `other` leaves bfloat16's distance from the float32 run: [(what, float32, other)], empty if nowhere.

    bfloat16 keeps 8 bits of mantissa (relative rounding 2⁻⁹ ≈ 0.2 %); through both networks and four
    Adam steps the losses drift by up to ≈ 5 % here, so a loss may be off by 10 % of max(|loss|, 0.5).
    σ and u live in float32 under every policy (so do the kernels): updated from bfloat16 gradients,
    σ stays within 0.2 % after four steps, and 0.5 % is allowed."""
    assert sorted(plain) == sorted(other) == list(range(1, STEPS + 1))
    errors = [((step, name), plain[step][name], other[step][name]) for step in plain for name in LOSSES
              if abs(plain[step][name] - other[step][name]) > 0.1 * max(abs(plain[step][name]), 0.5)]
    for step, (a, b) in enumerate(zip(plain_sigmas, other_sigmas), 1):
        worst = int(np.argmax(np.abs(b - a) / a))
        if abs(b[worst] - a[worst]) > 5e-3 * a[worst]:
            errors.append(((step, f"σ of spectral-norm layer {worst}"), a[worst], b[worst]))
    return errors


@pytest.fixture(scope="module")
def bfloat16_runs():
    return paired_runs(mixed_precision="mixed_bfloat16")


def test_a_bfloat16_step_tracks_the_float32_step(bfloat16_runs):
    assert tracking_errors(*bfloat16_runs) == []


def test_the_tracking_tolerance_fails_a_step_that_differs():
    """Twice D's learning rate, in float32: a different step, which the tolerance above must not pass, in
    the losses and in σ alike."""
    errors = tracking_errors(*paired_runs(d_lr=8e-4))
    assert any("loss" in what[1] for what, _, _ in errors) and any("σ" in what[1] for what, _, _ in errors), errors


def test_the_xla_step_equals_the_plain_step():
    plain, xla, plain_sigmas, xla_sigmas = paired_runs(noise_table=True, jit_compile=True)
    for step in plain:
        for name in LOSSES:
            assert plain[step][name] == pytest.approx(xla[step][name], rel=1e-4, abs=1e-5), (step, name)
    for a, b in zip(plain_sigmas, xla_sigmas):
        np.testing.assert_allclose(b, a, rtol=1e-5)
