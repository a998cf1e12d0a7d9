"""Fashion-MNIST read straight from the original idx .gz files, padded to 32x32.

The files are parsed here with numpy (no TFDS, no download): the Debian-style package
`dataset-fashion-mnist` installs them in `DEFAULT_DIR`. They are read through `tf.io.gfile`, so the
directory may also be a `file://`, `gs://` or any other URI TensorFlow has a filesystem for. Images are 28x28 grayscale; they are padded by
two background pixels on every side to 32x32, a power of two that the GAN's up/down-sampling stacks
need. The background of Fashion-MNIST is 0 (black), which becomes -1 after scaling to [-1, 1].
"""
from __future__ import annotations

import gzip
import zlib

import numpy as np
import tensorflow as tf

from sagan_tf.data import common
from sagan_tf.run import files

__all__ = [
    "IdxFormatError",
    "read_idx",
    "load_fashion_mnist",
    "split_arrays",
    "fashion_mnist_dataset",
    "DEFAULT_DIR",
    "FASHION_MNIST_CLASSES",
    "RESOLUTION",
]

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"

#: Label id -> class name, in the order of the official release.
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

IMAGE_SIZE = 28
PADDING = 2
RESOLUTION = IMAGE_SIZE + 2 * PADDING  # 32

_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

# idx magic number: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions.
_UBYTE = 0x08
_IMAGES_MAGIC = (_UBYTE << 8) | 3
_LABELS_MAGIC = (_UBYTE << 8) | 1


class IdxFormatError(ValueError):
    """An idx(.gz) file is corrupted, truncated or is not the kind of idx file expected."""


def read_idx(path: str, expected_magic: int) -> np.ndarray:
    """Reads a gzipped idx file into a uint8 array of the shape stored in its header.

    `path` is a local path or any URI `tf.io.gfile` reads (file://, gs://, ram://, ...).

    Raises:
      FileNotFoundError: `path` does not exist (or is a directory).
      IdxFormatError: bad gzip stream, wrong magic number, or a payload whose size does not match the
        header; the message names the file.
    """
    if not files.exists(path) or files.isdir(path):
        raise FileNotFoundError(f"idx file {path} not found")
    compressed = files.read_bytes(path)
    try:
        raw = gzip.decompress(compressed)
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError; truncation is EOFError
        raise IdxFormatError(f"{path}: not a valid gzip file ({e})") from e

    if len(raw) < 4:
        raise IdxFormatError(f"{path}: too short ({len(raw)} bytes) to hold an idx header")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected_magic:
        raise IdxFormatError(f"{path}: idx magic number is 0x{magic:08x}, expected "
                             f"0x{expected_magic:08x}")
    ndim = magic & 0xFF
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise IdxFormatError(f"{path}: truncated idx header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected_size = header_size + int(np.prod(shape))
    if len(raw) != expected_size:
        raise IdxFormatError(f"{path}: header announces shape {shape} ({expected_size} bytes) but "
                             f"the file holds {len(raw)} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape)


def load_fashion_mnist(data_dir: str = DEFAULT_DIR, split: str = "train"
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Returns `(images uint8 [N, 28, 28], labels uint8 [N])` of a split ("train" or "test").

    `data_dir` is a local directory or a URI (file://, gs://, ...), read through `tf.io.gfile`.

    Raises:
      FileNotFoundError: the directory or a file is missing (says how to install them).
      IdxFormatError: a file is corrupted (names it).
      ValueError: unknown split, or images and labels disagree.
    """
    if split not in _FILES:
        raise ValueError(f"unknown Fashion-MNIST split {split!r}; expected one of {sorted(_FILES)}")
    images_path, labels_path = (files.join(data_dir, name) for name in _FILES[split])
    for path in (images_path, labels_path):
        if not files.exists(path) or files.isdir(path):
            raise FileNotFoundError(
                f"Fashion-MNIST file {path} not found; `apt-get install dataset-fashion-mnist` "
                f"provides the idx files in {DEFAULT_DIR}")

    images = read_idx(images_path, _IMAGES_MAGIC)
    labels = read_idx(labels_path, _LABELS_MAGIC)
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise IdxFormatError(f"{images_path}: images are {images.shape[1:]}, expected "
                             f"{IMAGE_SIZE}x{IMAGE_SIZE}")
    if len(images) != len(labels):
        raise ValueError(f"{images_path} holds {len(images)} images but {labels_path} holds "
                         f"{len(labels)} labels")
    return images, labels


def split_arrays(data_dir: str = DEFAULT_DIR, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """A whole split in memory as the training pipeline yields it: (float32 images [N, 32, 32, 1] in
    [-1, 1], padded from 28x28 like the training data; int32 labels [N]). For evaluating on every image
    of a split once (the classifier's test accuracy); raises as :func:`load_fashion_mnist`."""
    images, labels = load_fashion_mnist(data_dir, split)
    images = np.pad(images, [(0, 0), (PADDING, PADDING), (PADDING, PADDING)])[..., np.newaxis]
    return images.astype(np.float32) / 127.5 - 1.0, labels.astype(np.int32)


def fashion_mnist_dataset(batch_size: int, data_dir: str = DEFAULT_DIR, split: str = "train",
                          seed: int = 0, start_step: int = 0, random_flip: bool = False,
                          image_channels: int = 1) -> tf.data.Dataset:
    """Infinite, shuffled, batched Fashion-MNIST at 32x32.

    Yields `(images float32 [batch_size, 32, 32, image_channels] in [-1, 1], labels int32
    [batch_size])`; `batch_size` is the GLOBAL batch size. The whole split lives in memory (47 MB for
    train); each epoch is a permutation of example indices keyed by `(seed, epoch)`, and
    `start_step=k` yields exactly the batches k, k+1, ... of a run started at step 0 (see
    `sagan_tf.data.common`). `image_channels=3` replicates the gray channel.

    Auto-shard policy: DATA. The examples come from memory, not from files, so multi-worker training
    has each worker keep its share of every global batch.
    """
    common.check_pipeline_args(batch_size=batch_size, start_step=start_step,
                               image_channels=image_channels)
    images, labels = load_fashion_mnist(data_dir, split)
    images = tf.constant(images[..., np.newaxis])  # [N, 28, 28, 1]
    labels = tf.constant(labels)
    padding = [[PADDING, PADDING], [PADDING, PADDING], [0, 0]]

    def decode(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image = tf.pad(tf.gather(images, index), padding, constant_values=0)
        return common.convert_channels(image, image_channels), tf.gather(labels, index)

    num_examples = int(labels.shape[0])
    return common.build_pipeline(
        common.shuffled_indices(num_examples, seed), decode, num_examples=num_examples,
        batch_size=batch_size, seed=seed, start_step=start_step, random_flip=random_flip,
        auto_shard_policy=tf.data.experimental.AutoShardPolicy.DATA)
