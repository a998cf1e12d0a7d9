"""sagan_tf.data.common: resume arithmetic, epoch order, image conversions, dataset finishing."""
import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.data import common


def _stream(num_examples, seed, start_step, batch_size, count):
    """The first `count` (position, index) pairs of a shuffled-index stream, as numpy arrays."""
    stream = common.epoch_stream(common.shuffled_indices(num_examples, seed), num_examples=num_examples,
                                 batch_size=batch_size, start_step=start_step)
    pairs = np.array(list(stream.take(count).as_numpy_iterator()))
    return pairs[:, 0], pairs[:, 1]


@pytest.mark.parametrize("start_step, batch_size, num_examples, expected", [
    (0, 4, 10, (0, 0)),
    (2, 4, 10, (0, 8)),
    (3, 4, 10, (1, 2)),
    (5, 4, 10, (2, 0)),
    (1000, 256, 1_281_167, (0, 256_000)),
    (10_000, 256, 1_281_167, (1, 1_278_833)),
])
def test_resume_point(start_step, batch_size, num_examples, expected):
    assert common.resume_point(start_step, batch_size, num_examples) == expected


def test_every_example_once_per_epoch_and_positions_count_up():
    positions, indices = _stream(7, seed=3, start_step=0, batch_size=1, count=21)
    np.testing.assert_array_equal(positions, np.arange(21))
    for epoch in range(3):
        assert sorted(indices[7 * epoch:7 * (epoch + 1)]) == list(range(7))
    # Epochs are shuffled independently.
    assert len({tuple(indices[7 * e:7 * (e + 1)]) for e in range(3)}) == 3


@pytest.mark.parametrize("start_step", [1, 2, 3, 7])
def test_resumed_stream_continues_the_uninterrupted_one(start_step):
    full_positions, full_indices = _stream(10, seed=5, start_step=0, batch_size=4, count=40)
    positions, indices = _stream(10, seed=5, start_step=start_step, batch_size=4, count=12)
    first = start_step * 4
    np.testing.assert_array_equal(positions, full_positions[first:first + 12])
    np.testing.assert_array_equal(indices, full_indices[first:first + 12])


def test_seed_changes_the_order_and_same_seed_repeats_it():
    _, a = _stream(50, seed=0, start_step=0, batch_size=1, count=50)
    _, b = _stream(50, seed=0, start_step=0, batch_size=1, count=50)
    _, c = _stream(50, seed=1, start_step=0, batch_size=1, count=50)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_to_model_range_known_values():
    out = common.to_model_range(np.array([0, 127.5, 255], np.float32))
    np.testing.assert_allclose(out, [-1.0, 0.0, 1.0], atol=1e-7)
    out = common.to_model_range(np.array([0, 51, 255], np.uint8))
    assert out.dtype == tf.float32
    np.testing.assert_allclose(out, [-1.0, 51 / 127.5 - 1, 1.0], atol=1e-6)


def test_center_crop_and_area_downscale_match_numpy():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(12, 20, 3)).astype(np.uint8)
    out = common.center_crop_and_resize(image, 4).numpy()
    # Centre square: columns 4..15; area resize by 3 = mean of 3x3 blocks.
    square = image[:, 4:16].astype(np.float64)
    expected = square.reshape(4, 3, 4, 3, 3).mean(axis=(1, 3))
    assert out.shape == (4, 4, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-3)


def test_center_crop_same_size_is_identity_and_upscale_is_bilinear():
    image = np.arange(2 * 6).reshape(6, 2, 1).astype(np.uint8)  # tall: keeps rows 2..3
    np.testing.assert_array_equal(common.center_crop_and_resize(image, 2).numpy()[..., 0], image[2:4, :, 0])
    flat = np.full((3, 3, 1), 7, np.uint8)
    np.testing.assert_allclose(common.center_crop_and_resize(flat, 8).numpy(), np.full((8, 8, 1), 7.0))
    ramp = np.array([[0, 90]], np.uint8).repeat(2, axis=0)[..., None]  # 2x2, left 0, right 90
    up = common.center_crop_and_resize(ramp, 4).numpy()[0, :, 0]
    np.testing.assert_allclose(up, [0, 22.5, 67.5, 90])  # half-pixel-centre bilinear


def test_convert_channels():
    rgb = tf.constant([[[200, 100, 50]]], tf.uint8)
    gray = common.convert_channels(rgb, 1)
    assert gray.shape == (1, 1, 1) and int(gray[0, 0, 0]) == 124  # 0.299*200 + 0.587*100 + 0.114*50
    np.testing.assert_array_equal(common.convert_channels(gray, 3), [[[124, 124, 124]]])
    rgba = tf.constant([[[1, 2, 3, 4]]], tf.uint8)
    np.testing.assert_array_equal(common.convert_channels(rgba, 3), [[[1, 2, 3]]])


def test_maybe_flip_depends_only_on_seed_and_position():
    image = tf.reshape(tf.range(6, dtype=tf.float32), [1, 6, 1])
    flips = [bool(common.maybe_flip(image, seed=9, position=p, random_flip=True)[0, 0, 0] == 5)
             for p in range(40)]
    again = [bool(common.maybe_flip(image, seed=9, position=p, random_flip=True)[0, 0, 0] == 5)
             for p in range(40)]
    assert flips == again and 5 < sum(flips) < 35
    assert common.maybe_flip(image, seed=9, position=0, random_flip=False) is image


def test_finish_batches_drops_remainder_and_sets_policy():
    examples = tf.data.Dataset.range(10).repeat()
    ds = common.finish(examples, 4, tf.data.experimental.AutoShardPolicy.DATA)
    assert ds.element_spec.shape == (4,)
    assert ds.cardinality() == tf.data.INFINITE_CARDINALITY
    assert ds.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.DATA
    np.testing.assert_array_equal(next(iter(ds)), [0, 1, 2, 3])


@pytest.mark.parametrize("kwargs", [dict(batch_size=0, start_step=0, image_channels=3),
                                    dict(batch_size=1, start_step=-1, image_channels=3),
                                    dict(batch_size=1, start_step=0, image_channels=4),
                                    dict(batch_size=1, start_step=0, image_channels=3, resolution=0)])
def test_bad_arguments_are_rejected(kwargs):
    with pytest.raises(ValueError):
        common.check_pipeline_args(**kwargs)
