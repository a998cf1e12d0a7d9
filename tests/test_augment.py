"""DiffAugment (sagan_tf.training.augment): the identity when off, the operations against numpy loops,
differentiable (the gradient is the operation's adjoint), seeded per image, and the same rows on two
replicas as on one device."""
import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.run import run_dir
from sagan_tf.training import train
from tests.helpers import tiny_config
from tests.shared_runs import in_memory_dataset

from sagan_tf.config import parse_policy
from sagan_tf.training import augment as aug

POLICY = parse_policy("translation,cutout")


def numpy_translate(images, shifts):
    out = np.zeros_like(images)
    batch, height, width, _ = images.shape
    for b in range(batch):
        for i in range(height):
            for j in range(width):
                source_i, source_j = i - shifts[b, 0], j - shifts[b, 1]
                if 0 <= source_i < height and 0 <= source_j < width:
                    out[b, i, j] = images[b, source_i, source_j]
    return out


def numpy_cut_out(images, centres):
    out = images.copy()
    height, width = images.shape[1:3]
    size_h, size_w = aug.cutout_size(height, width)
    for b, (row, column) in enumerate(centres):
        top, left = row - size_h // 2, column - size_w // 2
        out[b, max(top, 0):max(top + size_h, 0), max(left, 0):max(left + size_w, 0)] = 0
    return out


def test_policy_parsing_names_an_unknown_operation():
    assert parse_policy("") == () and parse_policy(" translation , cutout ") == POLICY
    with pytest.raises(ValueError, match=r"'colour'.*'translation', 'cutout'"):
        parse_policy("translation,colour")


def test_off_is_the_identity():
    images = tf.random.normal([3, 8, 8, 1])
    assert aug.augment(images, (), tf.constant([0, 1])) is images


def test_sizes_follow_diffaugment():
    assert aug.translation_limits(32, 32) == (4, 4) and aug.cutout_size(32, 32) == (16, 16)
    assert aug.translation_limits(8, 16) == (1, 2) and aug.cutout_size(8, 16) == (4, 8)


def test_translation_and_cutout_equal_numpy_loops():
    rng = np.random.default_rng(0)
    images = rng.standard_normal((6, 8, 12, 2)).astype(np.float32)
    limit_h, limit_w = aug.translation_limits(8, 12)
    shifts = np.stack([rng.integers(-limit_h, limit_h + 1, 6), rng.integers(-limit_w, limit_w + 1, 6)], 1)
    shifts[0] = (limit_h, -limit_w)  # the extremes
    np.testing.assert_array_equal(aug.translate(tf.constant(images), tf.constant(shifts, tf.int32)).numpy(),
                                  numpy_translate(images, shifts))
    centres = np.stack([rng.integers(0, 8, 6), rng.integers(0, 12, 6)], 1)
    centres[0], centres[1] = (0, 0), (7, 11)  # squares clipped at each corner
    np.testing.assert_array_equal(aug.cut_out(tf.constant(images), tf.constant(centres, tf.int32)).numpy(),
                                  numpy_cut_out(images, centres))


def test_augmentation_is_differentiable_with_its_adjoint_as_gradient():
    """Both operations are linear in the image, so for f(x) = <w, A(x)> the gradient A^T(w) satisfies
    <A^T(w), x> = f(x); and the gradient reaches exactly the pixels that survive."""
    images = tf.random.stateless_normal([4, 16, 16, 1], seed=[1, 2])
    weights = tf.random.stateless_normal([4, 16, 16, 1], seed=[3, 4])
    key = tf.constant([5, 6])
    with tf.GradientTape() as tape:
        tape.watch(images)
        value = tf.reduce_sum(weights * aug.augment(images, POLICY, key))
    gradient = tape.gradient(value, images)
    assert gradient is not None
    np.testing.assert_allclose(float(tf.reduce_sum(gradient * images)), float(value), rtol=1e-4)
    ones = aug.augment(tf.ones_like(images), POLICY, key)  # 1 where a pixel of the output has a source
    assert 0 < float(tf.reduce_mean(tf.cast(gradient != 0, tf.float32))) <= float(tf.reduce_mean(ones))


def test_each_image_draws_its_own_parameters_and_a_key_repeats_them():
    images = tf.ones([64, 16, 16, 1])
    first = aug.augment(images, POLICY, tf.constant([7, 8])).numpy()
    np.testing.assert_array_equal(first, aug.augment(images, POLICY, tf.constant([7, 8])).numpy())
    assert not np.array_equal(first, aug.augment(images, POLICY, tf.constant([7, 9])).numpy())
    assert len({image.tobytes() for image in first}) > 32  # not one mask for the batch
    # Every shift in [-s, s] occurs (translation alone, on an image whose rows and columns are numbered).
    numbered = tf.cast(tf.range(16)[None, :, None, None] * 100 + tf.range(16)[None, None, :, None], tf.float32)
    shifted = aug.augment(tf.tile(numbered + 1, [400, 1, 1, 1]), ("translation",), tf.constant([1, 1])).numpy()
    middle = shifted[:, 8, 8, 0] - 1  # the source pixel of the centre: (8 - dy) * 100 + (8 - dx)
    assert set(8 - middle // 100) == set(range(-2, 3)) and set(8 - middle % 100) == set(range(-2, 3))


def test_two_replicas_augment_their_rows_of_the_one_device_batch(two_device_strategy):
    images = tf.random.stateless_normal([8, 16, 16, 1], seed=[1, 1])
    key = tf.constant([3, 4])
    expected = aug.augment(images, POLICY, key).numpy()

    @tf.function
    def run(batch):
        return two_device_strategy.run(lambda rows: aug.augment(rows, POLICY, key), args=(batch,))

    dataset = tf.data.Dataset.from_tensors(images)
    (batch,) = list(two_device_strategy.experimental_distribute_dataset(dataset))
    parts = two_device_strategy.experimental_local_results(run(batch))
    np.testing.assert_array_equal(np.concatenate([part.numpy() for part in parts]), expected)


def test_the_train_step_augments_what_d_sees_and_the_run_records_the_policy(tmp_path):
    """Off, D's first update is the plain one; on, it differs (D saw augmented images), from the same
    weights and batch; the run's config.json keeps the policy, so a resume trains the same recipe."""
    dataset_fn = lambda start: in_memory_dataset(4, start)
    discriminators = {}
    for policy in ("", "translation,cutout"):
        model = train(tiny_config(train_steps=1, augment=policy), str(tmp_path / (policy or "off")),
                      dataset_fn=dataset_fn, verbose=0)
        discriminators[policy] = [w.copy() for w in model.discriminator.get_weights()]
        assert model.augment == parse_policy(policy)
        assert run_dir.read_config(str(tmp_path / (policy or "off"))).augment == policy
    changed = [not np.array_equal(a, b) for a, b in zip(discriminators[""], discriminators["translation,cutout"])]
    assert any(changed)
