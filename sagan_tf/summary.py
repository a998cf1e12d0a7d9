"""Prints the per-stage layout of G and D for a config: output shape, parameters and MACs per image.

    python -m sagan_tf.summary --config=configs/imagenet128.py [--config.ch=32 ...]

The last four lines are machine-readable:
    generator_params=<int>  discriminator_params=<int>
    generator_gmacs_per_image=<float>  discriminator_gmacs_per_image=<float>
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from absl import app
from ml_collections import config_flags

from sagan_tf.config import validate_config
from sagan_tf.models import Discriminator, Generator
from sagan_tf.models.architecture import GENERATOR_BASE_RESOLUTION, model_fields
from sagan_tf.models import cost
from sagan_tf.models.cost import discriminator_macs, generator_macs

__all__ = ["generator_rows", "discriminator_rows", "format_table"]

_CONFIG = config_flags.DEFINE_config_file("config", "configs/imagenet128.py", "Preset file (with --config.<field>=).")


def _params(*layers):
    return sum(int(np.prod(w.shape)) for layer in layers for w in layer.trainable_weights)


def generator_rows(generator: Generator) -> list[tuple[str, tuple[int, ...], int, int]]:
    """[(stage, output shape, params, MACs)] of a built Generator."""
    spec, macs = generator.spec, dict(generator_macs(generator.spec))
    base = GENERATOR_BASE_RESOLUTION
    rows = [("linear", (base, base, generator.stages[0].in_channels), _params(generator.linear), macs["linear"])]
    for i, (stage, block) in enumerate(zip(generator.stages, generator.blocks)):
        shape = (stage.resolution, stage.resolution, stage.out_channels)
        rows.append((f"block{i}", shape, _params(block), macs[f"block{i}"]))
        if i in generator.attention_layers:
            rows.append((f"attention{i}", shape, _params(generator.attention_layers[i]), macs[f"attention{i}"]))
    rows.append(("bn_out+conv_out", (spec["resolution"], spec["resolution"], spec["image_channels"]),
                 _params(generator.bn_out, generator.conv_out), macs["conv_out"]))
    return rows


def discriminator_rows(discriminator: Discriminator) -> list[tuple[str, tuple[int, ...], int, int]]:
    """[(stage, output shape, params, MACs)] of a built Discriminator."""
    macs = dict(discriminator_macs(discriminator.spec))
    rows = []
    for i, (stage, block) in enumerate(zip(discriminator.stages, discriminator.blocks)):
        shape = (stage.resolution, stage.resolution, stage.out_channels)
        rows.append((f"block{i}", shape, _params(block), macs[f"block{i}"]))
        if i in discriminator.attention_layers:
            rows.append((f"attention{i}", shape, _params(discriminator.attention_layers[i]), macs[f"attention{i}"]))
    head = [discriminator.linear] + ([discriminator.embedding] if discriminator.embedding is not None else [])
    rows.append(("head (linear+projection)", (1,), _params(*head), macs["head"]))
    return rows


def format_table(title: str, rows: Sequence[tuple[str, tuple[int, ...], int, int]]) -> str:
    lines = [title, f"  {'stage':<26}{'output':>18}{'params':>14}{'GMACs':>10}"]
    for name, shape, params, macs in rows:
        lines.append(f"  {name:<26}{'x'.join(map(str, shape)):>18}{params:>14,}{macs / 1e9:>10.3f}")
    return "\n".join(lines)


def main(argv):
    del argv
    config = validate_config(_CONFIG.value)
    spec = model_fields(config)
    generator, discriminator = Generator(spec), Discriminator(spec)
    generator.build()
    discriminator.build()
    g_rows, d_rows = generator_rows(generator), discriminator_rows(discriminator)
    print(format_table("Generator", g_rows))
    print(format_table("Discriminator", d_rows))
    print(f"generator_params={_params(generator)}")
    print(f"discriminator_params={_params(discriminator)}")
    print(f"generator_gmacs_per_image={sum(r[3] for r in g_rows) / 1e9:.4f}")
    print(f"discriminator_gmacs_per_image={sum(r[3] for r in d_rows) / 1e9:.4f}")
    # One training iteration (D step + G step), nominal (defines MFU) and as executed with fused_resample.
    print(f"train_step_gflops_per_image_nominal={cost.train_step_flops(spec, config.n_dis) / 1e9:.2f}")
    print(f"train_step_gflops_per_image_executed="
          f"{cost.train_step_flops(spec, config.n_dis, executed=True) / 1e9:.2f}")


if __name__ == "__main__":
    app.run(main)
