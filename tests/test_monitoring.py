"""Monitoring that tells the truth: every train/ scalar is the value of its step (also after a resume),
checked against the step recomputed naively from the checkpoint before it; the health signals against
numpy; the sample frames use the same noise before and after a resume; the progress bar shows the
current values.

One tiny run serves the module: 2 steps, then resumed to 4, logging and checkpointing every step.
"""
import re

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from sagan_tf.layers.spectral_norm import power_iteration_paused
from sagan_tf.sampling.images import image_grid, to_uint8
from sagan_tf.training import build_model
from sagan_tf.training import callbacks as cb
from sagan_tf.training.checkpointing import make_checkpoint
from sagan_tf.training.gan import spectral_norm_layers
from tests.shared_runs import BATCH, IMAGES, LABELS, STEPS, monitored_run

STEP_KEYS = ("d_loss", "g_loss", "d_real", "d_fake", "d_real_active", "d_fake_active", "d_grad_norm", "g_grad_norm")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return monitored_run(tmp_path_factory)


@pytest.fixture(scope="module")
def replay(run):
    """restore(step) -> a model in the run's state after `step` steps (0: the initial weights train()
    starts from); two models, reused: restore(step, slot=1) fills the second."""
    config = run["config"]
    models = [build_model(config, tf.distribute.get_strategy()) for _ in range(2)]
    initial = make_checkpoint(models[0]).save(str(run["model_dir"].parent / "initial" / "ckpt"))

    def restore(step, slot=0):
        model = models[slot]
        path = str(run["model_dir"] / "checkpoints" / f"ckpt-{step}") if step else initial
        make_checkpoint(model).restore(path).assert_existing_objects_matched()
        assert int(model.step) == step
        return model

    return restore


def global_norm(grads):
    """‖g‖ over all tensors; an embedding's IndexedSlices summed into its dense gradient first."""
    return float(np.sqrt(sum(np.sum(np.asarray(tf.convert_to_tensor(g), np.float64) ** 2) for g in grads)))


def naive_step(restore, step):
    """Step `step`'s values recomputed eagerly, with the hinge formulas, from the checkpoints around it:
    D's update from the state before the step, G's from G before the step and D after its update."""
    before, after = restore(step - 1, slot=0), restore(step, slot=1)
    rows = slice((step - 1) * BATCH % len(IMAGES), (step - 1) * BATCH % len(IMAGES) + BATCH)
    real, real_labels = tf.constant(IMAGES[rows]), tf.constant(LABELS[rows])
    z, fake_labels = before.replica_noise(BATCH, purpose=0)
    with power_iteration_paused():
        fake = before.generator((z, fake_labels), training=True)
    with tf.GradientTape() as tape:
        real_logits = before.discriminator((real, real_labels), training=True)  # D's one power iteration
        with power_iteration_paused():  # the same u for the fakes
            fake_logits = before.discriminator((fake, fake_labels), training=True)
        d_loss = tf.reduce_mean(tf.nn.relu(1 - real_logits)) + tf.reduce_mean(tf.nn.relu(1 + fake_logits))
    d_grads = tape.gradient(d_loss, before.discriminator.trainable_variables)
    z, fake_labels = before.replica_noise(BATCH, purpose=1)
    with tf.GradientTape() as tape:
        g_loss = -tf.reduce_mean(after.discriminator((before.generator((z, fake_labels), training=True), fake_labels),
                                                     training=False))
    g_grads = tape.gradient(g_loss, before.generator.trainable_variables)
    real_logits, fake_logits = real_logits.numpy(), fake_logits.numpy()
    return dict(d_loss=float(d_loss), g_loss=float(g_loss), d_real=real_logits.mean(), d_fake=fake_logits.mean(),
                d_real_active=np.mean(real_logits < 1), d_fake_active=np.mean(fake_logits > -1),
                d_grad_norm=global_norm(d_grads), g_grad_norm=global_norm(g_grads))


@pytest.mark.slow  # trains or runs CLIs for tens of seconds (docs/testing.md)
def test_every_logged_step_value_is_that_step_also_after_the_resume(run, replay):
    logged, returned = run["scalars"], run["step_logs"]
    assert set(logged["d_loss"]) == set(returned) == set(range(1, STEPS + 1))
    reference = {}
    for step in range(1, STEPS + 1):
        reference[step] = naive_step(replay, step)
        for key in STEP_KEYS:
            assert logged[key][step] == np.float32(returned[step][key]), (key, step)  # what the step returned
            np.testing.assert_allclose(logged[key][step], reference[step][key], rtol=2e-4, atol=1e-5,
                                       err_msg=f"{key} at step {step}")
    # The steps differ enough that a mean since the (re)start would not pass for step 2 or 4.
    d = {step: reference[step]["d_loss"] for step in reference}
    assert abs((d[1] + d[2]) / 2 - d[2]) > 1e-2 and abs((d[3] + d[4]) / 2 - d[4]) > 1e-2, d


