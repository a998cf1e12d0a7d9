"""sagan_tf.data.fashion_mnist: idx parsing (real files and corrupted ones) and the 32x32 pipeline.

Pipeline behaviour (order, resume, flips) is checked on a tiny synthetic idx set whose images say which
example they are: example i has the value 10 * (i + 1) in its top-left pixel and 0 elsewhere, so
after padding the pixel lands at (2, 2), or at (2, 29) when the image was flipped.
"""
import gzip
import os

import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.data import fashion_mnist as fm

REAL_DIR = fm.DEFAULT_DIR
needs_real_files = pytest.mark.skipif(not os.path.isdir(REAL_DIR), reason=f"{REAL_DIR} absent")

TINY_N = 10


def _write_idx(path, array, ndim):
    header = bytes([0, 0, 0x08, ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _tiny_labels(index):
    return (3 * index + 1) % 10


@pytest.fixture
def tiny_dir(tmp_path):
    images = np.zeros((TINY_N, 28, 28), np.uint8)
    images[:, 0, 0] = 10 * (np.arange(TINY_N) + 1)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", images, 3)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", _tiny_labels(np.arange(TINY_N)), 1)
    return str(tmp_path)


def _decode_tiny(images):
    """(example index, flipped?) of each padded tiny image, from where its marker pixel is."""
    pixels = np.round((images[..., 0] + 1) * 127.5).astype(int)  # back to 0..255
    left, right = pixels[:, 2, 2], pixels[:, 2, 29]
    assert np.all((left == 0) != (right == 0)), "exactly one marker per image"
    return (np.maximum(left, right) // 10 - 1), right > 0


def _batches(ds, n):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds.take(n)])
    return np.stack(xs), np.stack(ys)


# ------------------------------------------------------------------------------------------------
# The real files.
# ------------------------------------------------------------------------------------------------
def _independent_labels(split_prefix):
    """Labels parsed without the module: skip the 8-byte idx1 header."""
    with gzip.open(os.path.join(REAL_DIR, f"{split_prefix}-labels-idx1-ubyte.gz")) as f:
        return np.frombuffer(f.read()[8:], np.uint8)


@needs_real_files
def test_real_files_known_values():
    images, labels = fm.load_fashion_mnist(REAL_DIR, "train")
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (60000,) and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels[:10], [9, 0, 0, 3, 0, 2, 7, 2, 5, 5])
    np.testing.assert_array_equal(labels, _independent_labels("train"))
    np.testing.assert_array_equal(np.bincount(labels), [6000] * 10)
    assert images.min() == 0 and images.max() == 255
    assert int(images[0].astype(np.int64).sum()) == 76247  # first training image, independent parse

    test_images, test_labels = fm.load_fashion_mnist(REAL_DIR, "test")
    assert test_images.shape == (10000, 28, 28)
    np.testing.assert_array_equal(test_labels, _independent_labels("t10k"))
    np.testing.assert_array_equal(np.bincount(test_labels), [1000] * 10)
    assert len(fm.FASHION_MNIST_CLASSES) == 10 and fm.FASHION_MNIST_CLASSES[9] == "Ankle boot"


@needs_real_files
def test_real_pipeline_pads_with_background_and_keeps_labels():
    raw_images, raw_labels = fm.load_fashion_mnist(REAL_DIR, "test")
    images, labels = _batches(fm.fashion_mnist_dataset(8, REAL_DIR, split="test", seed=4), 1)
    images, labels = images[0], labels[0]
    assert images.shape == (8, 32, 32, 1) and images.dtype == np.float32 and labels.dtype == np.int32
    assert images.min() >= -1 and images.max() <= 1
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert np.all(images[:, border, 0] == -1)
    flat_raw = raw_images.reshape(len(raw_images), -1)
    for image, label in zip(images, labels):
        interior = np.round((image[2:30, 2:30, 0] + 1) * 127.5).astype(np.uint8).reshape(-1)
        matches = np.flatnonzero(np.all(flat_raw == interior, axis=1))
        assert len(matches) >= 1 and raw_labels[matches[0]] == label


# ------------------------------------------------------------------------------------------------
# Errors.
# ------------------------------------------------------------------------------------------------
def test_missing_directory_names_path_and_package(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist") as info:
        fm.load_fashion_mnist(missing)
    assert missing in str(info.value)


def test_truncated_gzip_names_the_file(tiny_dir):
    path = os.path.join(tiny_dir, "train-images-idx3-ubyte.gz")
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])
    with pytest.raises(fm.IdxFormatError, match="train-images-idx3-ubyte.gz"):
        fm.load_fashion_mnist(tiny_dir)


def test_short_payload_names_the_file(tiny_dir):
    path = os.path.join(tiny_dir, "train-labels-idx1-ubyte.gz")
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + (TINY_N).to_bytes(4, "big") + b"\x01\x02")  # 2 of 10 labels
    with pytest.raises(fm.IdxFormatError, match="train-labels-idx1-ubyte.gz.*(10,)"):
        fm.load_fashion_mnist(tiny_dir)


