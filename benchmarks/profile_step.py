"""Where a train step's time goes: op time per G/D stage against that stage's FLOPs (tf.profiler trace).

    python benchmarks/profile_step.py --config=imagenet64 [--batch 16] [--precision auto] [--steps 2] [--json]

Traces `--steps` compiled train steps (after two untraced ones) with `tf.profiler`, reads the host
plane of the trace (TF executor threads) and sums each op's duration into the stage it belongs to
(`generator/block2`, `discriminator/attention3`, ..., by the op's name scope; backward ops included)
or into "rest" (optimizers, EMA, losses, noise). FLOPs per stage per step come from the cost model:
G stage = 2·MACs·batch·(n_dis + 3) (a forward in each D step, forward + backward in the G step), D
stage = 2·MACs·batch·(6·n_dis + 3) (forward + backward on real and fake in each D step, and in the G
step). `GFLOP/s` is per second of op time, so stages compare directly: a stage far below the others
computes its FLOPs inefficiently. TF runs up to two ops at once here (inter-op threads), so the
op times add up to more than the wall time of the step.
"""
from __future__ import annotations

import argparse
import collections
import glob
import re
import tempfile
import time

try:
    from benchmarks import common, train_step
except ImportError:  # run as a script from benchmarks/
    import common
    import train_step

STAGE = re.compile(r"(?:^|/)(generator|discriminator)(?:_\d+)?/((?:block|attention)\d+)(?:_\d+)?/")
COLUMNS = ["network", "stage", "GFLOP/step", "op_ms", "op_share_%", "GFLOP/s"]


def stage_of(op_name):
    """('generator', 'block2') for an op inside G's block2 (forward or gradient), else None."""
    match = STAGE.search(op_name)
    return (match.group(1), match.group(2)) if match else None


def op_type(op_name):
    return op_name.rsplit(":", 1)[-1]


def stage_flops(config):
    """{(network, stage): FLOPs per train step} from the cost model."""
    from sagan_tf.models.architecture import model_fields
    from sagan_tf.models.cost import discriminator_macs, generator_macs

    spec, batch, n_dis = model_fields(config), config.batch_size, config.n_dis
    flops = {("generator", name): 2 * macs * batch * (n_dis + 3)
             for name, macs in generator_macs(spec) if name.startswith(("block", "attention"))}
    flops.update({("discriminator", name): 2 * macs * batch * (6 * n_dis + 3)
                  for name, macs in discriminator_macs(spec) if name.startswith(("block", "attention"))})
    return flops


def op_times(xspace_path, steps):
    """{op name: milliseconds per step} of the ops run on TF's executor threads in a trace."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(xspace_path, "rb") as f:
        space.ParseFromString(f.read())
    times = collections.Counter()
    for plane in space.planes:
        names = plane.event_metadata
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = names[event.metadata_id].name
                # Ops are "<op name>:<op type>"; executor bookkeeping ("ExecutorState::Process")
                # encloses them and is skipped.
                if ":" in name and "::" not in name:
                    times[name] += event.duration_ps / 1e9 / steps
    return dict(times)


def stage_rows(times, flops):
    """Rows per stage (in model order) and one 'rest' row; plus the top op types of the rest."""
    per_stage, rest_types = collections.Counter(), collections.Counter()
    for name, ms in times.items():
        key = stage_of(name)
        if key is None:
            rest_types[op_type(name)] += ms
        else:
            per_stage[key] += ms
    total = sum(times.values())
    rows = []
    for key, stage_flop in flops.items():
        ms = per_stage.get(key, 0.0)
        rows.append({"network": key[0][0].upper(), "stage": key[1], "GFLOP/step": stage_flop / 1e9, "op_ms": ms,
                     "op_share_%": 100 * ms / total if total else 0.0,
                     "GFLOP/s": stage_flop / 1e9 / (ms / 1e3) if ms else 0.0})
    rest = sum(rest_types.values())
    rows.append({"network": "-", "stage": "rest", "GFLOP/step": 0.0, "op_ms": rest,
                 "op_share_%": 100 * rest / total if total else 0.0, "GFLOP/s": 0.0})
    top_rest = [{"op_type": kind, "op_ms": ms} for kind, ms in rest_types.most_common(8)]
    return rows, top_rest


def main(argv=None):
    parser = common.add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--config", default="imagenet64", choices=common.PRESETS)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--precision", default="auto", choices=("auto", "float32", "mixed_bfloat16"), help="auto, float32 or mixed_bfloat16")
    parser.add_argument("--steps", type=int, default=2, help="traced steps")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.steps < 1:
        parser.error(f"--batch and --steps must be >= 1, got {args.batch} and {args.steps}")

    import tensorflow as tf
    config = train_step.variant_config(args.config, args.batch, dict(mixed_precision=args.precision))
    _, step = train_step.make_step_fn(config, tf.distribute.get_strategy())
    for _ in range(2):
        train_step.sync_outputs(step())
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        for _ in range(args.steps):
            train_step.sync_outputs(step())
        wall_ms = (time.perf_counter() - start) * 1e3 / args.steps
        tf.profiler.experimental.stop()
        path = sorted(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True))[-1]
        times = op_times(path, args.steps)
    rows, top_rest = stage_rows(times, stage_flops(config))
    result = {"config": args.config, "batch": args.batch, "precision": config.mixed_precision,
              "wall_ms_per_step": wall_ms, "op_ms_per_step": sum(times.values()), "machine": common.machine_info(),
              "rows": rows, "rest_op_types": top_rest}
    common.emit(args, result, [
        (f"{args.config} batch {args.batch} {config.mixed_precision}: op time per stage, per step (traced wall "
         f"{wall_ms:.0f} ms/step, op time {sum(times.values()):.0f} ms/step)", rows, COLUMNS),
        ("Largest op types outside the G/D stages (optimizers, EMA, losses, noise)", top_rest, None)])


if __name__ == "__main__":
    main()
