"""Pieces shared by every input pipeline: epoch order, resuming, image conversions, batching.

Every pipeline in `sagan_tf.data` is the same skeleton with a different source of *records* (an example
index, a file path, an undecoded TFDS record) and a different `decode` function:

    records, in a per-epoch order that depends only on (seed, epoch)
      -> numbered with their global position (epoch * num_examples + index in epoch)
      -> skip `offset` records when resuming (cheap: nothing is decoded yet)
      -> decode, crop/resize, scale to [-1, 1], optional flip seeded by (seed, position)
      -> batch by the GLOBAL batch size, prefetch

Because the order of epoch `e` is a pure function of `(seed, e)` and every per-example random choice is a
pure function of `(seed, position)`, the batch at step `k` is the same whether the run started at step 0
or was resumed at step `k`: resuming only has to find the epoch and the offset inside it (see
`resume_point`). Epochs are concatenated before batching, so a batch may straddle two epochs and no
example is ever dropped or repeated within an epoch.
"""
from __future__ import annotations

from typing import Callable

import tensorflow as tf

__all__ = [
    "check_pipeline_args",
    "resume_point",
    "epoch_key",
    "example_key",
    "block_shuffle",
    "shuffled_indices",
    "epoch_stream",
    "to_model_range",
    "LUMA_WEIGHTS",
    "rgb_to_grey",
    "convert_channels",
    "center_crop_and_resize",
    "maybe_flip",
    "build_pipeline",
    "decode_and_batch",
    "finish",
]

AUTOTUNE = tf.data.AUTOTUNE

#: Stream ids that keep the seeds of different random decisions apart, so that e.g. the shuffle of
#: epoch 3 and the flip of the example at position 3 never share a stateless-RNG key.
_SHUFFLE_STREAM = 1
_FLIP_STREAM = 2

EpochRecords = Callable[[tf.Tensor], tf.data.Dataset]
Decoder = Callable[[object], tuple]


# --------------------------------------------------------------------------------------------------
# Argument checks shared by the builders.
# --------------------------------------------------------------------------------------------------
def check_pipeline_args(*, batch_size: int, start_step: int, image_channels: int,
                        resolution: int | None = None) -> None:
    """Fail early, with the offending value, instead of deep inside a tf.data graph."""
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if int(start_step) < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}")
    if image_channels not in (1, 3):
        raise ValueError(f"image_channels must be 1 (grayscale) or 3 (RGB), got {image_channels}")
    if resolution is not None and int(resolution) < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")


# --------------------------------------------------------------------------------------------------
# Epoch order and resuming.
# --------------------------------------------------------------------------------------------------
def resume_point(start_step: int, batch_size: int, num_examples: int) -> tuple[int, int]:
    """Returns `(epoch, offset)` of the first example of batch `start_step`.

    Batch `k` holds the examples at global positions `[k * batch_size, (k + 1) * batch_size)`, and
    position `p` is example number `p % num_examples` of epoch `p // num_examples`.
    """
    if num_examples < 1:
        raise ValueError(f"the dataset has no examples (num_examples={num_examples})")
    first_position = int(start_step) * int(batch_size)
    return divmod(first_position, int(num_examples))


def epoch_key(seed: int, epoch: tf.Tensor) -> tf.Tensor:
    """Stateless-RNG key (shape [2], int64) for the shuffle of `epoch`."""
    return _key(seed, _SHUFFLE_STREAM, epoch)


def example_key(seed: int, position: tf.Tensor) -> tf.Tensor:
    """Stateless-RNG key (shape [2], int64) for the random augmentation of the example at `position`."""
    return _key(seed, _FLIP_STREAM, position)


def block_shuffle(records: tf.data.Dataset, block_size: int, key: tf.Tensor,
                  first_block=0) -> tf.data.Dataset:
    """Shuffles within consecutive blocks of `block_size` records, in an order keyed by `key`.

    `first_block` numbers the first block (a reader that resumes mid-epoch starts at a later block and
    must shuffle it exactly as an uninterrupted reader would).

    Used instead of `Dataset.shuffle(seed=<tensor>)`, which fails inside `flat_map` as soon as a
    global TF seed is set (`tf.random.set_seed`, `keras.utils.set_random_seed`): TF compares the
    tensor seed in Python. Sorting each block by stateless random keys has no such problem.
    """
    def shuffle_block(block_index, block):
        size = tf.shape(tf.nest.flatten(block)[0])[0]
        block_key = tf.random.experimental.stateless_fold_in(key, block_index)
        order = tf.argsort(tf.random.stateless_uniform([size], seed=block_key))
        return tf.data.Dataset.from_tensor_slices(tf.nest.map_structure(lambda t: tf.gather(t, order), block))

    return records.batch(block_size).enumerate(start=first_block).flat_map(shuffle_block)


