"""Multiply-accumulate counts of the networks, derived from the same architecture tables.

Counts convolutions, linear layers and the two attention matmuls (the dominant terms); biases,
normalisation, activations and pooling are ignored. At 128², ch=64: G ≈ 9.2 GMAC and D ≈ 4.6 GMAC
per image in the networks' nominal form (docs/architecture.md).

`executed=False` counts the nominal form (upsample then 3×3 convolution, 3×3 convolution then pool):
the work that defines the function, used for MFU. `executed=True` counts what runs with
`fused_resample` (sagan_tf.layers.resample_conv): G's first convolution of each block as a 2×2
convolution with 4× the filters on the padded low-resolution map, its shortcut at the low resolution,
and D's second convolution of each downsampling block as a 4×4 stride-2 convolution; with
`attention_query_block` > 0, every backward pass through a SelfAttention also recomputes its logits
θφᵀ block by block (sagan_tf.layers.attention), N·M·C/8 MACs more.
"""
from __future__ import annotations

from sagan_tf.models.architecture import GENERATOR_BASE_RESOLUTION, discriminator_stages, generator_stages

__all__ = ["attention_macs", "attention_recompute_macs", "generator_macs", "discriminator_macs", "train_step_flops"]


def attention_macs(channels: int, size: int, pooled: bool = True) -> int:
    """MACs of one SelfAttention block on a size×size×channels map."""
    n = size * size
    m = n // 4 if pooled else n
    projections = n * channels * (channels // 8) * 2 + n * channels * (channels // 2) + n * (channels // 2) * channels
    return projections + n * m * (channels // 8) + n * m * (channels // 2)


def attention_recompute_macs(channels: int, size: int, pooled: bool = True) -> int:
    """MACs a query-blocked SelfAttention adds to each of its backward passes: θφᵀ once more."""
    n = size * size
    return n * (n // 4 if pooled else n) * (channels // 8)


def _recompute_macs(stages, pooled):
    return sum(attention_recompute_macs(s.out_channels, s.resolution, pooled) for s in stages if s.attention)


def _fused(spec, executed):
    return executed and spec.get("fused_resample", True)


def generator_macs(spec: dict, executed: bool = False) -> list[tuple[str, int]]:
    """[(stage name, MACs per image)] for a generator config mapping (see architecture.MODEL_FIELDS)."""
    stages = generator_stages(spec["resolution"], spec["ch"], spec["g_attention"])
    base = GENERATOR_BASE_RESOLUTION
    rows = [("linear", spec["z_dim"] * base * base * stages[0].in_channels)]
    for i, s in enumerate(stages):
        area, c_in, c_out = s.resolution ** 2, s.in_channels, s.out_channels
        if _fused(spec, executed):  # every generator block upsamples
            low = s.resolution // 2
            first, shortcut = (low + 1) ** 2 * 4 * c_in * 4 * c_out, low ** 2 * c_in * c_out
        else:
            first, shortcut = area * 9 * c_in * c_out, area * c_in * c_out
        rows.append((f"block{i}", first + area * 9 * c_out ** 2 + shortcut))
        if s.attention:
            rows.append((f"attention{i}", attention_macs(s.out_channels, s.resolution, spec["pooled_attention"])))
    rows.append(("conv_out", spec["resolution"] ** 2 * 9 * stages[-1].out_channels * spec["image_channels"]))
    return rows


def discriminator_macs(spec: dict, executed: bool = False) -> list[tuple[str, int]]:
    """[(stage name, MACs per image)] for a discriminator config mapping."""
    stages = discriminator_stages(spec["resolution"], spec["ch"], spec["image_channels"], spec["d_attention"])
    rows, size = [], spec["resolution"]
    for i, s in enumerate(stages):
        shortcut = s.in_channels * s.out_channels * s.resolution ** 2 if (s.resample or s.in_channels != s.out_channels) else 0
        second = size ** 2 * 9 * s.out_channels ** 2
        if s.resample and _fused(spec, executed):
            second = s.resolution ** 2 * 16 * s.out_channels ** 2
        rows.append((f"block{i}", size ** 2 * 9 * s.in_channels * s.out_channels + second + shortcut))
        if s.attention:
            rows.append((f"attention{i}", attention_macs(s.out_channels, s.resolution, spec["pooled_attention"])))
        size = s.resolution
    head = stages[-1].out_channels * (2 if spec["num_classes"] else 1)
    rows.append(("head", head))
    return rows


def train_step_flops(spec: dict, n_dis: int = 1, executed: bool = False) -> int:
    """FLOPs per image of one training iteration: n_dis D steps and one G step.

    D step = G forward + D forward/backward on real and fake; G step = G forward/backward + D forward/backward.
    A backward pass costs twice its forward; 1 MAC = 2 FLOPs. `executed`: see the module docstring.
    """
    g = sum(m for _, m in generator_macs(spec, executed))
    d = sum(m for _, m in discriminator_macs(spec, executed))
    d_step = g + 2 * 3 * d
    g_step = 3 * g + 3 * d
    if executed and spec.get("attention_query_block", 0):
        # Each backward pass recomputes its attention logits: D's on real and fake in the D step, G's and
        # D's in the G step.
        g_re = _recompute_macs(generator_stages(spec["resolution"], spec["ch"], spec["g_attention"]),
                               spec["pooled_attention"])
        d_re = _recompute_macs(discriminator_stages(spec["resolution"], spec["ch"], spec["image_channels"],
                                                    spec["d_attention"]), spec["pooled_attention"])
        d_step += 2 * d_re
        g_step += g_re + d_re
    return 2 * (n_dis * d_step + g_step)
