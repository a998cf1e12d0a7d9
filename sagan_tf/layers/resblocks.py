"""The residual blocks of the SAGAN generator and discriminator (the layout in docs/architecture.md).

GeneratorBlock (ResBlockUp):  CBN(y) → ReLU → up×2 → SN-Conv3×3 → CBN(y) → ReLU → SN-Conv3×3
                              + shortcut: up×2 → SN-Conv1×1
DiscriminatorBlock:           [ReLU →] SN-Conv3×3 → ReLU → SN-Conv3×3 → [AvgPool2]
                              + shortcut: [AvgPool2 →] SN-Conv1×1 (when it downsamples or changes width)
The discriminator's first ("optimized") block is the same block without the leading ReLU
(`preactivation=False`). The shortcut pools *before* its 1×1 convolution in every block: average
pooling and a 1×1 convolution are both linear and commute exactly, and pooling first is 4× cheaper.

With `fused_resample=True` (the default) the blocks compute the same functions with fewer FLOPs: G's
up×2 → Conv3×3 runs as four 2×2 phase convolutions at the low resolution, its shortcut convolves before
upsampling (a 1×1 convolution commutes with nearest upsampling), and D's Conv3×3 → AvgPool2 runs as one
4×4 stride-2 convolution (sagan_tf.layers.resample_conv). The variables are the same in both forms.
"""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from sagan_tf.layers.conditional_bn import ConditionalBatchNormalization
from sagan_tf.layers import resample_conv
from sagan_tf.layers.initializers import get_initializer
from sagan_tf.layers.serialization import register
from sagan_tf.layers.spectral_norm import SpectralNormalization

__all__ = ["GeneratorBlock", "DiscriminatorBlock", "sn_conv", "upsample2x", "avg_pool2x"]


def sn_conv(filters: int, kernel_size: int, init: str, dtype: str | keras.DTypePolicy,
            name: str) -> SpectralNormalization:
    """A spectrally normalised, 'same'-padded Conv2D with bias."""
    conv = keras.layers.Conv2D(filters, kernel_size, padding="same", kernel_initializer=get_initializer(init),
                               dtype=dtype, name=name)
    return SpectralNormalization(conv, dtype=dtype, name=f"sn_{name}")


def upsample2x(x: tf.Tensor) -> tf.Tensor:
    """Nearest-neighbour ×2 upsampling of an NHWC tensor."""
    return ops.repeat(ops.repeat(x, 2, axis=1), 2, axis=2)


def avg_pool2x(x: tf.Tensor) -> tf.Tensor:
    return ops.average_pool(x, pool_size=2, strides=2, padding="valid")


def _fused(sn, x, transform, training):
    """Applies spectrally normalised `sn` (a 3×3 SN-Conv2D) through `transform(x, kernel)` + bias."""
    kernel = ops.cast(sn.kernel_for_call(training), sn.compute_dtype)
    outputs = transform(ops.cast(x, sn.compute_dtype), kernel)
    return outputs + ops.cast(sn.layer.bias, sn.compute_dtype)


