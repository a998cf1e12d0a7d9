"""Sampling: truncated noise, class sheets, interpolations, and the sample CLI's .npz output."""
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from sagan_tf import sampling
from sagan_tf.sampling import noise
from sagan_tf.models import Generator
from tests.helpers import class_sensitive_generator, run_cli, tiny_config
from tests.shared_runs import tiny_run

NUM_CLASSES = 10


# ----------------------------------------------------------------------------------------------
# Truncated noise
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("t", [0.05, 0.3, 0.99, 1.0, 2.0, 3.5])
def test_truncated_sampler_never_exceeds_threshold(t):
    for seed in range(3):
        z = sampling.truncated_normal((50_000, 4), t, seed=seed)
        assert z.dtype == np.float32 and z.shape == (50_000, 4)
        assert np.abs(z).max() <= np.float32(t)
    assert np.abs(sampling.sample_noise(1000, 128, t, seed=1)).max() <= np.float32(t)


@pytest.mark.parametrize("t", [0.25, 0.8, 1.5, 2.5])
def test_truncated_sampler_matches_scipy_truncnorm(t):
    z = sampling.truncated_normal(40_000, t, seed=7).astype(np.float64)
    reference = stats.truncnorm(-t, t)
    assert stats.kstest(z, reference.cdf).pvalue > 1e-3
    assert abs(z.mean()) < 5 * reference.std() / np.sqrt(z.size)
    assert z.var() == pytest.approx(reference.var(), rel=0.03)
    if t <= 1.5:  # here plain N(0, 1) fails the same test: the test can tell the two apart
        assert stats.kstest(np.random.default_rng(7).standard_normal(40_000), reference.cdf).pvalue < 1e-6


def test_truncate_noise_only_redraws_entries_outside():
    z = np.random.default_rng(0).standard_normal((2000, 16))
    truncated = sampling.truncate_noise(z, 1.0, seed=1)
    inside = np.abs(z) <= 1.0
    np.testing.assert_array_equal(truncated[inside], z[inside].astype(np.float32))
    assert np.all(np.abs(truncated) <= 1.0) and not np.array_equal(truncated[~inside], z[~inside])


@pytest.mark.parametrize("t", [None, 0, 0.0])
def test_no_truncation_is_plain_normal(t):
    z = sampling.truncated_normal(40_000, t, seed=3)
    np.testing.assert_array_equal(z, np.random.default_rng(3).standard_normal(40_000).astype(np.float32))
    assert np.abs(z).max() > 3.0
    assert stats.kstest(z.astype(np.float64), stats.norm.cdf).pvalue > 1e-3


def test_truncation_lists_are_parsed_and_a_bad_item_named():
    from sagan_tf.sampling.noise import parse_truncations
    assert parse_truncations(["none", " 2", "0.5", "0", "NONE"]) == [None, 2.0, 0.5, None, None]
    for bad in ("inf", "-1", "nan", "1e999", "big", ""):
        with pytest.raises(ValueError, match=f"^{bad!r}"):
            parse_truncations(["1", bad])


@pytest.mark.parametrize("t", [-1.0, float("nan"), float("inf"), -float("inf"), "big"])
def test_bad_truncation_is_rejected_naming_the_value(t):
    with pytest.raises(ValueError, match=rf"truncation={re.escape(repr(t))}"):
        sampling.truncated_normal(10, t)


_TF_SAMPLER = tf.function(lambda seeds, t: noise.noise_for_seeds(seeds, t, 8))


