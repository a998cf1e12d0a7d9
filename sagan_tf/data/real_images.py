"""Real images of a config's data set, for what scores a generator against them (`sagan_tf.evaluation`).

* :func:`real_image_source` -- the pipeline of a split at the config's resolution and channels, its size
  and the name a reference cache is filed under (``"fashion_mnist_test"``);
* :func:`real_sample_fn` / :func:`real_split_sample_fn` -- a ``fn(z, labels) -> images`` that answers with
  real images of the requested classes, to score real data exactly the way samples are scored;
* :func:`canonical_dataset_name`, :func:`default_reference_split` -- which data set a config names, and
  the split its samples are compared with by default.
"""
from __future__ import annotations

import os

import numpy as np

from sagan_tf.data import build_dataset, is_tfds, split_size, tfds_name

__all__ = ["canonical_dataset_name", "default_reference_split", "ReferenceSplitError", "real_image_source",
           "real_sample_fn", "real_split_sample_fn"]


def real_sample_fn(images: np.ndarray, labels: np.ndarray, seed: int = 0):
    """A ``fn(z, labels) -> images`` that answers with *real* images of the requested classes.

    Passed to :func:`evaluate_generator` in place of a generator, it scores a real split exactly the
    way samples are scored: the real-vs-real FID that bounds what a generator can reach, and the
    conditional accuracy of real images (the classifier's accuracy on that split). Each class's
    images are drawn in a seeded random order without replacement (a class is reshuffled only once
    it is used up); `z` is ignored.
    """
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels).reshape(-1)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    rng = np.random.default_rng(seed)
    pools = {int(c): np.flatnonzero(labels == c) for c in np.unique(labels)}
    queues = {c: rng.permutation(index) for c, index in pools.items()}

    def take(label: int) -> int:
        if label not in pools:
            raise ValueError(f"label {label} has no real images (classes present: {sorted(pools)})")
        if not queues[label].size:
            queues[label] = rng.permutation(pools[label])
        index, queues[label] = queues[label][0], queues[label][1:]
        return int(index)

    def sample(z, requested):
        return images[[take(int(label)) for label in np.asarray(requested).reshape(-1)]]

    return sample


#: Data sets (canonical names) with a "test" split the GAN never trained on: the default reference.
_HELD_OUT_TEST_SPLIT = frozenset({"fashion_mnist"})


def canonical_dataset_name(dataset: str) -> str:
    """The data set a config's ``dataset`` field names, as classifiers record it.

    "fashion_mnist_idx" and "tfds:fashion_mnist" -> "fashion_mnist"; "tfds:cifar10" -> "cifar10";
    anything else unchanged.
    """
    dataset = str(dataset)
    if is_tfds(dataset):
        dataset = tfds_name(dataset).split("/")[0].split(":")[0]
    return "fashion_mnist" if dataset == "fashion_mnist_idx" else dataset


def default_reference_split(dataset: str) -> str:
    """"test" where the data set has one the GAN never trained on (Fashion-MNIST), else "train"."""
    return "test" if canonical_dataset_name(dataset) in _HELD_OUT_TEST_SPLIT else "train"


class ReferenceSplitError(ValueError):
    """The real split a run's evaluation compares with cannot be read (the message names the split)."""


def real_split_sample_fn(config, split: str, num_images: int, batch_size: int, data_dir: str | None = None,
                         seed: int = 0, log_fn=print):
    """:func:`real_sample_fn` over the first `num_images` images of a real split (each image at most once;
    fewer if the split is smaller), to score real images exactly as samples are scored.

    Raises:
      ReferenceSplitError: the split cannot be read.
    """
    source, name, size = real_image_source(config, split, batch_size, data_dir)
    wanted = min(num_images, size)
    images, labels, have = [], [], 0
    for batch_images, batch_labels in source:
        images.append(batch_images.numpy()[:wanted - have])
        labels.append(batch_labels.numpy()[:wanted - have])
        have += images[-1].shape[0]
        if have >= wanted:
            break
    log_fn(f"scoring {have} real images of {name} in place of a generator")
    return real_sample_fn(np.concatenate(images), np.concatenate(labels), seed=seed)


def real_image_source(config, split: str, batch_size: int, data_dir: str | None = None):
    """(tf.data pipeline of (images, labels) in [-1, 1], reference name, split size) for `config`.

    The pipeline is :func:`sagan_tf.data.build_dataset` for the split, at the config's resolution
    and channels. The split size is :func:`sagan_tf.data.split_size` (for every kind of data: the
    idx files' split, the readable images of an image folder with the config's class selection, the
    records of a TFDS split or slice such as "train[:10%]"), read after the pipeline is built (which
    prepares a TFDS dataset). The pipeline's first `split size` images are each image of the split
    exactly once (every epoch is a permutation); it repeats forever after. The reference name, e.g.
    "fashion_mnist_test", names the cache.

    Raises:
      ReferenceSplitError: the split cannot be read (unknown split, missing files).
    """
    data_config = config.copy_and_resolve_references()
    data_config.batch_size, data_config.random_flip = int(batch_size), False
    try:
        dataset = build_dataset(data_config, data_dir=data_dir, split=split)
        size = split_size(data_config, split, data_dir)
    except (ValueError, FileNotFoundError) as error:
        raise ReferenceSplitError(f"split {split!r}: {error}") from error
    name = canonical_dataset_name(config.dataset)
    if data_dir and config.dataset == "image_folder":
        name = f"image_folder_{os.fspath(data_dir).rstrip('/').rsplit('/', 1)[-1]}"
    return dataset, f"{name}_{split}", size
