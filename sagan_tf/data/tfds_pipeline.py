"""Any TFDS image-classification dataset (`imagenet2012`, `cifar10`, `fashion_mnist`, ...).

Nothing is ever downloaded: the dataset must already be prepared in `data_dir`, or be preparable offline
from `manual_dir` (the ILSVRC2012 tars for `imagenet2012`; for other datasets the archives that TFDS
would otherwise download, under their usual file names). See `prepare_tfds`.

The prepared record files are read directly, from the file list TFDS itself gives for the split
(`info.splits[split].file_instructions`, which also resolves slices such as "train[:90%]"), and parsed
with the dataset's own feature spec. Reading them through TFDS's `as_dataset` instead would hide the two
things training needs from a reader:

* **Resuming at any step reads O(files), not O(records before the step).** The order of epoch `e` is a
  permutation of the files keyed by `(seed, e)`, the files' records in their stored order, then a
  shuffle within consecutive blocks of `RECORD_SHUFFLE_BUFFER` records (TFDS already shuffled the
  records across files when it prepared them). To start at record `i` of an epoch, the reader opens the
  file holding the first record of `i`'s block, skips inside that one file, and discards at most one
  block of undecoded records; every file before it is never opened.
* **Per-host input.** With an `input_context` (multi-worker training), pipeline `w` of `W` reads only
  the files `w, w + W, ...` of the split and decodes only their records, so W hosts decode each image
  once between them instead of W times. A split with fewer files than pipelines falls back to keeping
  every W-th record of the shared order (each host still decodes only its share, but reads all files).
  Each pipeline's stream is deterministic, so resuming stays exact per host.

Records are parsed and decoded only after the shuffle and the resume skip: those move bytes, not pixels.

`data_dir` and `manual_dir` may be local paths or URIs. This module checks them through `tf.io.gfile`;
TFDS (through etils.epath) takes local paths and cloud URIs such as ``gs://`` but not ``file://``, so
`tfds_path` hands it a ``file://`` path as the local path it names and passes every other form through
untouched. The record files are read by `tf.data.TFRecordDataset`, which knows every TF filesystem.
"""
from __future__ import annotations

import os
import tarfile
import time
from dataclasses import dataclass

import tensorflow as tf
import tensorflow_datasets as tfds

from sagan_tf.data import common
from sagan_tf.run import files

__all__ = [
    "tfds_path",
    "tfds_builder",
    "Shard",
    "tfds_dataset",
    "shard_for",
    "record_stream",
    "prepare_tfds",
    "check_manual_dir",
    "check_tar",
    "pipeline_share",
    "RECORD_SHUFFLE_BUFFER",
]

IMAGE_KEY = "image"
LABEL_KEY = "label"

#: Undecoded records held by the per-epoch block shuffle (ImageNet JPEGs average ~110 kB, so about
#: 1 GB of host memory). It complements the per-epoch shuffle of the file order; it is also the most a
#: resume ever reads and discards.
RECORD_SHUFFLE_BUFFER = 10_000

#: Read-ahead per record file: records are read one file after the other.
FILE_READ_BUFFER_BYTES = 8 << 20

#: Archives that builders with manual-download instructions read from `manual_dir`, by builder name.
MANUAL_ARCHIVES = {
    "imagenet2012": ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"),
}

#: How long a non-chief worker waits for the chief to prepare the dataset, by default (seconds).
#: Preparing ImageNet from its archives takes hours.
DEFAULT_PREPARE_TIMEOUT = 24 * 3600


_FILE_SCHEME = "file://"


def tfds_path(path: str | None) -> str | None:
    """`path` as TFDS takes it: a ``file://`` URI becomes its local path (etils.epath, which TFDS opens
    paths with, has no ``file://`` scheme); local paths and other URIs (``gs://``, ...) are unchanged."""
    if path is None:
        return None
    path = os.fspath(path)
    return path[len(_FILE_SCHEME):] if path.startswith(_FILE_SCHEME) else path


def tfds_builder(name: str, data_dir: str | None = None) -> tfds.core.DatasetBuilder:
    """`tfds.builder(name, data_dir=...)` for any `data_dir` this project accepts (see `tfds_path`)."""
    return tfds.builder(name, data_dir=tfds_path(data_dir))