@register
class GeneratorBlock(keras.layers.Layer):
    """ResBlockUp of the generator. Call as `block(x, labels, training=...)`."""

    def __init__(self, out_channels, num_classes, upsample=True, init="orthogonal", synchronized_bn=False,
                 fused_resample=True, **kwargs):
        super().__init__(**kwargs)
        self.out_channels = int(out_channels)
        self.num_classes = int(num_classes)
        self.upsample = bool(upsample)
        self.init = init
        self.synchronized_bn = bool(synchronized_bn)
        self.fused_resample = bool(fused_resample)

    def build(self, input_shape):
        in_channels = input_shape[-1]
        dtype = self.dtype_policy
        out_shape = tuple(input_shape[:-1]) + (self.out_channels,)
        self.bn1 = ConditionalBatchNormalization(self.num_classes, self.synchronized_bn, dtype=dtype, name="cbn1")
        self.conv1 = sn_conv(self.out_channels, 3, self.init, dtype, "conv1")
        self.bn2 = ConditionalBatchNormalization(self.num_classes, self.synchronized_bn, dtype=dtype, name="cbn2")
        self.conv2 = sn_conv(self.out_channels, 3, self.init, dtype, "conv2")
        self.bn1.build(input_shape)
        self.conv1.build(input_shape)
        self.bn2.build(out_shape)
        self.conv2.build(out_shape)
        self.shortcut = None
        if self.upsample or in_channels != self.out_channels:
            self.shortcut = sn_conv(self.out_channels, 1, self.init, dtype, "shortcut")
            self.shortcut.build(input_shape)
        self.built = True

    def call(self, x, labels=None, training=False):
        h = ops.relu(self.bn1(x, labels, training=training))
        if self.upsample and self.fused_resample:
            h = _fused(self.conv1, h, resample_conv.upsample_conv, training)
            x = upsample2x(self.shortcut(x, training=training))  # shortcut exists whenever upsampling
        else:
            if self.upsample:
                h, x = upsample2x(h), upsample2x(x)
            h = self.conv1(h, training=training)
            if self.shortcut is not None:
                x = self.shortcut(x, training=training)
        h = ops.relu(self.bn2(h, labels, training=training))
        h = self.conv2(h, training=training)
        return h + x

    def compute_output_shape(self, input_shape):
        scale = 2 if self.upsample else 1
        height = None if input_shape[1] is None else input_shape[1] * scale
        width = None if input_shape[2] is None else input_shape[2] * scale
        return (input_shape[0], height, width, self.out_channels)

    def get_config(self):
        return {**super().get_config(), "out_channels": self.out_channels, "num_classes": self.num_classes,
                "upsample": self.upsample, "init": self.init, "synchronized_bn": self.synchronized_bn,
                "fused_resample": self.fused_resample}


@register
class DiscriminatorBlock(keras.layers.Layer):
    """ResBlockDown of the discriminator; `preactivation=False` gives the optimized first block."""

    def __init__(self, out_channels, downsample=True, preactivation=True, init="orthogonal", fused_resample=True,
                 **kwargs):
        super().__init__(**kwargs)
        self.out_channels = int(out_channels)
        self.downsample = bool(downsample)
        self.preactivation = bool(preactivation)
        self.init = init
        self.fused_resample = bool(fused_resample)

    def build(self, input_shape):
        in_channels = input_shape[-1]
        dtype = self.dtype_policy
        self.conv1 = sn_conv(self.out_channels, 3, self.init, dtype, "conv1")
        self.conv2 = sn_conv(self.out_channels, 3, self.init, dtype, "conv2")
        self.conv1.build(input_shape)
        self.conv2.build(tuple(input_shape[:-1]) + (self.out_channels,))
        self.shortcut = None
        if self.downsample or in_channels != self.out_channels:
            self.shortcut = sn_conv(self.out_channels, 1, self.init, dtype, "shortcut")
            self.shortcut.build(input_shape)
        self.built = True

    def call(self, x, training=False):
        h = ops.relu(x) if self.preactivation else x
        h = self.conv1(h, training=training)
        if self.downsample and self.fused_resample:
            h, x = _fused(self.conv2, ops.relu(h), resample_conv.conv_avg_pool, training), avg_pool2x(x)
        else:
            h = self.conv2(ops.relu(h), training=training)
            if self.downsample:
                h, x = avg_pool2x(h), avg_pool2x(x)
        if self.shortcut is not None:
            x = self.shortcut(x, training=training)
        return h + x

    def compute_output_shape(self, input_shape):
        scale = 2 if self.downsample else 1
        height = None if input_shape[1] is None else input_shape[1] // scale
        width = None if input_shape[2] is None else input_shape[2] // scale
        return (input_shape[0], height, width, self.out_channels)

    def get_config(self):
        return {**super().get_config(), "out_channels": self.out_channels, "downsample": self.downsample,
                "preactivation": self.preactivation, "init": self.init, "fused_resample": self.fused_resample}
