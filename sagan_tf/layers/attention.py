"""The SAGAN self-attention block ("sn_non_local_block_sim" in the reference implementation).

For a feature map x with C channels and N = H·W positions:

    θ = SN-Conv1×1(C → C/8)(x)                      queries, all N positions      [B, N, C/8]
    φ = MaxPool2×2(SN-Conv1×1(C → C/8)(x))          keys, N/4 positions           [B, N/4, C/8]
    g = MaxPool2×2(SN-Conv1×1(C → C/2)(x))          values, N/4 positions         [B, N/4, C/2]
    β = softmax(θ φᵀ) over the keys                                              [B, N, N/4]
    o = SN-Conv1×1(C/2 → C)(β g)                                                 [B, H, W, C]
    y = x + γ·o,  γ a scalar initialised to 0 (so the block starts as the identity).

(The paper writes f, g, h for θ, φ, g.) `pooled=False` drops the max-pools (full N × N attention).
The softmax runs in float32 whatever the compute dtype.
"""
import keras
from keras import ops

from sagan_tf.layers.initializers import get_initializer
from sagan_tf.layers.serialization import register
from sagan_tf.layers.spectral_norm import SpectralNormalization


@register
class SelfAttention(keras.layers.Layer):
    """Self-attention over the spatial positions of an NHWC feature map.

    Args:
      pooled: 2×2 max-pool keys and values (the paper's block); False for full attention.
      init: name of the kernel initialiser (see `sagan_tf.layers.initializers`).
    Call with `return_attention=True` to also get β, shape [batch, N, N/4] (or [batch, N, N]).
    """

    def __init__(self, pooled=True, init="orthogonal", **kwargs):
        super().__init__(**kwargs)
        self.pooled = bool(pooled)
        self.init = init

    def _conv(self, filters, name):
        return SpectralNormalization(
            keras.layers.Conv2D(filters, 1, use_bias=False, kernel_initializer=get_initializer(self.init),
                                dtype=self.dtype_policy, name=name),
            dtype=self.dtype_policy, name=f"sn_{name}")

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels % 8:
            raise ValueError(f"SelfAttention needs channels divisible by 8, got {channels}.")
        self.theta = self._conv(channels // 8, "theta")
        self.phi = self._conv(channels // 8, "phi")
        self.g = self._conv(channels // 2, "g")
        self.o = self._conv(channels, "o")
        for conv in (self.theta, self.phi, self.g):
            conv.build(input_shape)
        self.o.build(tuple(input_shape[:-1]) + (channels // 2,))
        self.gamma = self.add_weight(name="gamma", shape=(), initializer="zeros")
        self.built = True

    def _pool(self, x):
        return ops.max_pool(x, pool_size=2, strides=2, padding="valid") if self.pooled else x

    def call(self, x, training=False, return_attention=False):
        shape = ops.shape(x)
        batch, height, width, channels = shape[0], shape[1], shape[2], x.shape[-1]
        theta = ops.reshape(self.theta(x, training=training), (batch, -1, channels // 8))
        phi = ops.reshape(self._pool(self.phi(x, training=training)), (batch, -1, channels // 8))
        g = ops.reshape(self._pool(self.g(x, training=training)), (batch, -1, channels // 2))
        # [B, N, C/8] x [B, M, C/8] -> [B, N, M], M = N/4 when pooled
        logits = ops.einsum("bnc,bmc->bnm", theta, phi)
        attention = ops.softmax(ops.cast(logits, "float32"), axis=-1)
        # [B, N, M] x [B, M, C/2] -> [B, N, C/2]
        attended = ops.einsum("bnm,bmc->bnc", ops.cast(attention, x.dtype), g)
        attended = ops.reshape(attended, (batch, height, width, channels // 2))
        y = x + ops.cast(self.gamma, x.dtype) * self.o(attended, training=training)
        return (y, attention) if return_attention else y

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "pooled": self.pooled, "init": self.init}
