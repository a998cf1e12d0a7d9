"""Does the train step's time grow with its FLOPs from 32² → 64² → 128²? All presets in one process.

    python benchmarks/scaling.py [--presets cifar10,imagenet64,imagenet128] [--batch 16]
        [--precision auto] [--steps 3 --warmup 1] [--json]

Every preset is built at the same batch and precision and timed interleaved (one step of each per
round, plus the peak matmuls, as in train_step.py), so the load cancels from the ratios. For each
consecutive pair the table gives the FLOP ratio (`cost.train_step_flops`), the step-time ratio (median
over rounds of t_next / t_prev, both from the same round) and their deviation: time ratio ÷ FLOP
ratio − 1. The issue's target is |deviation| ≤ 20 %.
"""
from __future__ import annotations

import argparse

try:
    from benchmarks import common, train_step
except ImportError:  # run as a script from benchmarks/
    import common
    import train_step

DEFAULT_PRESETS = ("cifar10", "imagenet64", "imagenet128")
TOLERANCE = 0.20
COLUMNS = ["preset", "resolution", "precision", "batch", "step_ms", "ms/img", "GFLOP/img", "GFLOP/s", "MFU_%"]
PAIR_COLUMNS = ["from", "to", "flop_ratio", "time_ratio", "deviation_%", "within_20%"]


def pair_rows(group, presets):
    """One row per consecutive (smaller, larger) preset pair of a timed group."""
    rows = []
    variants = group["variants"]
    for small, large in zip(presets, presets[1:]):
        a, b = variants[small], variants[large]
        flop_ratio = (b["flops_per_step"] / b["batch"]) / (a["flops_per_step"] / a["batch"])
        time_ratio = train_step.paired_ratio([t / b["batch"] for t in b["times"]],
                                             [t / a["batch"] for t in a["times"]])
        deviation = time_ratio / flop_ratio - 1
        rows.append({"from": small, "to": large, "flop_ratio": flop_ratio, "time_ratio": time_ratio,
                     "deviation_%": 100 * deviation, "within_20%": "yes" if abs(deviation) <= TOLERANCE else "no"})
    return rows


def preset_rows(group, resolutions):
    rows = []
    for row in train_step.summarise(group):
        rows.append({"preset": row["variant"], "resolution": resolutions[row["variant"]], "precision": row["precision"],
                     "batch": row["batch"], "step_ms": row["step_ms"], "ms/img": row["step_ms"] / row["batch"],
                     "GFLOP/img": row["GFLOP/step"] / row["batch"], "GFLOP/s": row["GFLOP/s"], "MFU_%": row["MFU_%"]})
    return rows


def main(argv=None):
    parser = common.add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--presets", default=",".join(DEFAULT_PRESETS),
                        help="comma-separated presets, smallest resolution first")
    parser.add_argument("--batch", type=int, default=16, help="the same global batch for every preset")
    parser.add_argument("--precision", default="auto", choices=("auto", "float32", "mixed_bfloat16"), help="auto, float32 or mixed_bfloat16 for every preset")
    parser.add_argument("--steps", type=int, default=3, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per preset first")
    parser.add_argument("--peak-size", type=int, default=4096)
    args = parser.parse_args(argv)
    presets = [p for p in args.presets.split(",") if p]
    for preset in presets:
        if preset not in common.PRESETS:
            parser.error(f"--presets: unknown preset {preset!r}; allowed: {list(common.PRESETS)}")
    if len(presets) < 2:
        parser.error(f"--presets needs at least two presets to compare, got {presets}")
    if args.batch < 1:
        parser.error(f"--batch must be >= 1, got {args.batch}")

    import tensorflow as tf
    strategy = tf.distribute.get_strategy()
    configs = {preset: (train_step.variant_config(preset, args.batch, dict(mixed_precision=args.precision)), strategy, 1)
               for preset in presets}
    resolutions = {preset: config.resolution for preset, (config, _, _) in configs.items()}
    group = train_step.time_configs(configs, args.steps, args.warmup, args.peak_size)
    rows, pairs = preset_rows(group, resolutions), pair_rows(group, presets)
    peaks = group["peak_gflops"]
    result = {"batch": args.batch, "steps": args.steps, "warmup": args.warmup, "machine": common.machine_info(),
              "group": group, "rows": rows, "pairs": pairs}
    common.emit(args, result, [
        (f"Train step per preset, batch {args.batch}, interleaved: median of {args.steps} rounds after "
         f"{args.warmup} warm-up; peak fp32 {peaks['float32']:.0f} / bf16 {peaks['bfloat16']:.0f} GFLOP/s",
         rows, COLUMNS),
        ("Step time vs FLOPs, consecutive presets (deviation = time ratio / FLOP ratio - 1; target ±20 %)",
         pairs, PAIR_COLUMNS)])


if __name__ == "__main__":
    main()
