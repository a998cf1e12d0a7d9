"""Any TFDS image-classification dataset (`imagenet2012`, `cifar10`, `fashion_mnist`, ...).

Nothing is ever downloaded: the dataset must already be prepared in `data_dir`, or be preparable
offline from `manual_dir` (the ILSVRC2012 tars for `imagenet2012`; for other datasets the archives that
TFDS would otherwise download, under their usual file names).

Records are read with the image left encoded (`tfds.decode.SkipDecoding`) so that shuffling and the
resume skip move bytes around, not pixels; images are decoded only after both.
"""
from __future__ import annotations

import os

import tensorflow as tf
import tensorflow_datasets as tfds

from sagan_tf.data import common

IMAGE_KEY = "image"
LABEL_KEY = "label"

#: Undecoded records held by the per-epoch shuffle buffer (ImageNet JPEGs average ~110 kB, so about
#: 1 GB of host memory). It complements the per-epoch shuffle of the file order.
RECORD_SHUFFLE_BUFFER = 10_000


def tfds_dataset(name: str, resolution: int, batch_size: int, split: str = "train",
                 data_dir: str | None = None, manual_dir: str | None = None,
                 image_channels: int = 3, seed: int = 0, start_step: int = 0,
                 random_flip: bool = False) -> tf.data.Dataset:
    """Infinite, shuffled, batched images of a TFDS dataset with "image" and "label" features.

    Yields `(images float32 [batch_size, resolution, resolution, image_channels] in [-1, 1], labels
    int32 [batch_size])`; `batch_size` is the GLOBAL batch size. Images are centre-cropped to a
    square and resized (area when shrinking, bilinear when enlarging); gray and RGB are converted
    to `image_channels`.

    Epoch `e` reads the files in an order keyed by `(seed, e)` and shuffles the undecoded records
    through a buffer keyed the same way; `start_step=k` yields exactly the batches k, k+1, ... of a
    run started at step 0, skipping only undecoded records (see `sagan_tf.data.common`).

    Auto-shard policy: DATA. FILE would be the cheaper choice for file-sharded TFDS data, but the
    reader is built per epoch inside a `flat_map` (that is what makes resuming exact) and tf.data's
    FILE rewrite cannot find a file source there ("Did not find a shardable source"). With DATA every
    worker runs the same pipeline and keeps its own rows of each global batch: results are identical
    to one process, and resuming stays exact; the price is that each worker decodes every image.

    Args:
      name: TFDS builder name, optionally with config/version ("cifar10", "imagenet2012:5.1.0").
      resolution: output height and width.
      batch_size: global batch size.
      split: TFDS split, slicing allowed ("train", "validation", "train[:90%]").
      data_dir: TFDS data directory (None: TFDS's default, ~/tensorflow_datasets).
      manual_dir: directory with the original archives, to prepare the dataset offline if needed.
      image_channels: 1 or 3.
      seed, start_step, random_flip: see `sagan_tf.data.common`.

    Raises:
      FileNotFoundError: the dataset is not prepared and cannot be prepared offline.
    """
    common.check_pipeline_args(batch_size=batch_size, start_step=start_step,
                               image_channels=image_channels, resolution=resolution)
    builder = tfds.builder(name, data_dir=data_dir)
    if manual_dir is not None:
        prepare_offline(builder, manual_dir)
    num_examples = _num_examples(builder, split, data_dir)
    decoders = {IMAGE_KEY: tfds.decode.SkipDecoding()}

    def epoch_records(epoch: tf.Tensor) -> tf.data.Dataset:
        key = common.epoch_key(seed, epoch)
        epoch_seed = tf.random.stateless_uniform([], seed=key, minval=None, maxval=None,
                                                 dtype=tf.int64)
        read_config = tfds.ReadConfig(
            shuffle_seed=epoch_seed,  # a tensor: TFDS hands it to tf.data's shuffle of the file list
            shuffle_reshuffle_each_iteration=False, try_autocache=False)
        records = builder.as_dataset(split=split, decoders=decoders, shuffle_files=True,
                                     read_config=read_config)
        records = records.map(lambda record: (record[IMAGE_KEY], record[LABEL_KEY]))
        return common.block_shuffle(records, RECORD_SHUFFLE_BUFFER, key)

    def decode(record: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        image, label = record
        if image.dtype == tf.string:
            image = tf.io.decode_image(image, channels=image_channels, expand_animations=False)
        else:  # builders (or mocks) that ignore `decoders` hand over decoded pixels
            image = common.convert_channels(image, image_channels)
        return common.center_crop_and_resize(image, resolution), label

    return common.build_pipeline(
        epoch_records, decode, num_examples=num_examples, batch_size=batch_size, seed=seed,
        start_step=start_step, random_flip=random_flip,
        auto_shard_policy=tf.data.experimental.AutoShardPolicy.DATA)


def prepare_offline(builder: tfds.core.DatasetBuilder, manual_dir: str) -> None:
    """Prepares `builder` from the archives in `manual_dir`, refusing anything that would download.

    Builders with manual-download instructions (e.g. `imagenet2012`) read `manual_dir` only. For the
    others, every file TFDS would download must already be in `manual_dir` under its usual name
    (TFDS then uses it instead of downloading); this is checked beforehand. A prepared dataset is
    left untouched.
    """
    if builder.is_prepared():
        return
    if not os.path.isdir(manual_dir):
        raise FileNotFoundError(f"manual_dir {manual_dir} for TFDS dataset {builder.name!r} does "
                                "not exist")
    if not builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
        url_infos = builder.url_infos
        if not url_infos:
            raise FileNotFoundError(
                f"TFDS dataset {builder.name!r} registers no download checksums, so it cannot be "
                f"verified that preparing it from {manual_dir} would not use the network; prepare "
                f"it beforehand with `tfds build {builder.name} --data_dir=...`")
        missing = sorted(info.filename for info in url_infos.values()
                         if not os.path.exists(os.path.join(manual_dir, info.filename)))
        if missing:
            raise FileNotFoundError(
                f"cannot prepare TFDS dataset {builder.name!r} offline: {manual_dir} lacks "
                f"{', '.join(missing)} (the files TFDS would otherwise download)")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=manual_dir, try_download_gcs=False))


def _num_examples(builder: tfds.core.DatasetBuilder, split: str, data_dir: str | None) -> int:
    """Examples in `split`, from the reader's cardinality (also right for sliced splits and mocks)."""
    try:
        records = builder.as_dataset(split=split, decoders={IMAGE_KEY: tfds.decode.SkipDecoding()})
    except AssertionError as e:  # how TFDS reports "no prepared data in data_dir"
        raise FileNotFoundError(
            f"TFDS dataset {builder.name!r} is not prepared in {data_dir or builder.data_dir} and "
            "sagan-tf never downloads at run time. Prepare it beforehand (`tfds build "
            f"{builder.name} --data_dir=...` on a machine with internet access) or pass manual_dir= "
            "a directory holding the original archives (for imagenet2012: ILSVRC2012_img_train.tar "
            "and ILSVRC2012_img_val.tar).") from e
    num_examples = int(records.cardinality())
    if num_examples < 1:
        raise ValueError(f"cannot tell how many examples split {split!r} of TFDS dataset "
                         f"{builder.name!r} holds (cardinality {num_examples})")
    return num_examples
