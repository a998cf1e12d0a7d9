"""Per-step host overhead: the train step run one step per execution vs `steps_per_execution` steps.

    python benchmarks/host_overhead.py [--config=fashion_mnist] [--batch N] [--per_execution 8]
                                       [--steps 16] [--rounds 10] [--warmup 1] [--json]

Two models of the preset in one process, compiled with steps_per_execution=1 and =k. A round trains
`--steps` steps (a multiple of k) with each: `--steps` calls of the k=1 train function, `--steps`/k
calls of the k one; after every call the host does what the run's callbacks do once per execution (the
logs read back as floats: the progress bar, the non-finite guard). The two alternate A B, B A, ... so
the machine's drifting load hits both alike. Reported: median ms per step of each, the median per-round
ratio (k=1 / k) with its min–max, and the host overhead per step, (t₁ − t_k) / (1 − 1/k): what one
return to the host costs, beyond the step's own compute.

Timing means something only on a quiet machine: the figures in docs/performance.md come from one.
"""
from __future__ import annotations

import argparse
import os

try:
    from benchmarks import common, train_step
except ImportError:  # run as a script from benchmarks/
    import common
    import train_step


def make_train_calls(config, per_execution):
    """A zero-argument callable running one execution (`per_execution` steps) of the compiled train
    function and reading its logs back as the callbacks do."""
    import numpy as np
    import tensorflow as tf
    from sagan_tf.training import build_model

    config = config.copy_and_resolve_references()
    config.steps_per_execution = per_execution
    model = build_model(config, tf.distribute.get_strategy())
    dataset = tf.data.Dataset.from_tensors(train_step.synthetic_batch(config)).repeat()
    iterator = iter(tf.distribute.get_strategy().experimental_distribute_dataset(dataset))
    model.make_train_function()

    def execution():
        result = model.train_function(iterator)
        result = result.get_value() if hasattr(result, "get_value") else result
        return {name: float(np.asarray(value)) for name, value in result.items()}

    return execution


def run(preset, batch, per_execution, steps, rounds, warmup):
    from sagan_tf.runtime.precision import resolve_precision

    if per_execution < 2 or steps % per_execution:
        raise ValueError(f"--per_execution={per_execution} --steps={steps}: need per_execution >= 2 and steps a "
                         f"multiple of it")
    config = common.load_preset(preset)
    if batch:
        config.batch_size = batch
    config.init = "normal"  # same step cost as orthogonal; builds without the QR decompositions
    config.mixed_precision = resolve_precision(config.mixed_precision)
    calls = {1: make_train_calls(config, 1), per_execution: make_train_calls(config, per_execution)}

    def block(k):
        return lambda: [calls[k]() for _ in range(steps // k)]

    for k in calls:
        for i in range(warmup):
            seconds = common.time_call(block(k))
            train_step.log(f"warm-up {i} of steps_per_execution={k}: {seconds:.2f} s for {steps} steps")
    times = {1: [], per_execution: []}
    for r in range(rounds):  # A B, then B A
        order = (1, per_execution) if r % 2 == 0 else (per_execution, 1)
        for k in order:
            times[k].append(common.time_call(block(k)) / steps)
    ratios = [a / b for a, b in zip(times[1], times[per_execution])]
    one, many = common.median(times[1]), common.median(times[per_execution])
    return dict(config=preset, batch=config.batch_size, precision=config.mixed_precision, per_execution=per_execution,
                steps=steps, rounds=rounds, warmup=warmup, machine=common.machine_info(),
                times={str(k): v for k, v in times.items()}, ms_per_step_1=one * 1e3,
                ms_per_step_k=many * 1e3, ratio_median=common.median(ratios), ratio_min=min(ratios),
                ratio_max=max(ratios), host_overhead_ms_per_return=(one - many) / (1 - 1 / per_execution) * 1e3)


def main(argv=None):
    parser = common.add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--config", default="fashion_mnist", choices=common.PRESETS)
    parser.add_argument("--batch", type=int, default=None, help="global batch (default: the preset's)")
    parser.add_argument("--per_execution", type=int, default=8, help="steps_per_execution compared with 1")
    parser.add_argument("--steps", type=int, default=16, help="steps per timed block (a multiple of --per_execution)")
    parser.add_argument("--rounds", type=int, default=10, help="timed A/B rounds")
    parser.add_argument("--warmup", type=int, default=1, help="untimed blocks of each first (tracing)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.warmup < 0:
        raise SystemExit(f"--rounds={args.rounds} --warmup={args.warmup}: need rounds >= 1 and warmup >= 0")
    try:
        result = run(args.config, args.batch, args.per_execution, args.steps, args.rounds, args.warmup)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    row = {k: result[k] for k in ("config", "batch", "precision", "per_execution", "ms_per_step_1", "ms_per_step_k",
                                  "ratio_median", "ratio_min", "ratio_max", "host_overhead_ms_per_return")}
    title = (f"{result['machine']['cpu']}, {result['machine']['cpus']} cores: median of {args.rounds} A/B rounds of "
             f"{args.steps} steps after {args.warmup} warm-up")
    common.emit(args, result, [(title, [row], None)])


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