@dataclass(frozen=True)
class Shard:
    """What one input pipeline reads: some record files (with TFDS's skip/take) and, when the split has
    fewer files than pipelines, every `stride`-th record of their shared order starting at `phase`."""
    files: tuple[str, ...]
    skips: tuple[int, ...]
    takes: tuple[int, ...]
    stride: int = 1
    phase: int = 0

    @property
    def num_examples(self) -> int:
        """Records this pipeline yields per epoch."""
        total = sum(self.takes)
        return max(0, (total - self.phase + self.stride - 1) // self.stride)


def tfds_dataset(name: str, resolution: int, batch_size: int, split: str = "train",
                 data_dir: str | None = None, manual_dir: str | None = None,
                 image_channels: int = 3, seed: int = 0, start_step: int = 0,
                 random_flip: bool = False,
                 input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
    """Infinite, shuffled, batched images of a TFDS dataset with "image" and "label" features.

    Yields `(images float32 [b, resolution, resolution, image_channels] in [-1, 1], labels int32 [b])`
    where `b` is the GLOBAL `batch_size`, or with an `input_context` the per-replica batch of that
    pipeline (`input_context.get_per_replica_batch_size(batch_size)`, for
    `strategy.distribute_datasets_from_function`). Images are centre-cropped to a square and resized
    (area when shrinking, bilinear when enlarging); gray and RGB are converted to `image_channels`.

    `start_step=k` yields exactly the batches k, k+1, ... of a run started at step 0 (see the module
    docstring for what that costs).

    Args:
      name: TFDS builder name, optionally with config/version ("cifar10", "imagenet2012:5.1.0").
      resolution: output height and width.
      batch_size: global batch size.
      split: TFDS split, slicing allowed ("train", "validation", "train[:90%]").
      data_dir: TFDS data directory (None: TFDS's default, ~/tensorflow_datasets); created if needed.
      manual_dir: directory with the original archives, to prepare the dataset offline if needed.
      image_channels: 1 or 3.
      seed, start_step, random_flip: see `sagan_tf.data.common`.
      input_context: which of several input pipelines this is (multi-worker training).

    Raises:
      FileNotFoundError: the dataset is not prepared and cannot be prepared offline.
      ValueError: the dataset has no image feature, or the split no records for this pipeline.
    """
    common.check_pipeline_args(batch_size=batch_size, start_step=start_step,
                               image_channels=image_channels, resolution=resolution)
    builder = prepare_tfds(name, data_dir=data_dir, manual_dir=manual_dir)
    features = builder.info.features
    _check_features(builder)
    shard = shard_for(builder, split, input_context)
    num_pipelines = input_context.num_input_pipelines if input_context else 1
    pipeline_batch = batch_size // num_pipelines  # rows of each global batch this pipeline supplies
    stream = record_stream(shard, seed=seed, start_step=start_step, batch_size=pipeline_batch)

    decoders = {IMAGE_KEY: tfds.decode.SkipDecoding()}

    def decode(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        example = features.deserialize_example(serialized, decoders=decoders)
        image = tf.io.decode_image(example[IMAGE_KEY], channels=image_channels, expand_animations=False)
        return common.center_crop_and_resize(image, resolution), example[LABEL_KEY]

    policy = tf.data.experimental.AutoShardPolicy
    if input_context is None:  # one pipeline for all workers: each keeps its rows of every global batch
        out_batch, shard_policy = batch_size, policy.DATA
    else:  # this worker's own pipeline, already sharded, batched per replica
        out_batch, shard_policy = input_context.get_per_replica_batch_size(batch_size), policy.OFF
    return common.decode_and_batch(stream, decode, batch_size=out_batch, seed=seed, random_flip=random_flip,
                                   auto_shard_policy=shard_policy)


# --------------------------------------------------------------------------------------------------
# Which records a pipeline reads, and in what order.
# --------------------------------------------------------------------------------------------------
def shard_for(builder: tfds.core.DatasetBuilder, split: str,
              input_context: tf.distribute.InputContext | None = None) -> Shard:
    """The record files of `split` that this input pipeline reads (all of them without a context)."""
    try:
        instructions = builder.info.splits[split].file_instructions
    except (KeyError, ValueError) as error:
        raise ValueError(f"TFDS dataset {builder.name!r} has no split {split!r}; it has "
                         f"{sorted(builder.info.splits)}") from error
    instructions = [i for i in instructions if i.take != 0]
    if not instructions:
        raise ValueError(f"split {split!r} of TFDS dataset {builder.name!r} holds no examples")
    count = input_context.num_input_pipelines if input_context else 1
    index = input_context.input_pipeline_id if input_context else 0
    stride, phase = 1, 0
    if count > 1 and len(instructions) >= count:
        instructions = instructions[index::count]
    elif count > 1:  # fewer files than hosts: share the records instead
        stride, phase = count, index
    shard = Shard(files=tuple(os.fspath(i.filename) for i in instructions),
                  skips=tuple(int(i.skip) for i in instructions),
                  takes=tuple(int(i.take) for i in instructions), stride=stride, phase=phase)
    if shard.num_examples < 1:
        raise ValueError(f"split {split!r} of TFDS dataset {builder.name!r} has no records for input pipeline "
                         f"{index} of {count}")
    return shard


def record_stream(shard: Shard, *, seed: int, start_step: int, batch_size: int) -> tf.data.Dataset:
    """Infinite `(position, serialized record)` of `shard`, from the first record of batch `start_step`.

    `position` counts this pipeline's records since epoch 0 (`epoch * shard.num_examples + index`); it
    keys the per-example random flip. `batch_size` is how many rows per step this pipeline supplies.
    """
    num_examples = shard.num_examples
    first_epoch, offset = common.resume_point(start_step, batch_size, num_examples)
    files = tf.constant(shard.files, tf.string)
    skips = tf.constant(shard.skips, tf.int64)
    takes = tf.constant(shard.takes, tf.int64)

    def epoch_records(epoch, first_index) -> tf.data.Dataset:
        """Records of `epoch` from index `first_index` of the shared order (before the stride)."""
        epoch = tf.cast(epoch, tf.int64)
        key = common.epoch_key(seed, epoch)
        order = tf.random.experimental.stateless_shuffle(tf.range(len(shard.files), dtype=tf.int64), seed=key)
        epoch_takes = tf.gather(takes, order)
        block = tf.cast(first_index, tf.int64) // RECORD_SHUFFLE_BUFFER
        block_start = block * RECORD_SHUFFLE_BUFFER
        # The file that holds record `block_start`, and where in it that record is.
        ends = tf.cumsum(epoch_takes)
        first_file = tf.searchsorted(ends, [block_start], side="right")[0]
        within = block_start - (ends[first_file] - epoch_takes[first_file])
        order, epoch_takes = order[first_file:], epoch_takes[first_file:]
        extra_skip = tf.one_hot(0, tf.size(order), on_value=within, off_value=tf.constant(0, tf.int64),
                                dtype=tf.int64)
        per_file = tf.data.Dataset.from_tensor_slices(
            (tf.gather(files, order), tf.gather(skips, order) + extra_skip, epoch_takes - extra_skip))
        records = per_file.flat_map(
            lambda path, skip, take: tf.data.TFRecordDataset(
                path, buffer_size=FILE_READ_BUFFER_BYTES).skip(skip).take(take))
        records = common.block_shuffle(records, RECORD_SHUFFLE_BUFFER, key, first_block=block)
        indexed = records.enumerate(start=block_start).skip(tf.cast(first_index, tf.int64) - block_start)
        if shard.stride > 1:
            indexed = indexed.filter(lambda index, record: index % shard.stride == shard.phase)
        # Local index: the record's rank among this pipeline's records of the epoch.
        return indexed.map(lambda index, record: (epoch * num_examples + index // shard.stride, record))

    first_index = offset * shard.stride + shard.phase
    first = epoch_records(first_epoch, first_index)
    rest = tf.data.Dataset.counter(first_epoch + 1).flat_map(lambda epoch: epoch_records(epoch, 0))
    return first.concatenate(rest)


def _check_features(builder: tfds.core.DatasetBuilder) -> None:
    features = builder.info.features
    missing = [key for key in (IMAGE_KEY, LABEL_KEY) if key not in features]
    if missing:
        raise ValueError(f"TFDS dataset {builder.name!r} has no {', '.join(map(repr, missing))} feature "
                         f"(it has {sorted(features)}); sagan-tf trains on image classification datasets")
    if not isinstance(features[IMAGE_KEY], tfds.features.Image):
        raise ValueError(f"feature 'image' of TFDS dataset {builder.name!r} is a "
                         f"{type(features[IMAGE_KEY]).__name__}, not an encoded tfds.features.Image")
    if builder.info.file_format != tfds.core.FileFormat.TFRECORD:
        raise ValueError(f"TFDS dataset {builder.name!r} in {builder.data_dir} is stored as "
                         f"{builder.info.file_format.value}; sagan-tf reads tfrecord (prepare it with "
                         "`tfds build --file_format=tfrecord`)")


# --------------------------------------------------------------------------------------------------
# Preparing the dataset: offline, once, by one process.
# --------------------------------------------------------------------------------------------------
def prepare_tfds(name: str, *, data_dir: str | None = None, manual_dir: str | None = None,
                    wait: bool = False, timeout: float = DEFAULT_PREPARE_TIMEOUT,
                    poll_seconds: float = 5.0) -> tfds.core.DatasetBuilder:
    """The builder of `name`, prepared in `data_dir`; prepares it from `manual_dir` if needed.

    With `wait=True` (non-chief workers) it never prepares: it waits until another process (the chief)
    has, polling every `poll_seconds`, and raises TimeoutError after `timeout` seconds. TFDS writes a
    dataset into a temporary directory and renames it when complete, so a half-prepared dataset is never
    taken for a prepared one.

    Raises:
      FileNotFoundError: not prepared, and `manual_dir` is missing or lacks an archive (named).
      ValueError: an archive in `manual_dir` is truncated or not a tar (named).
      TimeoutError: `wait=True` and the dataset was not prepared in time.
    """
    dataset = tfds_builder(name, data_dir)
    if dataset.is_prepared():
        return dataset
    if wait:
        deadline = time.monotonic() + timeout
        while not dataset.is_prepared():
            if time.monotonic() > deadline:
                raise TimeoutError(f"TFDS dataset {name!r} was not prepared in {dataset.data_dir} within "
                                   f"{timeout:g} s; the chief prepares it (from config.manual_dir) - check its "
                                   "log, or prepare it beforehand with the trainer on one host")
            time.sleep(poll_seconds)
            dataset = tfds_builder(name, data_dir)
        return dataset
    if manual_dir is None:
        raise FileNotFoundError(
            f"TFDS dataset {dataset.name!r} is not prepared in {dataset.data_dir} and sagan-tf never "
            "downloads at run time. Prepare it beforehand (`tfds build "
            f"{dataset.name} --data_dir=...` on a machine with internet access) or pass manual_dir= "
            "a directory holding the original archives (for imagenet2012: ILSVRC2012_img_train.tar "
            "and ILSVRC2012_img_val.tar).")
    check_manual_dir(dataset, manual_dir)
    if data_dir is not None:
        files.makedirs(data_dir)
    print(f"Preparing TFDS dataset {dataset.name!r} in {dataset.data_dir} from {manual_dir} (once) ...", flush=True)
    try:
        dataset.download_and_prepare(download_config=tfds.download.DownloadConfig(
            manual_dir=tfds_path(manual_dir), try_download_gcs=False))
    except (tarfile.TarError, EOFError, OSError, tf.errors.OpError) as error:
        raise ValueError(f"preparing TFDS dataset {dataset.name!r} from {manual_dir} failed: {error}. "
                         f"Nothing was written to {dataset.data_dir} (TFDS keeps unfinished work in an "
                         "'incomplete.*' directory, removed on the next attempt)") from error
    return tfds_builder(name, data_dir)


def check_manual_dir(builder: tfds.core.DatasetBuilder, manual_dir: str) -> None:
    """Fails, naming the file, if `manual_dir` cannot give a complete dataset without the network."""
    if not files.isdir(manual_dir):
        raise FileNotFoundError(f"manual_dir {manual_dir} for TFDS dataset {builder.name!r} does not exist")
    if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
        for archive in MANUAL_ARCHIVES.get(builder.name, ()):
            path = files.join(manual_dir, archive)
            if not files.exists(path):
                raise FileNotFoundError(f"cannot prepare TFDS dataset {builder.name!r}: {manual_dir} lacks "
                                        f"{archive}")
            check_tar(path)
        return
    url_infos = builder.url_infos
    if not url_infos:
        raise FileNotFoundError(
            f"TFDS dataset {builder.name!r} registers no download checksums, so it cannot be "
            f"verified that preparing it from {manual_dir} would not use the network; prepare "
            f"it beforehand with `tfds build {builder.name} --data_dir=...`")
    missing = sorted(info.filename for info in url_infos.values()
                     if not files.exists(files.join(manual_dir, info.filename)))
    if missing:
        raise FileNotFoundError(
            f"cannot prepare TFDS dataset {builder.name!r} offline: {manual_dir} lacks "
            f"{', '.join(missing)} (the files TFDS would otherwise download)")


def check_tar(path: str) -> None:
    """Reads the member headers of the tar at `path` (seeking past the data: seconds even for ImageNet's
    140 GB) and fails, naming the file and member, if it is not a tar or was cut short. Read through
    `tf.io.gfile`, so the archive may sit in a bucket."""
    size = tf.io.gfile.stat(path).length
    try:
        with tf.io.gfile.GFile(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r:") as archive:
            members = 0
            for member in archive:
                members += 1
                if member.offset_data + member.size > size:
                    raise ValueError(f"{path} is truncated: member {member.name!r} needs "
                                     f"{member.offset_data + member.size} bytes, the file has {size}")
    except tarfile.TarError as error:
        raise ValueError(f"{path} is not a readable tar archive ({error})") from error
    if members == 0:
        raise ValueError(f"{path} is an empty tar archive")


def pipeline_share(builder: tfds.core.DatasetBuilder, split: str,
                   input_context: tf.distribute.InputContext | None) -> str:
    """One line saying what this input pipeline reads, for the training log."""
    shard = shard_for(builder, split, input_context)
    count = input_context.num_input_pipelines if input_context else 1
    index = input_context.input_pipeline_id if input_context else 0
    how = (f"{len(shard.files)} of {len(builder.info.splits[split].file_instructions)} record files"
           if shard.stride == 1 else f"one record in {shard.stride} of {len(shard.files)} record file(s)")
    return (f"input pipeline {index + 1}/{count}: {builder.name} {split}, {how}, "
            f"{shard.num_examples} records per epoch")
