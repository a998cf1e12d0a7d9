"""The training pipeline of an image folder: its scanned images, shuffled per epoch, decoded after the shuffle."""
from __future__ import annotations

import functools
import logging
import os
from typing import Sequence

import numpy as np
import tensorflow as tf

from sagan_tf.data import common
from sagan_tf.data.image_folder.decode import load_image
from sagan_tf.data.image_folder.scan import EXAMPLES_IN_LOG, UNREADABLE, scan_image_folder

__all__ = ["image_folder_dataset"]

logger = logging.getLogger(__name__)


def image_folder_dataset(data_dir: str, resolution: int, batch_size: int, image_channels: int = 3,
                         seed: int = 0, start_step: int = 0, random_flip: bool = False, *,
                         unconditional: bool = False, class_names: Sequence[str] | None = None,
                         num_classes: int | None = None) -> tf.data.Dataset:
    """Infinite, shuffled, batched images of a class-per-folder directory.

    Yields `(images float32 [batch_size, resolution, resolution, image_channels] in [-1, 1], labels
    int32 [batch_size])`; `batch_size` is the GLOBAL batch size and labels index
    `scan_image_folder(data_dir, class_names=class_names).class_names` (all 0 when `unconditional`).
    Each epoch is a permutation of the file list keyed by `(seed, epoch)`; files are decoded after
    the shuffle, so resuming at `start_step` only skips paths (see `sagan_tf.data.common`).
    `num_classes`, when given for a conditional pipeline, must equal the number of class folders found
    (a folder that gained or lost a class since the config was written fails here, naming both).

    Auto-shard policy: DATA. The files are not a tf.data file source (they are decoded by Pillow), so
    multi-worker training has each worker keep its share of every global batch.
    """
    common.check_pipeline_args(batch_size=batch_size, start_step=start_step,
                               image_channels=image_channels, resolution=resolution)
    index = scan_image_folder(data_dir, unconditional=unconditional,
                              class_names=list(class_names) if class_names else None)
    if not unconditional and num_classes is not None and int(num_classes) != len(index.class_names):
        raise ValueError(f"num_classes={num_classes} but image folder {data_dir} has {len(index.class_names)} "
                         f"class folders {list(index.class_names)}")
    unreadable = index.skipped.get(UNREADABLE, ())
    if unreadable:
        logger.warning("Skipped %d unreadable image file(s) under %s, e.g. %s", len(unreadable), data_dir,
                       ", ".join(unreadable[:EXAMPLES_IN_LOG]))
    paths = tf.constant(index.paths)
    labels = tf.constant(index.labels, dtype=tf.int32)
    load = functools.partial(_load_for_tf, channels=image_channels, min_size=resolution)

    def decode(i: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image = tf.numpy_function(load, [tf.gather(paths, i)], tf.uint8, stateful=False)
        image.set_shape([None, None, image_channels])
        return common.center_crop_and_resize(image, resolution), tf.gather(labels, i)

    return common.build_pipeline(
        common.shuffled_indices(len(index), seed), decode, num_examples=len(index),
        batch_size=batch_size, seed=seed, start_step=start_step, random_flip=random_flip,
        auto_shard_policy=tf.data.experimental.AutoShardPolicy.DATA)


def _load_for_tf(path: bytes, channels: int, min_size: int) -> np.ndarray:
    """`load_image` for tf.numpy_function, which passes the path as bytes."""
    path = os.fsdecode(path)
    try:
        return load_image(path, channels, min_size)
    except Exception as e:  # noqa: BLE001 -- re-raised with the path, which TF would not show
        raise OSError(f"{path} passed the start-up scan but cannot be decoded any more: {e}") from e
