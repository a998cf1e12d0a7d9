"""The SAGAN self-attention block ("sn_non_local_block_sim" in the reference implementation).

For a feature map x with C channels and N = H·W positions:

    θ = SN-Conv1×1(C → C/8)(x)                      queries, all N positions      [B, N, C/8]
    φ = MaxPool2×2(SN-Conv1×1(C → C/8)(x))          keys, N/4 positions           [B, N/4, C/8]
    g = MaxPool2×2(SN-Conv1×1(C → C/2)(x))          values, N/4 positions         [B, N/4, C/2]
    β = softmax(θ φᵀ) over the keys                                              [B, N, N/4]
    o = SN-Conv1×1(C/2 → C)(β g)                                                 [B, H, W, C]
    y = x + γ·o,  γ a scalar initialised to 0 (so the block starts as the identity).

The 2×2 max-pools and the C/2-wide values are the reference code's (brain-research/self-attention-gan,
as BigGAN-PyTorch): the paper's formula pools nothing (N × N attention) and has values h of width C (arXiv
v1) or C/8 followed by a 1×1 convolution v back to C (ICML 2019); its g and f are θ and φ here.
`pooled=False` drops the max-pools (full N × N attention) and keeps the C/2 values.
The softmax runs in float32 whatever the compute dtype; the matmuls run in the compute dtype.

Query blocks (`query_block=k > 0`): β g is computed for k query rows at a time. Each row's softmax
needs only that row's logits, so this is exact (no running maximum or rescaling as in flash attention):
the same function and variables, with [B, k, M] logits alive instead of [B, N, M]. With `recompute`
(the default) a custom gradient keeps only θ, φ and g from the forward pass and recomputes each
block's softmax in the backward pass, one block at a time, accumulating the gradients of φ and g
over blocks in float32; without it, autodiff through the blocks keeps every block's softmax for the
backward pass (as the single einsum does). `return_attention=True` (the maps, for figures) always
takes the single-einsum path.
"""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from sagan_tf.layers.arguments import check_query_block
from sagan_tf.layers.initializers import get_initializer
from sagan_tf.layers.serialization import register
from sagan_tf.layers.spectral_norm import SpectralNormalization

__all__ = ["SelfAttention", "attention", "query_blocks"]


def _softmax(theta, phi):
    """float32 softmax over the keys of θ φᵀ, the logits computed in the compute dtype: [B, n, M]."""
    logits = ops.einsum("bnc,bmc->bnm", theta, phi)
    with keras.name_scope("softmax"):  # the casts, the softmax and their gradients, by name in a profile
        return ops.softmax(ops.cast(logits, "float32"), axis=-1)


def _attend(theta, phi, g):
    """softmax(θ φᵀ) g for one set of query rows, in g's dtype: [B, n, C_g]."""
    return ops.einsum("bnm,bmc->bnc", ops.cast(_softmax(theta, phi), g.dtype), g)


def query_blocks(n: int, block: int):
    """[(start, stop)] of the query rows of each block; the last block is short when block ∤ n."""
    return [(start, min(start + block, n)) for start in range(0, n, block)]


def attention(theta: tf.Tensor, phi: tf.Tensor, g: tf.Tensor, query_block: int = 0,
              recompute: bool = True) -> tf.Tensor:
    """softmax(θ φᵀ) g: [B, N, C/8] × [B, M, C/8] × [B, M, C_g] → [B, N, C_g] in g's dtype.

    `query_block=0` is one einsum over all queries; k > 0 computes it k query rows at a time (see the
    module docstring for `recompute`). All three give the same result up to float rounding.
    """
    n = theta.shape[1]
    if not query_block or n is None:
        return _attend(theta, phi, g)
    bounds = query_blocks(n, query_block)
    if not recompute:
        return ops.concatenate([_attend(theta[:, a:b], phi, g) for a, b in bounds], axis=1)
    return _recomputed_attention(theta, phi, g, bounds)


def _recomputed_attention(theta, phi, g, bounds):
    @ops.custom_gradient
    def blocked(theta, phi, g):
        out = ops.concatenate([_attend(theta[:, a:b], phi, g) for a, b in bounds], axis=1)

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            d_theta, d_phi, d_g = [], None, None
            for a, b in bounds:
                theta_b, up_b = theta[:, a:b], upstream[:, a:b]
                p = _softmax(theta_b, phi)  # recomputed: [B, k, M] float32
                part_g = ops.cast(ops.einsum("bnm,bnc->bmc", ops.cast(p, g.dtype), up_b), "float32")
                dp = ops.cast(ops.einsum("bnc,bmc->bnm", up_b, g), "float32")
                # softmax backward, as TF's SoftmaxGrad: (dp − Σ_m dp·p) · p
                d_logits = ops.cast(p * (dp - ops.sum(dp * p, axis=-1, keepdims=True)), theta.dtype)
                d_theta.append(ops.einsum("bnm,bmc->bnc", d_logits, phi))
                part_phi = ops.cast(ops.einsum("bnm,bnc->bmc", d_logits, theta_b), "float32")
                d_g = part_g if d_g is None else d_g + part_g
                d_phi = part_phi if d_phi is None else d_phi + part_phi
            return ops.concatenate(d_theta, axis=1), ops.cast(d_phi, phi.dtype), ops.cast(d_g, g.dtype)

        return out, grad

    return blocked(theta, phi, g)


@register
class SelfAttention(keras.layers.Layer):
    """Self-attention over the spatial positions of an NHWC feature map.

    Args:
      pooled: 2×2 max-pool keys and values (the reference code's block; the paper pools nothing); False
        for full attention.
      init: name of the kernel initialiser (see `sagan_tf.layers.initializers`).
      query_block: compute the attention this many query rows at a time (0: all at once). Changes how
        the layer computes, not its variables or its function, so checkpoints restore either way.
      recompute: with query_block > 0, recompute each block's softmax in the backward pass instead of
        keeping every block's.
    Call with `return_attention=True` to also get β, shape [batch, N, N/4] (or [batch, N, N]).
    """

    def __init__(self, pooled=True, init="orthogonal", query_block=0, recompute=True, **kwargs):
        super().__init__(**kwargs)
        self.pooled = bool(pooled)
        self.init = init
        self.query_block = check_query_block(query_block)
        self.recompute = bool(recompute)

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
        # Static N when H and W are known, so the query blocks can be laid out at trace time.
        n = x.shape[1] * x.shape[2] if x.shape[1] is not None and x.shape[2] is not None else -1
        theta = ops.reshape(self.theta(x, training=training), (batch, n, channels // 8))
        phi = ops.reshape(self._pool(self.phi(x, training=training)), (batch, -1, channels // 8))
        g = ops.reshape(self._pool(self.g(x, training=training)), (batch, -1, channels // 2))
        if return_attention:
            # [B, N, C/8] x [B, M, C/8] -> [B, N, M], M = N/4 when pooled
            beta = _softmax(theta, phi)
            # [B, N, M] x [B, M, C/2] -> [B, N, C/2]
            attended = ops.einsum("bnm,bmc->bnc", ops.cast(beta, x.dtype), g)
        else:
            attended = attention(theta, phi, g, self.query_block, self.recompute)
        attended = ops.reshape(attended, (batch, height, width, channels // 2))
        y = x + ops.cast(self.gamma, x.dtype) * self.o(attended, training=training)
        return (y, beta) if return_attention else y

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "pooled": self.pooled, "init": self.init,
                "query_block": self.query_block, "recompute": self.recompute}