@pytest.mark.slow  # trains or runs CLIs for tens of seconds (docs/testing.md)
def test_health_scalars_read_from_the_weights_match_numpy(run, replay):
    logged, config = run["scalars"], run["config"]
    after = replay(STEPS)
    for prefix, network in (("g", after.generator), ("d", after.discriminator)):
        sigmas, largest_singular = [], []
        for layer in spectral_norm_layers(network):
            kernel = layer.kernel.numpy().astype(np.float64)
            w_mat, u = kernel.reshape(-1, kernel.shape[-1]), layer.u.numpy().astype(np.float64)
            sigmas.append(np.linalg.norm(w_mat @ (u / np.linalg.norm(u))))
            largest_singular.append(np.linalg.svd(w_mat, compute_uv=False)[0])
        assert len(sigmas) > 10
        np.testing.assert_allclose(logged[f"{prefix}_sigma_max"][STEPS], max(sigmas), rtol=1e-5)
        np.testing.assert_allclose(logged[f"{prefix}_sigma_mean"][STEPS], np.mean(sigmas), rtol=1e-5)
        assert max(sigmas) <= max(largest_singular) * (1 + 1e-5)  # ‖W u‖ ≤ σ_max(W) for a unit u
        [layer] = network.attention_layers.values()  # tiny_config: attention at 16×16 in both networks
        np.testing.assert_allclose(logged[f"{prefix}_gamma_16"][STEPS], layer.gamma.numpy(), rtol=1e-6)
        assert layer.gamma.numpy() != 0  # moved from its initial 0: a stale γ would show
    np.testing.assert_allclose(logged["g_lr"][STEPS], config.g_lr, rtol=1e-6)
    np.testing.assert_allclose(logged["d_lr"][STEPS], config.d_lr, rtol=1e-6)


@pytest.mark.slow  # trains or runs CLIs for tens of seconds (docs/testing.md)
def test_every_tag_says_what_it_is(run):
    descriptions = run["descriptions"]
    expected = set(STEP_KEYS) | {"g_sigma_max", "g_sigma_mean", "d_sigma_max", "d_sigma_mean", "g_lr", "d_lr",
                                 "g_gamma_16", "d_gamma_16", "img_per_s", "ema_samples", "ema_attention", "config"}
    assert expected <= set(descriptions), expected - set(descriptions)
    assert all(descriptions[tag] for tag in expected), [tag for tag in expected if not descriptions[tag]]
    assert "not a running mean" in descriptions["d_loss"]
    assert "since the previous point" in descriptions["img_per_s"]


def expected_grid(model, config, seed):
    """The sample sheet of `model`'s EMA generator on the noise SampleGrid documents: seed's N(0, 1) draw."""
    rows, per_class = min(config.num_classes, 10), 8
    z = np.random.default_rng(seed).standard_normal((rows * per_class, config.z_dim)).astype(np.float32)
    labels = np.repeat(np.linspace(0, config.num_classes - 1, rows).round().astype(np.int32), per_class)
    return np.asarray(image_grid(to_uint8(model.ema_generator((z, labels), training=False)), rows)).squeeze()


@pytest.mark.slow  # trains or runs CLIs for tens of seconds (docs/testing.md)
def test_sample_frames_use_the_same_noise_before_and_after_the_resume(run, replay):
    config, model_dir = run["config"], run["model_dir"]
    assert sorted(run["images"]["ema_samples"]) == [2, 4]  # every sample_every steps, once each
    for step in (2, 4):  # step 2 from the first process, step 4 from the resumed one
        png = np.asarray(Image.open(model_dir / "samples" / f"step_{step:08d}.png")).squeeze().astype(int)
        logged = tf.io.decode_png(run["images"]["ema_samples"][step]).numpy().squeeze().astype(int)
        np.testing.assert_array_equal(logged, png)
        model = replay(step)  # its EMA statistics are the ones the frame used
        assert np.abs(expected_grid(model, config, config.seed).astype(int) - png).max() <= 1
        assert np.abs(expected_grid(model, config, config.seed + 1).astype(int) - png).mean() > 5  # noise shows
    assert sorted(run["images"]["ema_attention"]) == [2, 4]


@pytest.mark.slow  # trains or runs CLIs for tens of seconds (docs/testing.md)
def test_progress_bar_shows_the_last_steps_values(run):
    line = run["stdout"].replace("\b", "").split("\r")[-1]
    shown = dict(re.findall(r"(\w+): (-?[0-9.]+(?:e[-+]?\d+)?)", line))
    assert set(shown) == {"d_loss", "g_loss", "d_real", "d_fake", "img_per_s"}, line
    for key in ("d_loss", "g_loss", "d_real", "d_fake"):
        assert float(shown[key]) == pytest.approx(run["scalars"][key][STEPS], abs=1e-4), (key, line)
    assert float(shown["img_per_s"]) > 0


def test_throughput_is_per_step_in_the_logs_and_per_window_in_tensorboard(monkeypatch):
    clock = iter([10.0, 11.0, 11.5, 14.5, 20.0, 22.0])  # steps of 1 s, 3 s, then 2 s
    monkeypatch.setattr(cb.time, "perf_counter", lambda: next(clock))
    throughput = cb.Throughput(images_per_step=8)
    rates = []
    for step in range(3):
        logs = {}
        throughput.on_train_batch_begin(step)
        throughput.on_train_batch_end(step, logs)
        rates.append(logs["img_per_s"])
        if step == 1:
            assert throughput.pop_window() == pytest.approx(16 / 4)  # 2 steps' images over their 4 s
    assert rates == pytest.approx([8.0, 8 / 3, 4.0])
    assert throughput.pop_window() == pytest.approx(4.0) and throughput.pop_window() is None
