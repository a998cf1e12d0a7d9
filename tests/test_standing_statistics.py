"""Standing statistics for truncated sampling: the noise batches, the context that recomputes a
generator's batch-norm statistics for a truncation, and the sampling/evaluation paths that use it."""
import keras
import numpy as np
import pytest
from scipy import stats

from sagan_tf import sampling
from sagan_tf.evaluation import metrics, runner
from sagan_tf.sampling.images import to_uint8
from sagan_tf.sampling.noise import noise_batches
from sagan_tf.sampling.standing_statistics import StandingStatistics, truncation_statistics
from tests.helpers import class_sensitive_generator

NUM_CLASSES = 3


def bn_layers(generator):
    return [layer for layer in generator._flatten_layers(include_self=False)
            if isinstance(layer, keras.layers.BatchNormalization)]


@pytest.fixture(scope="module")
def generator():
    """A tiny float32 Generator whose class tables are random (so labels matter) and whose stored
    statistics are the standing statistics of untruncated z, as a trained run's EMA generator's are.
    Seeded: with weights that depended on what the worker ran before, one pixel in 6144 could sit on a
    uint8 rounding boundary that batches of 4 and of 6 round apart (1 seed in 12 did), failing the exact
    comparison below by one level."""
    keras.utils.set_random_seed(0)
    generator = class_sensitive_generator(NUM_CLASSES)
    StandingStatistics(generator)(noise_batches(generator.spec["z_dim"], NUM_CLASSES, 4, 32, seed=5))
    return generator


def state(generator):
    return [variable.numpy().copy() for variable in generator.variables]


def assert_same_state(before, generator):
    for old, variable in zip(before, generator.variables):
        np.testing.assert_array_equal(old, variable.numpy(), err_msg=variable.path)


def test_noise_batches_untruncated_are_the_plain_seeded_draws_and_truncation_only_redraws_outside():
    z_dim, t = 6, 0.7
    plain = noise_batches(z_dim, NUM_CLASSES, num_batches=3, batch_size=5, seed=4)
    rng = np.random.default_rng(4)  # naive reference: z then labels, batch after batch
    for z, labels in plain:
        np.testing.assert_array_equal(z, rng.standard_normal((5, z_dim)).astype(np.float32))
        np.testing.assert_array_equal(labels, rng.integers(0, NUM_CLASSES, 5))
    truncated = noise_batches(z_dim, NUM_CLASSES, num_batches=3, batch_size=5, seed=4, truncation=t)
    for (z, labels), (z_t, labels_t) in zip(plain, truncated):
        np.testing.assert_array_equal(labels_t, labels)
        assert np.abs(z_t).max() <= np.float32(t)
        inside = np.abs(z) <= t
        np.testing.assert_array_equal(z_t[inside], z[inside])
        assert (z_t[~inside] != z[~inside]).all()


def test_inside_the_block_one_batch_statistics_are_that_truncated_batch_own(generator):
    """With one batch, inference inside the block equals a training-mode pass on that truncated batch
    (whose batch norm uses the batch's own statistics); outside, it does not."""
    t, spec = 0.5, generator.spec
    (z, labels), = noise_batches(spec["z_dim"], NUM_CLASSES, num_batches=1, batch_size=16, seed=0, truncation=t)
    before = state(generator)
    with truncation_statistics(generator, t, num_batches=1, batch_size=16):
        inside = generator((z, labels), training=False).numpy()
    assert_same_state(before, generator)
    stored = generator((z, labels), training=False).numpy()
    training = generator((z, labels), training=True).numpy()  # advances u once, as the block's first pass did
    for variable, value in zip(generator.variables, before):
        variable.assign(value)
    np.testing.assert_allclose(inside, training, atol=2e-4)
    assert np.abs(stored - inside).max() > 1e-2


@pytest.mark.parametrize("t", [0.5, 1.0])
def test_the_first_batch_norm_variance_shrinks_by_the_truncated_normal_variance(generator, t):
    """G's first batch norm normalises Dense(z) (zero bias at init): its variance per channel is
    wᵀ Cov(z) w, so truncated statistics divided by the stored untruncated ones is Var of N(0, 1)
    truncated to [-t, t] (scipy), up to the sampling noise of 4 x 64 draws."""
    first, = [layer for layer in bn_layers(generator) if "block0/cbn1/" in layer.moving_variance.path]
    stored = first.moving_variance.numpy().copy()
    with truncation_statistics(generator, t, num_batches=8, batch_size=64):
        truncated = first.moving_variance.numpy().copy()
    ratio = truncated.sum() / stored.sum()
    expected = stats.truncnorm(-t, t).var()
    assert abs(ratio - expected) < 0.12 * expected, (ratio, expected)
    np.testing.assert_array_equal(first.moving_variance.numpy(), stored)


def test_no_truncation_leaves_the_stored_statistics_alone(generator):
    before = state(generator)
    for t in (None, 0):
        with truncation_statistics(generator, t):
            assert_same_state(before, generator)