def _key(seed: int, stream: int, counter: tf.Tensor) -> tf.Tensor:
    base = tf.constant([int(seed), stream], dtype=tf.int64)
    return tf.random.experimental.stateless_fold_in(base, tf.cast(counter, tf.int64))


def shuffled_indices(num_examples: int, seed: int) -> EpochRecords:
    """Epoch function for pipelines with random access: a permutation of `range(num_examples)`.

    The permutation of epoch `e` is a stateless shuffle keyed by `(seed, e)`; only int64 indices are
    shuffled, the examples themselves are looked up (and decoded) afterwards.
    """
    def epoch_records(epoch: tf.Tensor) -> tf.data.Dataset:
        order = tf.random.experimental.stateless_shuffle(
            tf.range(num_examples, dtype=tf.int64), seed=epoch_key(seed, epoch))
        return tf.data.Dataset.from_tensor_slices(order)
    return epoch_records


def epoch_stream(epoch_records: EpochRecords, *, num_examples: int, batch_size: int,
                 start_step: int) -> tf.data.Dataset:
    """Infinite dataset of `(position, record)` starting at the first record of batch `start_step`.

    Args:
      epoch_records: maps an epoch number (int64 scalar tensor) to a dataset of exactly `num_examples`
        undecoded records whose order depends only on that epoch number (and a seed it closes over).
        It is traced once, inside `flat_map`, so it must be built from TF ops.
      num_examples: records per epoch.
      batch_size: global batch size, to turn `start_step` into a position.
      start_step: first batch to produce; `0` for a fresh run.

    Only the `offset` records that precede the resume point within its epoch are skipped, before any
    decoding; earlier epochs are not replayed at all.
    """
    first_epoch, offset = resume_point(start_step, batch_size, num_examples)
    # Plain TF code: AutoGraph has nothing to convert, and would trip over TFDS's wrapped methods.
    epoch_records = tf.autograph.experimental.do_not_convert(epoch_records)

    def numbered(epoch: tf.Tensor) -> tf.data.Dataset:
        # Numbering happens inside the epoch so that the stream has a single source (the epoch
        # counter); tf.data's FILE auto-sharding cannot cope with a second, zipped, counter.
        records = epoch_records(epoch).enumerate()
        return records.map(lambda index, record: (epoch * num_examples + index, record))

    return tf.data.Dataset.counter(first_epoch).flat_map(numbered).skip(offset)


# --------------------------------------------------------------------------------------------------
# Image conversions.
# --------------------------------------------------------------------------------------------------
def to_model_range(images) -> tf.Tensor:
    """Maps uint8 images (or floats in [0, 255]) to float32 in [-1, 1]: 0 -> -1, 255 -> 1."""
    return tf.cast(images, tf.float32) / 127.5 - 1.0


#: ITU-R BT.601 luma weights, the grey of every input path: Pillow's "L" mode (image folders) and the
#: JPEG and PNG decoders' one-channel output (TFDS) compute it. They sum to exactly 1, so the grey of a
#: grey image replicated to RGB is that image, and converting in [0, 255] or in the model's [-1, 1] agrees.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def rgb_to_grey(images) -> tf.Tensor:
    """[..., 3] RGB images -> [..., 1] luma (:data:`LUMA_WEIGHTS`), in the input's dtype and value range:
    integer images are rounded to the nearest level, float images (in [0, 255] or [-1, 1]) are not.
    The one RGB -> grey of the project: the data pipelines and the feature networks use this function."""
    images = tf.convert_to_tensor(images)
    grey = tf.reduce_sum(tf.cast(images, tf.float32) * tf.constant(LUMA_WEIGHTS, tf.float32), axis=-1, keepdims=True)
    if images.dtype.is_integer:
        grey = tf.clip_by_value(tf.round(grey), images.dtype.min, images.dtype.max)
    return tf.cast(grey, images.dtype)


def convert_channels(image: tf.Tensor, channels: int) -> tf.Tensor:
    """Converts an [H, W, C] image with a static channel count to `channels` (1 or 3).

    Alpha is dropped, grayscale is replicated to RGB, RGB becomes luma (:func:`rgb_to_grey`).
    """
    have = image.shape[-1]
    if have is None:
        raise ValueError("convert_channels needs a static channel count, got shape "
                         f"{image.shape}")
    if have in (2, 4):  # gray+alpha, RGB+alpha
        image, have = image[..., :have - 1], have - 1
    if have == channels:
        return image
    if have == 1 and channels == 3:
        return tf.image.grayscale_to_rgb(image)
    if have == 3 and channels == 1:
        return rgb_to_grey(image)
    raise ValueError(f"cannot convert a {have}-channel image to {channels} channels")


