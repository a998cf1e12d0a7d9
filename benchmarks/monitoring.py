"""What the monitoring costs: the train step with and without its health signals, and one log point.

    python benchmarks/monitoring.py [--config=fashion_mnist] [--batch N] [--steps 20] [--warmup 2] [--json]

Three things timed interleaved, round by round, in one process (so the machine's load, which drifts,
hits all of them alike; the two steps swap places every round):

* `with_health`: the train step as trained (`SAGAN(health=True)`): losses, D outputs, the hinge
  active fractions and the G/D gradient norms;
* `without_health`: the same step returning only the losses and D outputs (`health=False`);
* `log_point`: what `ScalarSummaries` does every `log_every` steps: `model.health_scalars()` (attention
  γ, σ = ‖W u‖ of every spectrally normalised layer, learning rates) and writing every scalar to an
  events file, with a flush.

Reported: the median step times, the per-round ratio with/without (median, and min–max over rounds),
and the log point's time amortised over the preset's `log_every`, as a share of the step.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

try:
    from benchmarks import common, train_step
except ImportError:  # run as a script from benchmarks/
    import common
    import train_step


def make_step(config, health):
    """(model, zero-argument callable running one compiled train step) with or without the health signals."""
    import tensorflow as tf
    from sagan_tf.training import build_model

    model = build_model(config, tf.distribute.get_strategy())
    model.health = health  # read when the train function is traced, just below
    iterator = iter(tf.data.Dataset.from_tensors(train_step.synthetic_batch(config)).repeat())
    model.make_train_function()
    return model, lambda: model.train_function(iterator)


def run(preset, batch, rounds, warmup):
    import numpy as np
    from sagan_tf.runtime.precision import resolve_precision

    config = common.load_preset(preset)
    if batch:
        config.batch_size = batch
    config.init = "normal"  # same step cost as orthogonal; builds without the QR decompositions
    config.mixed_precision = resolve_precision(config.mixed_precision)
    with_model, with_fn = make_step(config, health=True)
    _, without_fn = make_step(config, health=False)
    sync = train_step.sync_outputs
    logs = {}

    def step_with():
        result = with_fn()
        logs.update({name: float(np.asarray(value)) for name, value in
                     (result.get_value() if hasattr(result, "get_value") else result).items()})
        return result

    import tensorflow as tf
    from sagan_tf.training import callbacks as cb
    with tempfile.TemporaryDirectory() as directory:
        summaries = cb.ScalarSummaries(tf.summary.create_file_writer(directory), every=1)
        summaries.set_model(with_model)
        log_point = lambda: summaries.on_train_batch_end(0, dict(logs, img_per_s=1.0))  # noqa: E731
        fns = {"with_health": step_with, "without_health": without_fn, "log_point": log_point}
        for name, fn in fns.items():
            for i in range(warmup):
                start = time.perf_counter()
                result = fn()
                if result is not None:
                    sync(result)
                train_step.log(f"warm-up {i} of {name}: {time.perf_counter() - start:.2f} s")
        times = {name: [] for name in fns}
        for r in range(rounds):  # A B log, then B A log: neither step always runs right after the other
            order = ("with_health", "without_health") if r % 2 == 0 else ("without_health", "with_health")
            for name in order + ("log_point",):
                times[name].append(common.time_call(fns[name], lambda result: sync(result) if result is not None
                                                    else None))
    ratios = [a / b for a, b in zip(times["with_health"], times["without_health"])]
    step = common.median(times["without_health"])
    log_ms = common.median(times["log_point"]) * 1e3
    return dict(
        config=preset, batch=config.batch_size, precision=config.mixed_precision, rounds=rounds, warmup=warmup,
        log_every=config.log_every, machine=common.machine_info(), times=times,
        with_health_ms=common.median(times["with_health"]) * 1e3, without_health_ms=step * 1e3,
        ratio_median=common.median(ratios), ratio_min=min(ratios), ratio_max=max(ratios),
        log_point_ms=log_ms, log_point_share_pct=100 * log_ms / 1e3 / config.log_every / step)


def main(argv=None):
    parser = common.add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--config", default="fashion_mnist", choices=common.PRESETS)
    parser.add_argument("--batch", type=int, default=None, help="global batch (default: the preset's)")
    parser.add_argument("--steps", type=int, default=20, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls of each first")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        raise SystemExit(f"--steps={args.steps} --warmup={args.warmup}: need steps >= 1 and warmup >= 0")
    result = run(args.config, args.batch, args.steps, args.warmup)
    row = {k: result[k] for k in ("config", "batch", "precision", "with_health_ms", "without_health_ms",
                                  "ratio_median", "ratio_min", "ratio_max", "log_point_ms", "log_every",
                                  "log_point_share_pct")}
    title = (f"{result['machine']['cpu']}, {result['machine']['cpus']} cores: median of {args.steps} interleaved "
             f"rounds after {args.warmup} warm-up")
    common.emit(args, result, [(title, [row], None)])


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