def test_the_statistics_come_back_when_the_block_raises(generator):
    before = state(generator)
    with pytest.raises(KeyError):
        with truncation_statistics(generator, 0.5):
            raise KeyError("boom")
    assert_same_state(before, generator)


def reference_images(generator, z, labels, t):
    with truncation_statistics(generator, t):
        recomputed = generator((z, labels), training=False).numpy()
    return recomputed, generator((z, labels), training=False).numpy()


def test_sheets_of_a_keras_generator_sample_truncated_z_with_recomputed_statistics(generator):
    t, z_dim = 0.5, generator.spec["z_dim"]
    before = state(generator)
    sheet = sampling.class_sheet(generator, [0, 2], columns=4, z_dim=z_dim, num_classes=NUM_CLASSES,
                                 truncation=t, seed=1)
    assert_same_state(before, generator)
    z, labels = sheet.z.reshape(8, z_dim), sheet.labels.reshape(8)
    recomputed, stored = reference_images(generator, z, labels, t)
    np.testing.assert_allclose(sheet.images.reshape(recomputed.shape), recomputed, atol=1e-5)
    # The plain sample function is the opt-out: the stored statistics.
    plain = sampling.class_sheet(sampling.as_sample_fn(generator), [0, 2], columns=4, z_dim=z_dim,
                                 num_classes=NUM_CLASSES, truncation=t, seed=1)
    np.testing.assert_allclose(plain.images.reshape(stored.shape), stored, atol=1e-5)
    assert np.abs(recomputed - stored).max() > 1e-2


def test_each_row_of_a_truncation_sheet_has_the_statistics_of_its_own_truncation(generator):
    z_dim = generator.spec["z_dim"]
    truncations = [None, 1.0, 0.25]
    sheet = sampling.truncation_sheet(generator, truncations, columns=3, z_dim=z_dim, num_classes=NUM_CLASSES,
                                      seed=2)
    for row, t in enumerate(truncations):
        z, labels = sheet.z[row], sheet.labels[row]
        if t is None:
            expected = generator((z, labels), training=False).numpy()
        else:
            expected, _ = reference_images(generator, z, labels, t)
        np.testing.assert_allclose(sheet.images[row], expected, atol=1e-5, err_msg=f"row {row} (t={t})")


def test_generate_samples_with_truncation_uses_the_recomputed_statistics(generator):
    t, z_dim = 0.5, generator.spec["z_dim"]
    images, labels = sampling.generate_samples(generator, 6, z_dim, NUM_CLASSES, truncation=t, seed=3,
                                               batch_size=4)
    rng = np.random.default_rng(3)  # the same draws: noise per batch of 4, from one stream
    z = np.concatenate([sampling.sample_noise(4, z_dim, t, rng), sampling.sample_noise(2, z_dim, t, rng)])
    recomputed, _ = reference_images(generator, z, labels, t)
    # Equal up to float rounding: a value on a uint8 rounding boundary may land one level off (oneDNN's
    # summation order differs between CPUs); the stored statistics would be tens of levels off everywhere.
    difference = np.abs(images.astype(int) - to_uint8(recomputed).astype(int))
    assert difference.max() <= 1 and np.mean(difference > 0) < 1e-3, (difference.max(), np.mean(difference > 0))


class MomentsNetwork:
    """Features: per-image moments; logits: none of the generator's classes (no conditional accuracy)."""
    name = "moments"

    def __call__(self, images):
        x = np.asarray(images, np.float64)
        features = np.stack([x.mean((1, 2, 3)), x.std((1, 2, 3)), (x ** 3).mean((1, 2, 3))], axis=1)
        return features.astype(np.float32), np.zeros((len(x), 7), np.float32)


@pytest.mark.slow
def test_evaluating_a_truncated_keras_generator_scores_the_recomputed_statistics(generator):
    t, network, spec = 0.5, MomentsNetwork(), generator.spec
    real = np.tanh(np.random.default_rng(1).standard_normal((64, 32, 32, 1))).astype(np.float32)
    mu, sigma = metrics.mean_and_covariance(network(real)[0])
    reference = {"mu": mu, "sigma": sigma, "network_name": network.name}
    common = dict(z_dim=spec["z_dim"], truncation=t, seed=4)
    keras_scores = runner.evaluate_generator(generator, network, reference, 40, 16, NUM_CLASSES, **common)
    with truncation_statistics(generator, t):  # the naive way: the statistics set by hand, then a plain callable
        fixed = sampling.as_sample_fn(generator)
        by_hand = runner.evaluate_generator(fixed, network, reference, 40, 16, NUM_CLASSES, **common)
    stored = runner.evaluate_generator(sampling.as_sample_fn(generator), network, reference, 40, 16, NUM_CLASSES,
                                       **common)
    assert keras_scores == pytest.approx(by_hand, rel=1e-5)
    assert abs(keras_scores["fid/moments"] - stored["fid/moments"]) > 1e-3