def _tf_face(num, t, seed):
    """`num` draws of the TF face (as the serving signature calls it: one row of 8 per seed)."""
    seeds = tf.range(seed * 10_000, seed * 10_000 + num // 8, dtype=tf.int64)
    return _TF_SAMPLER(seeds, tf.fill([num // 8], float(t))).numpy().reshape(-1)


@pytest.mark.parametrize("t", [0.3, 0.99, 1.0, 2.5, 0])
@pytest.mark.parametrize("face", ["numpy", "tf"])
def test_both_faces_of_the_sampler_draw_scipys_truncnorm(face, t):
    """The one sampler's two faces (numpy for sheets and evaluations, stateless TF for the train step and
    the serving signature) draw the same law: N(0, 1) truncated to [-t, t], plain N(0, 1) for t = 0."""
    z = sampling.truncated_normal(16_000, t, seed=11) if face == "numpy" else _tf_face(16_000, t, 11)
    z = z.astype(np.float64)
    reference = stats.truncnorm(-t, t) if t else stats.norm
    assert stats.kstest(z, reference.cdf).pvalue > 1e-3, (face, t)
    if t:
        assert np.abs(z).max() <= np.float32(t)
    if 0 < t <= 1.5:  # here plain N(0, 1) fails the same test: the test can tell the two apart
        assert stats.kstest(z, stats.norm.cdf).pvalue < 1e-6


def test_the_train_step_draws_with_the_same_stateless_sampler():
    key = tf.constant([3, 17], tf.int32)
    np.testing.assert_array_equal(noise.stateless_truncated_normal([4, 5], key).numpy(),
                                  tf.random.stateless_normal([4, 5], seed=key).numpy())
    truncated = noise.stateless_truncated_normal([64, 8], key, 0.5).numpy()
    assert np.abs(truncated).max() <= 0.5
    with pytest.raises(ValueError, match=r"truncation=-0\.5"):
        noise.stateless_truncated_normal([2], key, -0.5)


# ----------------------------------------------------------------------------------------------
# Sheets with a fake generator that writes its inputs into the image
# ----------------------------------------------------------------------------------------------

class LabelEncodingGenerator:
    """fn(z, labels): every pixel of channel 0 is label/10, channel 1 holds z[:, 0] / 10."""

    def __init__(self):
        self.calls = []

    def __call__(self, z, labels):
        self.calls.append((np.array(z), np.array(labels)))
        images = np.zeros((len(labels), 4, 4, 2), np.float32)
        images[..., 0] = (labels / 10.0)[:, None, None]
        images[..., 1] = (z[:, 0] / 10.0)[:, None, None]
        return images


def decoded_labels(images):
    return np.round(np.asarray(images)[..., 0, 0, 0] * 10).astype(int)


def test_class_sheet_calls_the_generator_with_the_requested_labels():
    fake = LabelEncodingGenerator()
    sheet = sampling.class_sheet(fake, [7, 2, 7], columns=5, z_dim=3, num_classes=NUM_CLASSES, seed=0, batch_size=4)
    assert sheet.images.shape == (3, 5, 4, 4, 2)
    expected = np.repeat([[7], [2], [7]], 5, axis=1)
    np.testing.assert_array_equal(decoded_labels(sheet.images), expected)
    np.testing.assert_array_equal(sheet.labels, expected)
    np.testing.assert_array_equal(np.concatenate([labels for _, labels in fake.calls]), expected.reshape(-1))
    assert len(fake.calls) == 4  # 15 samples in batches of 4
    # Independent noise per cell by default; shared per column with shared_noise=True.
    assert not np.allclose(sheet.z[0], sheet.z[2])
    shared = sampling.class_sheet(fake, [1, 4], columns=3, z_dim=3, num_classes=NUM_CLASSES, shared_noise=True)
    np.testing.assert_array_equal(shared.z[0], shared.z[1])
    np.testing.assert_allclose(shared.images[0, ..., 1], shared.images[1, ..., 1])
    grid = sheet.grid()
    assert grid.dtype == np.uint8 and grid.shape == (3 * 4, 5 * 4, 2)


def test_class_sheet_rejects_labels_outside_the_classes():
    with pytest.raises(ValueError, match=r"\[10\]"):
        sampling.class_sheet(LabelEncodingGenerator(), [1, 10], 2, 3, num_classes=NUM_CLASSES)


def test_class_pair_sheet_shows_the_same_noise_under_each_label():
    sheet = sampling.class_pair_sheet(LabelEncodingGenerator(), [3, 8], columns=4, z_dim=2, num_classes=NUM_CLASSES)
    np.testing.assert_array_equal(decoded_labels(sheet.images), [[3] * 4, [8] * 4])
    np.testing.assert_array_equal(sheet.z[0], sheet.z[1])
    with pytest.raises(ValueError, match="two labels"):
        sampling.class_pair_sheet(LabelEncodingGenerator(), [3], 4, 2, NUM_CLASSES)


@pytest.mark.parametrize("method", ["linear", "slerp"])
def test_z_interpolation_rows_keep_the_class_and_end_at_random_endpoints(method):
    sheet = sampling.z_interpolation_sheet(LabelEncodingGenerator(), [5, 1], num_steps=6, z_dim=8,
                                           num_classes=NUM_CLASSES, seed=2, method=method)
    np.testing.assert_array_equal(decoded_labels(sheet.images), [[5] * 6, [1] * 6])
    ends = sampling.sample_noise(4, 8, None, np.random.default_rng(2)).reshape(2, 2, 8)
    np.testing.assert_allclose(sheet.z[:, 0], ends[:, 0], atol=1e-6)
    np.testing.assert_allclose(sheet.z[:, -1], ends[:, 1], atol=1e-6)
    steps = np.diff(sheet.z, axis=1)
    if method == "linear":
        np.testing.assert_allclose(steps, steps[:, :1].repeat(5, axis=1), atol=1e-5)


def test_truncation_sheet_rows_respect_their_threshold_and_share_labels():
    sheet = sampling.truncation_sheet(LabelEncodingGenerator(), [None, 1.0, 0.25], columns=6, z_dim=16,
                                      num_classes=NUM_CLASSES, labels=[4, 9], seed=0)
    assert sheet.row_names == ["no truncation", "truncation 1", "truncation 0.25"]
    np.testing.assert_array_equal(decoded_labels(sheet.images), [[4, 9] * 3] * 3)
    assert np.abs(sheet.z[0]).max() > 1.0
    assert np.abs(sheet.z[1]).max() <= 1.0 and np.abs(sheet.z[2]).max() <= 0.25
    inside = np.abs(sheet.z[0]) <= 0.25  # the base noise is shared: entries already inside are kept
    np.testing.assert_array_equal(sheet.z[2][inside], sheet.z[0][inside])


def test_generate_samples_cycles_labels_in_batches():
    fake = LabelEncodingGenerator()
    images, labels = sampling.generate_samples(fake, 11, z_dim=3, num_classes=NUM_CLASSES, labels=[2, 6, 1],
                                               batch_size=4)
    assert images.dtype == np.uint8 and images.shape == (11, 4, 4, 2)
    np.testing.assert_array_equal(labels, [2, 6, 1] * 3 + [2, 6])
    np.testing.assert_array_equal(np.round((images[:, 0, 0, 0] / 127.5 - 1) * 10), labels)
    assert [len(batch) for _, batch in fake.calls] == [4, 4, 3]


# ----------------------------------------------------------------------------------------------
# The real tiny Generator
# ----------------------------------------------------------------------------------------------



def test_sheet_rows_equal_generating_their_labels_directly():
    generator = class_sensitive_generator(NUM_CLASSES)
    z_dim = generator.spec["z_dim"]
    sheet = sampling.class_sheet(generator, [2, 0, 9], columns=3, z_dim=z_dim, num_classes=NUM_CLASSES, seed=1,
                                 shared_noise=True, batch_size=4)
    for row, label in enumerate([2, 0, 9]):
        direct = generator((sheet.z[row], np.full(3, label, np.int32)), training=False).numpy()
        np.testing.assert_allclose(sheet.images[row], direct, atol=1e-5)
    # Same z, different class: the images differ, so a wrong label would have been caught above.
    assert np.abs(sheet.images[0] - sheet.images[1]).max() > 1e-2


# ----------------------------------------------------------------------------------------------
# The sample CLI's .npz
# ----------------------------------------------------------------------------------------------

def check_npz(path, num, expected_labels, shape):
    with np.load(path, allow_pickle=False) as data:
        assert set(data.files) == {"images", "labels"}
        images, labels = data["images"], data["labels"]
    assert images.dtype == np.uint8 and images.shape == (num,) + shape
    assert np.issubdtype(labels.dtype, np.integer) and labels.shape == (num,)
    np.testing.assert_array_equal(labels, expected_labels)
    assert images.std() > 0


def test_sample_cli_npz_and_attention_png_from_model_dir(tmp_path_factory, tmp_path):
    model_dir = tiny_run(tmp_path_factory)
    npz, png = tmp_path / "samples.npz", tmp_path / "attention.png"
    result = run_cli("trainers.sample", f"--model_dir={model_dir}", "--num=10", f"--npz={npz}", "--batch_size=4",
                     "--labels=3,1", "--mode=attention", f"--out={png}", "--query_points=4,4;20,28", "--scale=2")
    assert result.returncode == 0, result.stderr[-3000:]
    check_npz(npz, 10, [3, 1] * 5, (32, 32, 1))
    from PIL import Image
    figure = np.asarray(Image.open(png))
    assert figure.shape == (2 * 64, 3 * 64, 3)  # rows: labels 3, 1; columns: image + 2 query overlays


def test_sample_cli_npz_from_a_saved_model(tmp_path):
    config = tiny_config(num_classes=3)
    generator = Generator(config, dtype="float32")
    generator.build()

    class StandInExport(tf.Module):
        def __init__(self, g):
            super().__init__()
            self.g = g

        @tf.function(input_signature=[tf.TensorSpec([None, config.z_dim], tf.float32),
                                      tf.TensorSpec([None], tf.int32)])
        def serve(self, z, label):
            return {"images": self.g((z, label), training=False)}

    module = StandInExport(generator)
    export_dir = str(tmp_path / "export")
    tf.saved_model.save(module, export_dir, signatures={"serving_default": module.serve})
    # Like export.saved_model, record the model fields beside the graph (the CLI reads num_classes there).
    os.makedirs(os.path.join(export_dir, "assets.extra"))
    with open(os.path.join(export_dir, "assets.extra", "sagan_export.json"), "w") as f:
        json.dump({"model": dict(generator.spec)}, f)
    npz = tmp_path / "out" / "samples.npz"
    result = run_cli("trainers.sample", f"--saved_model={export_dir}", "--num=7", f"--npz={npz}", "--batch_size=3",
                     "--truncation=0.5")
    assert result.returncode == 0, result.stderr[-3000:]
    check_npz(npz, 7, [0, 1, 2, 0, 1, 2, 0], (32, 32, 1))
    # Truncated: the export is rebuilt as its Keras generator and sampled with statistics recomputed for
    # t = 0.5, exactly as sampling.generate_samples does with the generator itself.
    assert "batch-norm statistics recomputed for the truncation" in result.stdout
    expected, _ = sampling.generate_samples(generator, 7, config.z_dim, 3, truncation=0.5, seed=0, batch_size=3)
    with np.load(npz) as data:
        assert np.abs(data["images"].astype(int) - expected).max() <= 1
        stored = sampling.generate_samples(sampling.as_sample_fn(generator), 7, config.z_dim, 3, truncation=0.5,
                                           seed=0, batch_size=3)[0]
        assert np.abs(data["images"].astype(int) - stored).max() > 1


def test_sample_cli_names_bad_values(tmp_path):
    result = run_cli("trainers.sample", f"--model_dir={tmp_path}", "--mode=sheet")
    assert result.returncode != 0 and f"--model_dir={tmp_path}" in result.stderr
    result = run_cli("trainers.sample", f"--model_dir={tmp_path}", "--mode=mosaic")
    assert result.returncode != 0 and "mosaic" in result.stderr
    (tmp_path / "config.json").write_text("{}")  # a run directory: the flags are checked before it is read
    result = run_cli("trainers.sample", f"--model_dir={tmp_path}", "--mode=truncation", "--truncations=none,1,1e999")
    assert result.returncode != 0 and "--truncations: '1e999' must be a finite number > 0" in result.stderr
