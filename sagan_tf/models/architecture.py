"""One architecture table per resolution for each network, in the style of BigGAN-PyTorch's G_arch/D_arch.

Channel widths are multiples of `ch`. Adding a resolution means adding one row to each table; the
networks themselves have no per-resolution code.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

from sagan_tf.layers.arguments import check_query_block

__all__ = ["RESOLUTIONS", "DEFAULT_ATTENTION", "GENERATOR_BASE_RESOLUTION", "MODEL_FIELDS", "RESUME_FIXED_FIELDS",
           "Stage", "generator_stages", "discriminator_stages", "attention_resolutions", "model_fields"]

# Generator: (in, out) channel multipliers of each ResBlockUp; the first block reads the 4×4 map made
# by the input linear layer and every block doubles the resolution.
GENERATOR_TABLES = {
    32: ((4, 4), (4, 4), (4, 4)),
    64: ((16, 8), (8, 4), (4, 2), (2, 1)),
    128: ((16, 16), (16, 8), (8, 4), (4, 2), (2, 1)),
    256: ((16, 16), (16, 8), (8, 8), (8, 4), (4, 2), (2, 1)),
}

# Discriminator: (out channel multiplier, downsample) of each block; the first is the optimized block
# reading the image.
DISCRIMINATOR_TABLES = {
    32: ((4, True), (4, True), (4, False), (4, False)),
    64: ((1, True), (2, True), (4, True), (8, True), (16, False)),
    128: ((1, True), (2, True), (4, True), (8, True), (16, True), (16, False)),
    256: ((1, True), (2, True), (4, True), (8, True), (8, True), (16, True), (16, False)),
}

RESOLUTIONS = tuple(sorted(GENERATOR_TABLES))
# Where the presets put self-attention (the same feature size in G and D) at each resolution: 16² at 32
# (configs/cifar10.py), 32² at 64 and 128 (configs/imagenet64.py, imagenet128.py: the paper's choice),
# and 64² at 256 (BigGAN's 256² placement; no preset). A trainer that picks only the resolution uses these.
DEFAULT_ATTENTION = {32: (16,), 64: (32,), 128: (32,), 256: (64,)}
# The config fields that define the networks (documented in sagan_tf.config); G and D serialise these.
MODEL_FIELDS = ("resolution", "ch", "z_dim", "num_classes", "image_channels", "g_attention", "d_attention",
                "init", "pooled_attention", "sync_bn")
# Fields that change how the networks compute but not their variables, with the value a config written
# before the field existed gets (such a checkpoint restores either way):
#   fused_resample         resampling folded into the blocks' convolutions (sagan_tf.layers.resample_conv)
#   attention_query_block  query rows per block of every SelfAttention (0 = one einsum over all queries)
EXECUTION_FIELDS = {"fused_resample": True, "attention_query_block": 0}
# The model fields a resume may change: `init` (only used before the first checkpoint) and `sync_bn` (how BN
# statistics are reduced in training). The others decide the variables and what the networks compute, so a
# resume must keep them (training.checkpointing.check_resume_config).
RESUME_FREE_FIELDS = ("init", "sync_bn")
RESUME_FIXED_FIELDS = tuple(name for name in MODEL_FIELDS if name not in RESUME_FREE_FIELDS)
GENERATOR_BASE_RESOLUTION = 4


@dataclasses.dataclass(frozen=True)
class Stage:
    """One residual block: channels in/out, the resolution it outputs, and whether attention follows it."""
    in_channels: int
    out_channels: int
    resolution: int
    resample: bool
    attention: bool


def generator_stages(resolution: int, ch: int, attention: Sequence[int] = ()) -> list[Stage]:
    """The generator's blocks at `resolution`; attention follows the first block reaching each listed size."""
    stages, size = [], GENERATOR_BASE_RESOLUTION
    for in_mult, out_mult in GENERATOR_TABLES[resolution]:
        size *= 2
        stages.append(Stage(in_mult * ch, out_mult * ch, size, True, size in attention))
    return _attention_once(stages)


def discriminator_stages(resolution: int, ch: int, image_channels: int, attention: Sequence[int] = ()) -> list[Stage]:
    """The discriminator's blocks at `resolution`; attention follows the first block reaching each listed size."""
    stages, size, in_channels = [], resolution, image_channels
    for out_mult, downsample in DISCRIMINATOR_TABLES[resolution]:
        size = size // 2 if downsample else size
        stages.append(Stage(in_channels, out_mult * ch, size, downsample, size in attention))
        in_channels = out_mult * ch
    return _attention_once(stages)


def _attention_once(stages):
    """Several blocks can share an output size (D's last blocks); attention goes after the first only."""
    seen, result = set(), []
    for stage in stages:
        attention = stage.attention and stage.resolution not in seen
        seen.add(stage.resolution)
        result.append(dataclasses.replace(stage, attention=attention))
    return result


def attention_resolutions(network: str, resolution: int) -> list[int]:
    """Feature-map sizes at which `network` ('generator' or 'discriminator') can place attention."""
    if network == "generator":
        return sorted({s.resolution for s in generator_stages(resolution, 1)})
    return sorted({s.resolution for s in discriminator_stages(resolution, 1, 3)})


def model_fields(config) -> dict:
    """The plain-Python subset of a config mapping that defines the networks."""
    missing = [name for name in MODEL_FIELDS if name not in config]
    if missing:
        raise ValueError(f"model config lacks fields {missing}; it needs {list(MODEL_FIELDS)}.")
    fields = {name: config[name] for name in MODEL_FIELDS}
    fields.update({name: _execution_value(name, config[name]) if name in config else default
                   for name, default in EXECUTION_FIELDS.items()})
    for name in ("g_attention", "d_attention"):
        fields[name] = [int(size) for size in fields[name]]
    return fields


def _execution_value(name, value):
    """An execution field's value as the type of its default, or a ValueError naming it."""
    if isinstance(EXECUTION_FIELDS[name], bool):
        return bool(value)
    return check_query_block(value, f"config.{name}")