def center_crop_and_resize(image: tf.Tensor, resolution: int) -> tf.Tensor:
    """Crops the largest centred square out of an [H, W, C] image and resizes it to `resolution`.

    Downscaling uses area averaging (no aliasing), upscaling bilinear interpolation, and a square of
    exactly `resolution` is passed through unchanged. Returns float32 with the input's value range
    (no rounding back to integers), shape [resolution, resolution, C].
    """
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    side = tf.minimum(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = tf.cast(image[top:top + side, left:left + side], tf.float32)
    size = [resolution, resolution]
    resized = tf.cond(
        side >= resolution,
        lambda: tf.image.resize(square, size, method=tf.image.ResizeMethod.AREA),
        lambda: tf.image.resize(square, size, method=tf.image.ResizeMethod.BILINEAR))
    return tf.ensure_shape(resized, [resolution, resolution, image.shape[-1]])


def maybe_flip(image: tf.Tensor, *, seed: int, position: tf.Tensor, random_flip: bool) -> tf.Tensor:
    """Horizontal flip with probability 1/2, decided by `(seed, position)` so that it is reproducible."""
    if not random_flip:
        return image
    return tf.image.stateless_random_flip_left_right(image, seed=example_key(seed, position))


# --------------------------------------------------------------------------------------------------
# The pipeline skeleton.
# --------------------------------------------------------------------------------------------------
def build_pipeline(epoch_records: EpochRecords, decode: Decoder, *, num_examples: int,
                   batch_size: int, seed: int, start_step: int, random_flip: bool,
                   auto_shard_policy: tf.data.experimental.AutoShardPolicy) -> tf.data.Dataset:
    """Assembles the full pipeline from a record source and a decoder.

    Args:
      epoch_records: see `epoch_stream`.
      decode: maps one record to `(image, label)` where `image` is [H, W, C] with values in [0, 255]
        (uint8 or float) and already has the final size and channel count.
      num_examples, batch_size, start_step: see `epoch_stream`; `batch_size` is the GLOBAL batch.
      seed: seed of the per-example random flip (the epoch order has its own seed in `epoch_records`).
      random_flip: whether to flip images horizontally at random.
      auto_shard_policy: how tf.distribute splits this dataset between workers (see `finish`).

    Returns:
      An infinite, prefetched dataset of `(images float32 [B, H, W, C] in [-1, 1], labels int32 [B])`.
    """
    stream = epoch_stream(epoch_records, num_examples=num_examples, batch_size=batch_size,
                          start_step=start_step)
    return decode_and_batch(stream, decode, batch_size=batch_size, seed=seed, random_flip=random_flip,
                            auto_shard_policy=auto_shard_policy)


def decode_and_batch(stream: tf.data.Dataset, decode: Decoder, *, batch_size: int, seed: int,
                     random_flip: bool,
                     auto_shard_policy: tf.data.experimental.AutoShardPolicy) -> tf.data.Dataset:
    """The second half of `build_pipeline`, for readers that position their own `(position, record)`
    stream: decode, scale, flip, batch by `batch_size`."""
    @tf.autograph.experimental.do_not_convert  # no tensor-dependent Python control flow
    def example(position: tf.Tensor, record) -> tuple[tf.Tensor, tf.Tensor]:
        image, label = decode(record)
        image = maybe_flip(to_model_range(image), seed=seed, position=position,
                           random_flip=random_flip)
        return image, tf.cast(label, tf.int32)

    examples = stream.map(example, num_parallel_calls=AUTOTUNE, deterministic=True)
    return finish(examples, batch_size, auto_shard_policy)


def finish(examples: tf.data.Dataset, batch_size: int,
           auto_shard_policy: tf.data.experimental.AutoShardPolicy) -> tf.data.Dataset:
    """Batches an (already infinite) example stream and sets the distribution options.

    * `batch(drop_remainder=True)` by the GLOBAL batch size: tf.distribute / Keras `fit` split each
      batch across replicas, which needs a static batch dimension.
    * No `repeat()`: the epoch stream never ends; its cardinality is asserted to be infinite so that
      Keras treats it as such.
    * `auto_shard_policy` is set explicitly because multi-worker training relies on it: DATA for a
      pipeline that every worker runs whole (each keeps its rows of every global batch), OFF for a
      per-worker TFDS pipeline built from an `input_context` (see `tfds_pipeline`).
    * `deterministic=True`: parallel map keeps the order, so batches depend only on the seed.
    """
    batches = examples.batch(batch_size, drop_remainder=True)
    batches = batches.apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY))
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = auto_shard_policy
    return batches.with_options(options).prefetch(AUTOTUNE)
