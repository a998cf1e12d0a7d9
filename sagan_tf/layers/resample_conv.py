"""Resampling folded into 3×3 convolutions: the same functions as the plain forms, with fewer FLOPs.

Both identities are exact (up to float rounding) for 'same'-padded 3×3 convolutions on maps of even
size, and both derive a kernel from the 3×3 one, so the stored (and spectrally normalised) weight stays
the 3×3 kernel and gradients reach it through the derivation.

**Nearest ×2 upsampling, then a 3×3 convolution** (the generator's up-block). Output pixel
`(2i + a, 2j + b)` only sees low-resolution pixels `i - 1 + a .. i + a` (rows) and `j - 1 + b .. j + b`
(columns), each through a sum of the 3×3 taps that land on it. So each of the four output phases
`(a, b)` is a 2×2 convolution on the low-resolution input: one 2×2 'valid' convolution with 4·C_out
filters on the input padded by one pixel, then depth-to-space. 16 taps at the low resolution replace
9 taps at 4× the positions: 2.25× fewer multiply-adds.

**A 3×3 convolution, then 2×2 average pooling** (the discriminator's down-block). Each pooled output
is the mean of four overlapping 3×3 windows, i.e. one 4×4 window with the kernel
`K4 = (W * box2×2) / 4` (a full 2-D convolution of W with a 2×2 box), applied with stride 2 on the
input padded by one pixel: 16 taps at 1/4 of the positions instead of 9 at all: 2.25× fewer.

The zero padding matches: a low-resolution neighbour outside the map is exactly the zero padding the
plain form adds around the upsampled map, and the pooled form's one-pixel pad is the plain form's.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

__all__ = ["upsample_conv_kernel", "upsample_conv", "conv_avg_pool_kernel", "conv_avg_pool"]

# Which of the 3 taps along one axis land on each of the 2 low-resolution neighbours of phase 0 / 1.
# Phase 0 (even output row 2i) sees rows i-1 (tap 0) and i (taps 1, 2); phase 1 sees i (taps 0, 1), i+1 (tap 2).
_PHASE_TAPS = np.array([[[1, 0, 0], [0, 1, 1]],
                        [[1, 1, 0], [0, 0, 1]]], np.float32)  # [phase, neighbour, tap]
# The 2×2 box convolved with a 3-tap axis: output tap r of the 4×4 kernel sums taps r-1 and r.
_BOX_TAPS = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 1], [0, 0, 1]], np.float32) / 2.0  # [tap4, tap3]


def upsample_conv_kernel(kernel: tf.Tensor) -> tf.Tensor:
    """[3, 3, C_in, C_out] → the [2, 2, C_in, 4·C_out] kernel of all four output phases.

    Output channel `(2a + b) · C_out + o` is phase `(a, b)`'s filter `o`: the order depth-to-space
    (NHWC, "DCR") expects.
    """
    taps = tf.constant(_PHASE_TAPS, kernel.dtype)
    phases = tf.einsum("api,bqj,ijco->pqcabo", taps, taps, kernel)
    shape = tf.shape(kernel)
    return tf.reshape(phases, [2, 2, shape[2], 4 * shape[3]])


def upsample_conv(x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """`conv3x3_same(upsample_nearest_2x(x), kernel)` without the upsampled map (no bias)."""
    height, width = tf.shape(x)[1], tf.shape(x)[2]
    padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    phases = tf.nn.conv2d(padded, upsample_conv_kernel(kernel), strides=1, padding="VALID")  # [B, H+1, W+1, 4C]
    # Phase (a, b) reads neighbours starting at (i - 1 + a, j - 1 + b): row/column offset a, b in the padded map.
    # Split the phases' channels first, then crop each: the backward pass then pads four [B, H+1, W+1, C]
    # gradients and concatenates them, where cropping the 4C-channel map directly would write four
    # zero-filled [B, H+1, W+1, 4C] gradients and add them up (4× the memory traffic, and an AddN).
    per_phase = tf.split(phases, 4, axis=-1)
    parts = [per_phase[2 * a + b][:, a:a + height, b:b + width, :] for a in (0, 1) for b in (0, 1)]
    return tf.nn.depth_to_space(tf.concat(parts, axis=-1), 2)


def conv_avg_pool_kernel(kernel: tf.Tensor) -> tf.Tensor:
    """[3, 3, C_in, C_out] → the [4, 4, C_in, C_out] stride-2 kernel of conv-then-2×2-average-pool."""
    box = tf.constant(_BOX_TAPS, kernel.dtype)
    return tf.einsum("ri,sj,ijco->rsco", box, box, kernel)


def conv_avg_pool(x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """`avg_pool_2x2(conv3x3_same(x, kernel))` as one 4×4 stride-2 convolution (no bias)."""
    padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    return tf.nn.conv2d(padded, conv_avg_pool_kernel(kernel), strides=2, padding="VALID")
