"""Attention-map figures in the style of the SAGAN paper's figure 1.

For a query position in a generated image, the self-attention layer's weights over the key
positions say which parts of the image the generator looked at to produce that position. Here
those weights are reshaped to the key grid, upsampled to the image size (nearest neighbour by
default, so each key cell covers exactly its block of pixels), normalised to [0, 1], coloured with
a "hot" colour map and blended over the (grey-scale or colour) image; the query is marked with a
green cross.

Attention maps come from ``G((z, labels), return_attention=True)``: one float32 [B, N, M] array
per attention layer, where N = h*w query positions of the layer's feature map (row-major) and
M = (h/2)*(w/2) 2x2-max-pooled key positions (or M = N without pooling).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import tensorflow as tf

from sagan_tf.sampling.images import image_grid, to_uint8
from sagan_tf.sampling.noise import sample_noise
from sagan_tf.sampling.sheets import default_rows
from sagan_tf.sampling.standing_statistics import truncation_statistics

__all__ = [
    "grid_shape",
    "default_query_points",
    "query_index",
    "attention_heatmaps",
    "hot_colormap",
    "overlay_heatmap",
    "draw_marker",
    "attention_overlays",
    "attention_figure",
    "parse_query_points",
    "attention_sheet",
]

MARKER_COLOR = np.array([0, 255, 0], np.uint8)


def grid_shape(num_positions: int, aspect: float = 1.0) -> tuple[int, int]:
    """(rows, cols) of a row-major grid with `num_positions` cells and cols/rows = `aspect` (square by default)."""
    rows = int(round(math.sqrt(num_positions / aspect)))
    cols = int(round(rows * aspect))
    if rows < 1 or rows * cols != num_positions:
        raise ValueError(f"{num_positions} positions do not form a grid with aspect ratio {aspect}")
    return rows, cols


def default_query_points(height: int, width: int) -> list[tuple[int, int]]:
    """Four (y, x) pixel positions spread over the image (the quarter points of its diagonals)."""
    ys = (height // 4, (3 * height) // 4)
    xs = (width // 4, (3 * width) // 4)
    return [(ys[0], xs[0]), (ys[0], xs[1]), (ys[1], xs[0]), (ys[1], xs[1])]


def query_index(point: tuple[int, int], image_shape: tuple[int, int], query_grid: tuple[int, int]) -> int:
    """Row-major index of the feature-map position that contains image pixel `point` = (y, x)."""
    (y, x), (height, width), (rows, cols) = point, image_shape, query_grid
    if not (0 <= y < height and 0 <= x < width):
        raise ValueError(f"query point {(y, x)} is outside the {height}x{width} image")
    return (y * rows // height) * cols + (x * cols // width)


def _resize(maps: np.ndarray, height: int, width: int, smooth: bool) -> np.ndarray:
    """[Q, kh, kw] -> [Q, height, width]: nearest-neighbour blocks, or bilinear when `smooth`."""
    kh, kw = maps.shape[1:]
    if not smooth:
        rows = np.arange(height) * kh // height
        cols = np.arange(width) * kw // width
        return maps[:, rows][:, :, cols]
    return tf.image.resize(maps[..., None], [height, width], method="bilinear").numpy()[..., 0]


def attention_heatmaps(attention, query_points: Sequence[tuple[int, int]], image_shape: tuple[int, int],
                       smooth: bool = False) -> np.ndarray:
    """Attention of each query point over the image, float32 [Q, H, W], each map scaled to max 1.

    Args:
      attention: one image's attention map [N, M] (N query, M key positions, both row-major
        square grids of the same aspect as the image).
      query_points: (y, x) pixel positions in the image.
      image_shape: (H, W) of the image.
      smooth: bilinear instead of nearest-neighbour upsampling of the key grid.
    """
    attention = np.asarray(attention, np.float32)
    if attention.ndim != 2:
        raise ValueError(f"attention must be one image's [N, M] map, got shape {attention.shape}")
    height, width = image_shape
    aspect = width / height
    query_grid = grid_shape(attention.shape[0], aspect)
    key_grid = grid_shape(attention.shape[1], aspect)
    rows = np.stack([attention[query_index(p, image_shape, query_grid)] for p in query_points])
    maps = _resize(rows.reshape((-1,) + key_grid), height, width, smooth)
    peak = maps.max(axis=(1, 2), keepdims=True)
    return (maps / np.where(peak > 0, peak, 1.0)).astype(np.float32)


def hot_colormap(values) -> np.ndarray:
    """values in [0, 1] -> uint8 RGB along black -> red -> yellow -> white (brightness grows with value)."""
    v = np.clip(np.asarray(values, np.float32), 0.0, 1.0)
    rgb = np.stack([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], axis=-1)
    return np.round(rgb * 255).astype(np.uint8)


def _as_rgb_uint8(image) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = to_uint8(image)  # float in [-1, 1]
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return image


def overlay_heatmap(image, heatmap, alpha: float = 0.6) -> np.ndarray:
    """Blend a [H, W] heat map in [0, 1] (hot colour map) over an image; returns uint8 [H, W, 3].

    `image` is uint8 [H, W, C] or float in [-1, 1], with C = 1 or 3. The weight of the heat colour
    is ``alpha`` everywhere, so brightness increases monotonically with attention for a fixed image.
    """
    base = _as_rgb_uint8(image).astype(np.float32)
    heat = hot_colormap(heatmap).astype(np.float32)
    return np.round((1 - alpha) * base + alpha * heat).astype(np.uint8)


def draw_marker(image: np.ndarray, point: tuple[int, int], size: int = 2, color=MARKER_COLOR) -> np.ndarray:
    """Draw a `size`-armed cross at (y, x) on a uint8 [H, W, 3] image (in place; also returned)."""
    y, x = point
    height, width = image.shape[:2]
    image[y, max(x - size, 0):min(x + size + 1, width)] = color
    image[max(y - size, 0):min(y + size + 1, height), x] = color
    return image


def _upscale(image: np.ndarray, scale: int) -> np.ndarray:
    return np.repeat(np.repeat(image, scale, axis=0), scale, axis=1) if scale > 1 else image


def attention_overlays(images, attention, query_points: Sequence[tuple[int, int]] | None = None,
                       alpha: float = 0.6, scale: int = 1, smooth: bool = False, marker_size: int | None = None
                       ) -> np.ndarray:
    """Overlays of each query point's attention on each image: uint8 [B, Q, H*scale, W*scale, 3].

    Args:
      images: [B, H, W, C] float in [-1, 1] or uint8 (C = 1 or 3).
      attention: [B, N, M] attention maps of one layer (see module docstring).
      query_points: (y, x) positions in image pixels; default :func:`default_query_points`.
      alpha: weight of the heat colours.
      scale: integer nearest-neighbour upscaling applied before drawing (32x32 images are tiny).
      smooth: bilinear upsampling of the key grid instead of blocks.
      marker_size: arm length of the query cross in output pixels (default: scale + 1).
    """
    images = np.asarray(images)
    attention = np.asarray(attention, np.float32)
    if images.ndim != 4 or attention.ndim != 3 or images.shape[0] != attention.shape[0]:
        raise ValueError(f"expected images [B, H, W, C] and attention [B, N, M] with the same B, got "
                         f"{images.shape} and {attention.shape}")
    if int(scale) < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    height, width = images.shape[1:3]
    points = list(query_points) if query_points is not None else default_query_points(height, width)
    marker = scale + 1 if marker_size is None else marker_size
    out = []
    for image, maps in zip(images, attention):
        base = _upscale(_as_rgb_uint8(image), scale)
        heat = attention_heatmaps(maps, points, (height, width), smooth)
        per_query = []
        for (y, x), heatmap in zip(points, heat):
            overlay = overlay_heatmap(base, _upscale(heatmap, scale), alpha)
            per_query.append(draw_marker(overlay, (y * scale + scale // 2, x * scale + scale // 2), marker))
        out.append(np.stack(per_query))
    return np.stack(out)


def attention_figure(generator, z, labels, query_points: Sequence[tuple[int, int]] | None = None, layer: int = 0,
                     alpha: float = 0.6, scale: int = 4, smooth: bool = False, forward=None) -> np.ndarray:
    """Paper figure-1 style sheet: one row per sample, the generated image with every query point
    marked, then one attention overlay per query point. Returns uint8 [B*H*scale, (Q+1)*W*scale, 3].

    `generator` is a Keras Generator with at least one attention layer; `layer` picks which.
    `forward(z, labels) -> (images, maps)` may replace the direct call ``generator((z, labels),
    training=False, return_attention=True)``: a call through the training strategy, e.g.
    ``sagan_tf.runtime.replicas.distributed_call`` (what the training run's sample grids pass).
    """
    z, labels = np.asarray(z, np.float32), np.asarray(labels, np.int32)
    if forward is None:
        images, maps = generator((z, labels), training=False, return_attention=True)
    else:
        images, maps = forward(z, labels)
    if not maps:
        raise ValueError("the generator has no attention layer (config.g_attention is empty)")
    if not -len(maps) <= layer < len(maps):
        raise ValueError(f"layer={layer} but the generator has {len(maps)} attention layer(s)")
    images = np.asarray(images)
    height, width = images.shape[1:3]
    points = list(query_points) if query_points is not None else default_query_points(height, width)
    overlays = attention_overlays(images, np.asarray(maps[layer]), points, alpha, scale, smooth)
    rows = []
    for image, row in zip(images, overlays):
        marked = _upscale(_as_rgb_uint8(image), scale).copy()
        for y, x in points:
            draw_marker(marked, (y * scale + scale // 2, x * scale + scale // 2), scale + 1)
        rows.append(np.concatenate([marked[None], row]))
    return image_grid(np.concatenate(rows), len(rows))


def parse_query_points(text: str | None) -> list[tuple[int, int]] | None:
    """Query pixels from ``"y,x;y,x;..."`` (None: None, the default points); a ValueError names the text."""
    if text is None:
        return None
    try:
        points = [tuple(int(v) for v in item.split(",")) for item in text.split(";") if item.strip()]
    except ValueError:
        points = []
    if not points or any(len(point) != 2 for point in points):
        raise ValueError(f"{text!r} must look like 'y,x;y,x'")
    return points


def attention_sheet(generator, labels: Sequence[int] | None, z_dim: int, num_classes: int, truncation=None,
                    seed: int = 0, query_points: Sequence[tuple[int, int]] | None = None, layer: int = 0,
                    scale: int = 4, recompute_statistics: bool = True) -> np.ndarray:
    """:func:`attention_figure` of a Keras generator, one row per label (default: up to 4 classes spread over
    them), z drawn from `seed` (truncated at `truncation`, with batch-norm statistics recomputed for it
    unless `recompute_statistics` is False). A ValueError names a layer, or a query point, that the
    generator does not have."""
    rows = list(labels) if labels is not None else default_rows(num_classes, limit=4)
    z = sample_noise(len(rows), z_dim, truncation, seed)
    with truncation_statistics(generator, truncation if recompute_statistics else None):
        return attention_figure(generator, z, np.asarray(rows, np.int32), query_points, layer, scale=scale)