def test_wrong_magic_names_the_file(tiny_dir):
    images_path = os.path.join(tiny_dir, "train-images-idx3-ubyte.gz")
    labels_path = os.path.join(tiny_dir, "train-labels-idx1-ubyte.gz")
    os.replace(labels_path, images_path)  # a labels file where images are expected
    with pytest.raises(fm.IdxFormatError, match="train-images-idx3-ubyte.gz.*magic"):
        fm.read_idx(images_path, fm._IMAGES_MAGIC)


# ------------------------------------------------------------------------------------------------
# The pipeline on the tiny set.
# ------------------------------------------------------------------------------------------------
def test_tiny_pipeline_values_labels_and_epochs(tiny_dir):
    images, labels = _batches(fm.fashion_mnist_dataset(5, tiny_dir, seed=1), 6)  # 3 epochs
    assert images.shape == (6, 5, 32, 32, 1) and labels.dtype == np.int32
    index, flipped = _decode_tiny(images.reshape(30, 32, 32, 1))
    assert not flipped.any()  # random_flip defaults to False
    np.testing.assert_array_equal(labels.reshape(-1), _tiny_labels(index))
    for epoch in range(3):
        assert sorted(index[10 * epoch:10 * (epoch + 1)]) == list(range(10))
    # All pixels other than the marker are background (-1).
    marker = np.zeros((32, 32), bool)
    marker[2, 2] = True
    assert np.all(images.reshape(30, 32, 32)[:, ~marker] == -1)


def test_same_seed_same_batches_other_seed_other_order(tiny_dir):
    a, _ = _batches(fm.fashion_mnist_dataset(5, tiny_dir, seed=7, random_flip=True), 4)
    b, _ = _batches(fm.fashion_mnist_dataset(5, tiny_dir, seed=7, random_flip=True), 4)
    c, _ = _batches(fm.fashion_mnist_dataset(5, tiny_dir, seed=8, random_flip=True), 4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(_decode_tiny(a.reshape(20, 32, 32, 1))[0],
                              _decode_tiny(c.reshape(20, 32, 32, 1))[0])


@pytest.mark.parametrize("start_step", [1, 2, 3, 5])  # batch 2 straddles epochs 0|1, batch 5 starts epoch 2
def test_resume_yields_the_uninterrupted_batches_with_flips(tiny_dir, start_step):
    full_x, full_y = _batches(fm.fashion_mnist_dataset(4, tiny_dir, seed=2, random_flip=True), 9)
    x, y = _batches(fm.fashion_mnist_dataset(4, tiny_dir, seed=2, random_flip=True, start_step=start_step), 3)
    np.testing.assert_array_equal(x, full_x[start_step:start_step + 3])
    np.testing.assert_array_equal(y, full_y[start_step:start_step + 3])
    _, flipped = _decode_tiny(full_x.reshape(36, 32, 32, 1))
    assert 0 < flipped.sum() < 36  # flips do happen, and not always


def test_three_channels_replicate_gray(tiny_dir):
    gray, _ = _batches(fm.fashion_mnist_dataset(5, tiny_dir, seed=1), 1)
    rgb, _ = _batches(fm.fashion_mnist_dataset(5, tiny_dir, seed=1, image_channels=3), 1)
    assert rgb.shape == (1, 5, 32, 32, 3)
    np.testing.assert_array_equal(rgb, np.repeat(gray, 3, axis=-1))


def test_policy_is_data(tiny_dir):
    ds = fm.fashion_mnist_dataset(5, tiny_dir)
    assert ds.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.DATA


def test_mirrored_strategy_splits_the_global_batch(tiny_dir, two_device_strategy):
    ds = fm.fashion_mnist_dataset(4, tiny_dir, seed=3)
    (expected, expected_labels), = [(x.numpy(), y.numpy()) for x, y in ds.take(1)]
    images, labels = next(iter(two_device_strategy.experimental_distribute_dataset(ds)))
    per_replica = two_device_strategy.experimental_local_results(images)
    assert [tuple(t.shape) for t in per_replica] == [(2, 32, 32, 1), (2, 32, 32, 1)]
    np.testing.assert_array_equal(np.concatenate([t.numpy() for t in per_replica]), expected)
    np.testing.assert_array_equal(
        np.concatenate([t.numpy() for t in two_device_strategy.experimental_local_results(labels)]),
        expected_labels)


def test_split_arrays_are_the_whole_split_padded_like_the_pipeline(tiny_dir):
    images, labels = fm.split_arrays(tiny_dir, "train")
    assert images.shape == (TINY_N, 32, 32, 1) and images.dtype == np.float32 and labels.dtype == np.int32
    np.testing.assert_array_equal(_decode_tiny(images)[0], np.arange(TINY_N))  # in file order, unflipped
    np.testing.assert_array_equal(labels, _tiny_labels(np.arange(TINY_N)))
    np.testing.assert_array_equal(images[:, 2, 2, 0], np.float32(10 * (np.arange(TINY_N) + 1)) / np.float32(127.5) - 1)
    assert np.count_nonzero(images != -1.0) == TINY_N  # background and padding: pixel value 0 -> -1
    # The same values the training pipeline yields for these examples.
    batch_images, batch_labels = (x[0] for x in _batches(fm.fashion_mnist_dataset(TINY_N, tiny_dir, seed=0), 1))
    order = _decode_tiny(batch_images)[0]
    np.testing.assert_array_equal(batch_images, images[order])
    np.testing.assert_array_equal(batch_labels, labels[order])
