"""Where a train step's time goes: op time per G/D stage against that stage's FLOPs, and per op class
(tf.profiler trace).

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

The second table splits the same op time by what the ops do (`op_class`: convolution forward, backward
to the input and to the filter, matmuls and einsums, attention softmax, batch norm, the spectral-norm
power iteration and normalisation, casts, slicing/padding/tiling, Adam, the EMA, other elementwise),
and adds the step's **host idle** time: wall time during which no op ran on any executor thread (the
Python side, the launch of the step, waits between ops).
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


CONV_FORWARD, CONV_INPUT, CONV_FILTER = "conv forward", "conv backward-input", "conv backward-filter"
CLASSES = (CONV_FORWARD, CONV_INPUT, CONV_FILTER, "matmul / einsum", "attention softmax", "batch norm",
           "spectral norm", "cast", "slice / pad / tile", "optimizer (Adam)", "EMA", "elementwise and other")
DATA_MOVEMENT = ("StridedSlice", "StridedSliceGrad", "Slice", "Pad", "Tile", "ConcatV2", "Concat", "Reshape",
                 "Transpose", "_MklTranspose", "GatherV2", "Pack", "Unpack", "Split", "SplitV")


def op_class(op_name):
    """The class of one traced op ("<scope>/<name>:<type>"): by its type for convolutions, casts, matmuls
    and data movement; by its scope for the optimizers (``g_adam/``, ``d_adam/``), the EMA (``ema/``),
    the attention softmax (``softmax/``), the spectral-norm power iteration and W/σ (``power_iteration/``)
    and batch norm (``bn``, ``cbn``, ``moments``), gradients included (``gradient_tape/...``)."""
    kind, scope = op_type(op_name), op_name.rsplit(":", 1)[0].lower()
    if "Conv2D" in kind or "Conv2d" in kind:
        return CONV_FILTER if "BackpropFilter" in kind else CONV_INPUT if "BackpropInput" in kind else CONV_FORWARD
    if kind == "Cast":  # wherever it is: the price of the float32 islands of a bfloat16 step
        return "cast"
    if "adam" in scope.split("/")[1 if scope.startswith("statefulpartitionedcall/") else 0]:
        return "optimizer (Adam)"
    if "/ema" in scope or scope.startswith("ema") or "exponential_moving" in scope:
        return "EMA"
    if "Softmax" in kind or "/softmax" in scope:
        return "attention softmax"
    if "/power_iteration" in scope:
        return "spectral norm"
    if "MatMul" in kind or "Einsum" in kind:
        return "matmul / einsum"
    if "BatchNorm" in kind or "/bn" in scope or "/cbn" in scope or "batchnorm" in scope or "/moments" in scope:
        return "batch norm"
    if kind in DATA_MOVEMENT:
        return "slice / pad / tile"
    return "elementwise and other"


def op_events(xspace_path):
    """[(op name, start ps, duration ps)] of the ops run on TF's executor threads in a trace."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(xspace_path, "rb") as f:
        space.ParseFromString(f.read())
    events = []
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
                    events.append((name, line.timestamp_ns * 1000 + event.offset_ps, event.duration_ps))
    return events


def op_times(xspace_path, steps):
    """{op name: milliseconds per step} of the ops run on TF's executor threads in a trace."""
    times = collections.Counter()
    for name, _, duration in op_events(xspace_path):
        times[name] += duration / 1e9 / steps
    return dict(times)


def busy_ms(events):
    """Milliseconds during which at least one of `events` ran: the length of the union of their intervals."""
    total, end = 0, None
    for _, start, duration in sorted(events, key=lambda event: event[1]):
        stop = start + duration
        if end is None or start > end:
            total += duration
            end = stop
        elif stop > end:
            total += stop - end
            end = stop
    return total / 1e9


def class_rows(times, wall_ms, busy_ms_per_step):
    """Op time per class (CLASSES order), each as a share of all op time, then host idle per step."""
    per_class = collections.Counter()
    for name, ms in times.items():
        per_class[op_class(name)] += ms
    total = sum(per_class.values())
    rows = [{"class": name, "op_ms": per_class.get(name, 0.0),
             "op_share_%": 100 * per_class.get(name, 0.0) / total if total else 0.0} for name in CLASSES]
    idle = max(wall_ms - busy_ms_per_step, 0.0)
    rows.append({"class": "host idle (no op running)", "op_ms": idle,
                 "op_share_%": float("nan"), "wall_share_%": 100 * idle / wall_ms if wall_ms else 0.0})
    return rows


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
        events = op_events(path)
        times = op_times(path, args.steps)
    rows, top_rest = stage_rows(times, stage_flops(config))
    classes = class_rows(times, wall_ms, busy_ms(events) / args.steps)
    result = {"config": args.config, "batch": args.batch, "precision": config.mixed_precision,
              "wall_ms_per_step": wall_ms, "op_ms_per_step": sum(times.values()), "machine": common.machine_info(),
              "rows": rows, "rest_op_types": top_rest, "classes": classes}
    common.emit(args, result, [
        (f"{args.config} batch {args.batch} {config.mixed_precision}: op time per stage, per step (traced wall "
         f"{wall_ms:.0f} ms/step, op time {sum(times.values()):.0f} ms/step)", rows, COLUMNS),
        ("Largest op types outside the G/D stages (optimizers, EMA, losses, noise)", top_rest, None),
        (f"{args.config} batch {args.batch} {config.mixed_precision}: op time per op class, per step", classes,
         ["class", "op_ms", "op_share_%", "wall_share_%"])])


if __name__ == "__main__":
    main()
