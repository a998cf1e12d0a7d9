"""Differentiable augmentation of D's inputs (DiffAugment: Zhao et al. 2020, "Differentiable Augmentation
for Data-Efficient GAN Training"), applied to real and generated images alike.

A small dataset lets D memorise its real images; augmenting only the real ones would teach G to draw the
augmentations. DiffAugment augments every image D sees — real and fake in D's update, fake in G's — with
operations that are differentiable in the image, so G's gradient flows back through them. The policy is a
comma-separated list of operations, applied in this order:

  translation  shift each image by a whole number of pixels drawn uniformly from [-s, s], s = round(H/8),
               and likewise for columns, filling with zeros (the mid-grey of images in [-1, 1], as
               DiffAugment's own code fills);
  cutout       zero a square of side round(H/2) × round(W/2) around a uniformly drawn pixel (clipped at
               the border).

"" (the default) is no augmentation: `augment` returns its input unchanged. Each image draws its own
parameters from a stateless key (the train step's noise key for that D or G update), so a resumed run
draws what the uninterrupted one drew; under a strategy every replica draws the global batch's and takes
its own rows, so N replicas augment as one device does.
"""
from __future__ import annotations

import tensorflow as tf

from sagan_tf.config import AUGMENTATIONS, parse_policy
from sagan_tf.runtime.replicas import replica_count, replica_rows

__all__ = ["augment", "translate", "cut_out", "translation_limits", "cutout_size"]

TRANSLATION_RATIO = 1 / 8
CUTOUT_RATIO = 1 / 2


def _fraction(size: int, ratio: float) -> int:
    return max(int(size * ratio + 0.5), 1)


def translation_limits(height: int, width: int) -> tuple[int, int]:
    """The largest shift of a translation, in rows and in columns."""
    return _fraction(height, TRANSLATION_RATIO), _fraction(width, TRANSLATION_RATIO)


def cutout_size(height: int, width: int) -> tuple[int, int]:
    """The side of a cutout's square, in rows and in columns."""
    return _fraction(height, CUTOUT_RATIO), _fraction(width, CUTOUT_RATIO)


def translate(images: tf.Tensor, shifts: tf.Tensor) -> tf.Tensor:
    """images [B, H, W, C] shifted by `shifts` [B, 2] (rows, columns; int, within `translation_limits`),
    zero-filled: out[b, i, j] = images[b, i − shifts[b, 0], j − shifts[b, 1]] where that is inside."""
    height, width = images.shape[1], images.shape[2]
    pad_h, pad_w = translation_limits(height, width)
    padded = tf.pad(images, [[0, 0], [pad_h, pad_h], [pad_w, pad_w], [0, 0]])
    rows = tf.range(height)[None, :] - shifts[:, :1] + pad_h  # [B, H] indices into the padded rows
    columns = tf.range(width)[None, :] - shifts[:, 1:] + pad_w
    shifted = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(shifted, columns, axis=2, batch_dims=1)


def cut_out(images: tf.Tensor, centres: tf.Tensor) -> tf.Tensor:
    """images with a `cutout_size` square (h × w) zeroed around `centres` [B, 2] (row, column), clipped
    at the border: rows [c − ⌊h/2⌋, c − ⌊h/2⌋ + h) and likewise for columns."""
    height, width = images.shape[1], images.shape[2]
    size_h, size_w = cutout_size(height, width)
    start = centres - tf.constant([size_h // 2, size_w // 2], dtype=centres.dtype)
    rows, columns = tf.range(height)[None, :], tf.range(width)[None, :]
    inside_rows = (rows >= start[:, :1]) & (rows < start[:, :1] + size_h)  # [B, H]
    inside_columns = (columns >= start[:, 1:]) & (columns < start[:, 1:] + size_w)  # [B, W]
    hole = inside_rows[:, :, None] & inside_columns[:, None, :]
    return images * tf.cast(~hole, images.dtype)[..., None]


def _uniform_integers(key: tf.Tensor, global_batch: tf.Tensor, upper: tuple[int, int]) -> tf.Tensor:
    """This replica's rows of a [global_batch, 2] draw of integers uniform in [0, upper[k]) per column
    (modulo of 31-bit draws: a bias below 1e-8 at these sizes)."""
    draws = tf.random.stateless_uniform([global_batch, 2], seed=key, maxval=2 ** 31 - 1, dtype=tf.int64)
    (rows,) = replica_rows(tf.cast(draws % tf.constant(upper, tf.int64), tf.int32))
    return rows


def augment(images: tf.Tensor, policy: tuple[str, ...], key: tf.Tensor) -> tf.Tensor:
    """`images` (this replica's rows of a global batch) augmented by the operations of `policy` (from
    `parse_policy`), each image with its own parameters drawn from the stateless `key`; `images` itself
    when `policy` is empty."""
    if not policy:
        return images
    global_batch = tf.shape(images)[0] * replica_count()
    height, width = images.shape[1], images.shape[2]
    for index, name in enumerate(policy):
        op_key = tf.random.experimental.stateless_fold_in(key, index)
        if name == "translation":
            limit_h, limit_w = translation_limits(height, width)
            shifts = _uniform_integers(op_key, global_batch, (2 * limit_h + 1, 2 * limit_w + 1))
            images = translate(images, shifts - tf.constant([limit_h, limit_w]))
        else:  # cutout
            images = cut_out(images, _uniform_integers(op_key, global_batch, (height, width)))
    return images
