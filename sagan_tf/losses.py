"""GAN losses as per-example vectors (the caller averages over the GLOBAL batch).

Hinge (the paper, after Lim & Ye 2017 and Miyato et al. 2018):
    L_D = E[relu(1 − D(x, y))] + E[relu(1 + D(G(z), y))],   L_G = −E[D(G(z), y)]
Non-saturating (Goodfellow et al. 2014), as an ablation:
    L_D = E[softplus(−D(x, y))] + E[softplus(D(G(z), y))],  L_G = E[softplus(−D(G(z), y))]
All computed in float32.

A regulariser of G's weights (BigGAN, Brock et al. 2019, section 3.1), `config.g_ortho_reg`:
    R_β(W) = β ‖WᵀW ⊙ (1 − I)‖²_F / 2   per kernel W reshaped to [fan_in, filters]
Only the filters' cosine-like overlaps are penalised, not their norms. Its gradient, 2β W (WᵀW ⊙ (1 − I)),
is the update BigGAN adds to each G kernel's gradient (their coefficient is 1e-4); it is what keeps a
generator well behaved under truncated noise.
"""
from __future__ import annotations

from typing import Callable, Sequence

import tensorflow as tf
from keras import ops

__all__ = ["hinge_d_loss", "hinge_g_loss", "non_saturating_d_loss", "non_saturating_g_loss", "get_losses",
           "orthogonal_penalty"]


def hinge_d_loss(real_logits: tf.Tensor, fake_logits: tf.Tensor) -> tf.Tensor:
    real_logits, fake_logits = ops.cast(real_logits, "float32"), ops.cast(fake_logits, "float32")
    return ops.relu(1.0 - real_logits) + ops.relu(1.0 + fake_logits)


def hinge_g_loss(fake_logits: tf.Tensor) -> tf.Tensor:
    return -ops.cast(fake_logits, "float32")


def non_saturating_d_loss(real_logits: tf.Tensor, fake_logits: tf.Tensor) -> tf.Tensor:
    real_logits, fake_logits = ops.cast(real_logits, "float32"), ops.cast(fake_logits, "float32")
    return ops.softplus(-real_logits) + ops.softplus(fake_logits)


def non_saturating_g_loss(fake_logits: tf.Tensor) -> tf.Tensor:
    return ops.softplus(-ops.cast(fake_logits, "float32"))


def orthogonal_penalty(kernels: Sequence[tf.Tensor]) -> tf.Tensor:
    """Σ over `kernels` of ‖WᵀW ⊙ (1 − I)‖²_F / 2, W = the kernel as [fan_in, filters] (a Dense kernel is
    [in, out]; a convolution's [kh, kw, in, out] counts each filter as one column). Each kernel's term is
    computed in float32, in float64 if the kernel is float64; the sum is float64 only when every kernel is.

    The smaller Gram matrix gives the same value: ‖WᵀW ⊙ (1 − I)‖²_F = ‖WᵀW‖²_F − Σ_j ‖w_j‖⁴ and
    ‖WᵀW‖_F = ‖WWᵀ‖_F, so a wide kernel (fan_in < filters) uses WWᵀ [fan_in, fan_in]. G's input layer
    at 128² is [z, 16384]: WᵀW would be 16384² (1 GiB in float32, several more in its gradient) where
    WWᵀ is z². The gradient is the same, 2W(WᵀW ⊙ (1 − I)) = 2(WWᵀW − W·diag(‖w_j‖²)). Tall and square
    kernels keep WᵀW, there the smaller one and the off-diagonal form subtracts no large diagonal."""
    penalties = []
    for kernel in kernels:
        dtype = tf.float64 if kernel.dtype == tf.float64 else tf.float32
        filters = int(kernel.shape[-1])
        w = tf.reshape(tf.cast(kernel, dtype), [-1, filters])
        if int(w.shape[0]) < filters:  # wide: WWᵀ, minus the diagonal's share
            gram = tf.matmul(w, w, transpose_b=True)
            penalty = tf.reduce_sum(tf.square(gram)) - tf.reduce_sum(tf.square(tf.reduce_sum(tf.square(w), axis=0)))
        else:
            gram = tf.matmul(w, w, transpose_a=True)
            penalty = tf.reduce_sum(tf.square(gram - tf.linalg.diag(tf.linalg.diag_part(gram))))
        penalties.append(0.5 * penalty)
    if penalties and all(penalty.dtype == tf.float64 for penalty in penalties):
        return tf.add_n(penalties)
    return tf.add_n([tf.cast(penalty, tf.float32) for penalty in penalties] or [tf.constant(0.0, tf.float32)])


LOSSES = {
    "hinge": (hinge_d_loss, hinge_g_loss),
    "non_saturating": (non_saturating_d_loss, non_saturating_g_loss),
}


def get_losses(name: str) -> tuple[Callable[[tf.Tensor, tf.Tensor], tf.Tensor], Callable[[tf.Tensor], tf.Tensor]]:
    """Returns (d_loss_fn, g_loss_fn) for `name` in LOSSES."""
    if name not in LOSSES:
        raise ValueError(f"Unknown loss {name!r}; allowed: {sorted(LOSSES)}.")
    return LOSSES[name]
