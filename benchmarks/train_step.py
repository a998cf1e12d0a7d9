"""Train-step throughput and MFU of the SAGAN train step, variant by variant, timed interleaved.

    python benchmarks/train_step.py --config=imagenet64 [--batch 16 --steps 5 --warmup 2]
        [--variants bf16,bf16_xla,fp32,...] [--check-xla] [--json]

One "step" is one `SAGAN.train_step` (n_dis D updates + one G update + EMA) called through Keras'
own compiled train function (`model.make_train_function()`, what `fit` runs), on an in-memory
repeated batch, so the input pipeline costs nothing. Every round times one step of each variant
and one float32 and one bfloat16 peak matmul (benchmarks/peak.py), so MFU is computed from timings
taken under the same load: `MFU_%` = achieved FLOP/s ÷ the machine's best peak of that round (the
faster of the two precisions: what this CPU can do), `MFU_prec_%` = the same against the peak of
the variant's own precision (flattering where that precision is emulated). FLOPs per step =
`cost.train_step_flops(spec, n_dis) × batch` (the architecture's convolutions, linears and attention
matmuls; backward = 2× forward).

Variants (name: overrides of the preset): a base, optionally followed by one suffix.
  auto                    base: the trainer's default, mixed_precision="auto" resolved on this machine
                          (mixed_bfloat16 where bfloat16 is native, e.g. AMX; float32 elsewhere)
  fp32, bf16              bases: tf.function, float32 / mixed_bfloat16
  <base>_xla              jit_compile=True (XLA)
  <base>_full             full (un-pooled) attention
  <base>_noattn           no attention layers at all (attention share = 1 − t_noattn / t)
  <base>_plain            fused_resample=False: upsample→conv and conv→pool in their plain form
                          (same function and FLOPs for MFU; `vs_first` of auto_plain against auto is the
                          speed-up of the fused blocks)
  <base>_1dev, <base>_2dev_local, <base>_2dev_sync
                          run together in a subprocess whose CPU is split into 2 logical devices
                          (default strategy vs MirroredStrategy with local or synchronized BN).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

try:
    from benchmarks import common, peak
except ImportError:  # run as a script from benchmarks/
    import common
    import peak

BASE_VARIANTS = {
    "auto": dict(mixed_precision="auto", jit_compile=False),
    "fp32": dict(mixed_precision="float32", jit_compile=False),
    "bf16": dict(mixed_precision="mixed_bfloat16", jit_compile=False),
}
SUFFIXES = {
    "": {},
    "_xla": dict(jit_compile=True),
    "_full": dict(pooled_attention=False),
    "_noattn": dict(g_attention=(), d_attention=()),
    "_plain": dict(fused_resample=False),
    "_1dev": dict(devices=1),
    "_2dev_local": dict(devices=2, sync_bn=False),
    "_2dev_sync": dict(devices=2, sync_bn=True),
}
DEFAULT_VARIANTS = ("auto", "auto_plain", "fp32", "bf16", "fp32_xla", "bf16_xla", "auto_full", "auto_noattn",
                    "auto_1dev", "auto_2dev_local", "auto_2dev_sync")
PEAK_PRECISION = {"float32": "float32", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}
COLUMNS = ["variant", "precision", "xla", "attention", "bn", "devices", "batch", "step_ms", "img/s",
           "GFLOP/step", "GFLOP/s", "MFU_%", "MFU_prec_%", "vs_first"]


def log(message):
    print(f"[train_step {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def variant_overrides(name):
    """The config overrides of a variant name, plus 'devices' (1 or 2)."""
    for base, base_overrides in BASE_VARIANTS.items():
        if name == base or name.startswith(base + "_"):
            suffix = name[len(base):]
            if suffix in SUFFIXES:
                overrides = dict(devices=1, **base_overrides)
                overrides.update(SUFFIXES[suffix])
                return overrides
    raise ValueError(f"unknown variant {name!r}: a base {sorted(BASE_VARIANTS)} followed by one of "
                     f"{sorted(SUFFIXES)}")


def variant_config(preset, batch, overrides):
    config = common.load_preset(preset)
    config.batch_size = batch
    # N(0, 0.02) instead of orthogonal: identical step cost, but building a 64²/128² model no longer
    # spends tens of seconds in QR decompositions of the large kernels.
    config.init = "normal"
    config.update({k: v for k, v in overrides.items() if k != "devices"})
    from sagan_tf.runtime.precision import resolve_precision
    config.mixed_precision = resolve_precision(config.mixed_precision)
    return config


def step_flops(config):
    from sagan_tf.models.architecture import model_fields
    from sagan_tf.models.cost import train_step_flops
    return train_step_flops(model_fields(config), config.n_dis) * config.batch_size


def sync_outputs(result):
    """Waits for a train function's outputs (an Optional of the logs dict, or the logs)."""
    import tensorflow as tf
    if hasattr(result, "get_value"):
        result = result.get_value()
    for tensor in tf.nest.flatten(result):
        if hasattr(tensor, "numpy"):
            tensor.numpy()


def synthetic_batch(config, seed=0):
    import tensorflow as tf
    n = config.batch_size * config.n_dis
    shape = [n, config.resolution, config.resolution, config.image_channels]
    images = tf.random.stateless_uniform(shape, seed=[seed, 0], minval=-1.0, maxval=1.0)
    labels = tf.random.stateless_uniform([n], seed=[seed, 1], minval=0, maxval=max(config.num_classes, 1),
                                         dtype=tf.int32)
    return images, labels


def make_step_fn(config, strategy):
    """(model, zero-argument callable running one compiled train step) for `config` under `strategy`."""
    import tensorflow as tf
    from sagan_tf.training import build_model

    model = build_model(config, strategy)
    dataset = tf.data.Dataset.from_tensors(synthetic_batch(config)).repeat()
    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    model.make_train_function()
    return model, lambda: model.train_function(iterator)


def run_variants(preset, batch, names, rounds, warmup, peak_size, devices=1):
    """Times `names` (all with the same device count) interleaved with the peak matmuls, in this process.

    Returns {"peak_gflops": {...}, "peak_size": ..., "peak_times": {...}, "variants": {name: {...}}}.
    """
    import tensorflow as tf
    from sagan_tf.runtime.strategy import split_cpu

    if devices > 1:
        split_cpu(devices)
    # One MirroredStrategy shared by every multi-device variant: two strategy objects in one process
    # hand out colliding collective instance keys (sync-BN all-reduces then meet the other model's
    # gradient all-reduce: "Shape mismatch in the collective instance").
    strategies, configs = {}, {}
    for name in names:
        overrides = variant_overrides(name)
        n = overrides["devices"]
        if n not in strategies:
            strategies[n] = (tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(n)]) if n > 1
                             else tf.distribute.get_strategy())
        configs[name] = (variant_config(preset, batch, overrides), strategies[n], n)
    return time_configs(configs, rounds, warmup, peak_size)


def time_configs(configs, rounds, warmup, peak_size):
    """Builds a train step for every {label: (config, strategy, devices)} and times them interleaved
    with the peak matmuls: `warmup` untimed steps each (reported), then `rounds` rounds."""
    fns = {}
    for label, (config, strategy, _) in configs.items():
        start = time.perf_counter()
        _, fns[label] = make_step_fn(config, strategy)
        log(f"built {label} in {time.perf_counter() - start:.1f} s")
    peak_fns = {f"peak_{p}": fn for p, fn in peak.peak_fns(peak_size).items()}
    sync = lambda r: sync_outputs(r) if not hasattr(r, "numpy") else r.numpy()  # noqa: E731
    for label, fn in fns.items():  # warm-up, reported (tracing / XLA compilation)
        for i in range(warmup):
            log(f"warm-up {i} of {label}: {common.time_call(fn, sync):.1f} s")
    for fn in peak_fns.values():
        sync(fn())
    times = common.interleaved({**fns, **peak_fns}, rounds=rounds, warmup=0, sync=sync)
    for label in fns:
        log(f"{label}: " + ", ".join(f"{t * 1e3:.0f}" for t in times[label]) + " ms")
    peaks = peak.peak_from_times({p: times[f"peak_{p}"] for p in peak.PRECISIONS}, peak_size)
    results = {}
    for label, (config, _, devices) in configs.items():
        results[label] = dict(
            precision=config.mixed_precision, xla=bool(config.jit_compile),
            attention=("none" if not (config.g_attention or config.d_attention)
                       else "pooled" if config.pooled_attention else "full"),
            bn="sync" if config.sync_bn else "local", devices=devices, batch=config.batch_size,
            n_dis=config.n_dis, flops_per_step=step_flops(config), times=times[label])
    return {"peak_gflops": peaks, "peak_size": peak_size, "peak_times": {p: times[f"peak_{p}"] for p in peak.PRECISIONS},
            "variants": results}


def run_in_subprocess(preset, batch, names, rounds, warmup, peak_size, devices):
    command = [sys.executable, os.path.abspath(__file__), f"--config={preset}", f"--batch={batch}",
               f"--steps={rounds}", f"--warmup={warmup}", f"--peak-size={peak_size}",
               f"--variants={','.join(names)}", f"--_worker-devices={devices}"]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, cwd=common.ROOT)
    if done.returncode:
        log(f"subprocess for {names} failed (exit {done.returncode})")
        return None
    return json.loads(done.stdout[done.stdout.index("{"):])


def paired_ratio(numerators, denominators):
    """Median over rounds of numerator[r] / denominator[r]: both were timed in the same round, so
    the machine's load, which drifts between rounds, largely cancels."""
    return common.median(n / d for n, d in zip(numerators, denominators))


def summarise(group):
    """Rows for one group (one process): median step time, img/s, GFLOP/s, MFU and speed-up.

    MFU is the median over rounds of (step FLOPs / step time) / (matmul FLOPs / matmul time), pairing
    each step with a peak matmul timed in the same round: the faster precision's for `MFU_%` (the
    machine's peak), the variant's own precision's for `MFU_prec_%`. `vs_first` is the median over
    rounds of t(first variant) / t(variant).
    """
    rows = []
    variants = group["variants"]
    first = next(iter(variants.values()), None)
    size = group.get("peak_size", 4096)
    for name, v in variants.items():
        seconds = common.median(v["times"])
        precision = PEAK_PRECISION[v["precision"]]
        peak_times = group["peak_times"][precision]
        per_round_mfu = [common.mfu(v["flops_per_step"], t, peak.matmul_flops(size) / tp)
                         for t, tp in zip(v["times"], peak_times)]
        best_peak_times = [min(round_times) for round_times in zip(*group["peak_times"].values())]
        per_round_best = [common.mfu(v["flops_per_step"], t, peak.matmul_flops(size) / tp)
                          for t, tp in zip(v["times"], best_peak_times)]
        rows.append(dict(variant=name, precision=v["precision"].replace("mixed_", ""), xla=v["xla"],
                         attention=v["attention"], bn=v["bn"], devices=v["devices"], batch=v["batch"],
                         step_ms=seconds * 1e3, **{"img/s": v["batch"] / seconds},
                         **{"GFLOP/step": v["flops_per_step"] / 1e9},
                         **{"GFLOP/s": v["flops_per_step"] / seconds / 1e9},
                         **{"MFU_%": 100 * common.median(per_round_best)},
                         **{"MFU_prec_%": 100 * common.median(per_round_mfu)},
                         vs_first=paired_ratio(first["times"], v["times"]),
                         peak_gflops=group["peak_gflops"][precision]))
    return rows


def attention_share(group):
    """[{variant, share}] for every X / X_noattn pair of a group: 1 − median_r t_noattn[r] / t_X[r]."""
    variants, shares = group["variants"], []
    for name, v in variants.items():
        if not name.endswith("_noattn"):
            continue
        # X_noattn pairs with X, or with auto when auto resolved to X's precision.
        candidates = [n for n in (name[:-len("_noattn")], "auto")
                      if n in variants and variants[n]["precision"] == v["precision"]]
        if candidates:
            base = candidates[0]
            with_attention = variants[base]
            flops_with, flops_without = with_attention["flops_per_step"], v["flops_per_step"]
            shares.append(dict(variant=base, step_ms=common.median(with_attention["times"]) * 1e3,
                               noattn_step_ms=common.median(v["times"]) * 1e3,
                               measured_share_pct=100 * (1 - paired_ratio(v["times"], with_attention["times"])),
                               flop_share_pct=100 * (1 - flops_without / flops_with)))
    return shares


def _table_replica_noise(model, local_batch, draws=64, seed=1234):
    """A replacement for SAGAN.replica_noise that reads z and labels from a constant table.

    tf.random.stateless_* with a seed computed at run time (the train step's (seed, step, purpose))
    draws different numbers inside an XLA cluster than TF's kernels do, whatever `alg` (even
    'philox'; only constant seeds match, because TF folds them before XLA sees them). Reading the
    noise from a table indexed by step × (n_dis + 1) + purpose gives both runs the same inputs, so
    any remaining difference is the compiler's. Single replica only.
    """
    import numpy as np
    import tensorflow as tf

    rng = np.random.RandomState(seed)
    z_table = tf.constant(rng.normal(size=(draws, local_batch, model.z_dim)).astype("float32"))
    label_table = tf.constant(rng.randint(0, max(model.num_classes, 1), size=(draws, local_batch)).astype("int32"))

    def replica_noise(batch, purpose):
        index = tf.cast(model.step, tf.int32) * (model.n_dis + 1) + purpose
        return tf.gather(z_table, index)[:batch], tf.gather(label_table, index)[:batch]
    return replica_noise


def check_xla(preset, batch, precision="float32", steps=1):
    """Runs `steps` identical steps with and without XLA from the same initial weights and data.

    Returns the losses of the last step and relative L2 differences of the trainable weights,
    with the noise drawn as training draws it ("default") and read from a constant table ("table",
    identical in both runs, see `_table_replica_noise`).
    """
    import numpy as np
    import tensorflow as tf

    out = {}
    for rng in ("default", "table"):
        models = {}
        for jit in (False, True):
            config = variant_config(preset, batch, dict(mixed_precision=precision, jit_compile=jit))
            model, fn = make_step_fn(config, tf.distribute.get_strategy())
            if rng == "table":
                model.replica_noise = _table_replica_noise(model, config.batch_size)
            for _ in range(steps):
                result = fn()
            if hasattr(result, "get_value"):
                result = result.get_value()
            row = {k: float(np.asarray(v)) for k, v in result.items() if k in ("d_loss", "g_loss", "d_real", "d_fake")}
            out[f"{'xla' if jit else 'tf_function'} (rng {rng})"] = row
            models[jit] = model
        pairs = [(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
                 for a, b in zip(models[False].trainable_weights, models[True].trainable_weights)]
        # Relative L2 difference of the whole weight vector, and the largest per-tensor one among
        # tensors that are not near zero (γ and biases start at 0; after a few Adam steps of ±lr a
        # sign flip of a near-zero gradient makes their relative error meaningless).
        total = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in pairs) / sum(np.sum(a ** 2) for a, _ in pairs))
        per_tensor = [np.linalg.norm(a - b) / np.linalg.norm(a) for a, b in pairs if np.linalg.norm(a) > 1e-2]
        out[f"max_rel_weight_diff_rng_{rng}"] = float(np.max(per_tensor))
        out[f"global_rel_weight_diff_rng_{rng}"] = float(total)
    out["precision"], out["steps"] = precision, steps
    return out


def main(argv=None):
    parser = common.add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--config", default="fashion_mnist", choices=common.PRESETS)
    parser.add_argument("--batch", type=int, default=None, help="global batch (default: the preset's)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (rounds) per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    parser.add_argument("--peak-size", type=int, default=4096)
    parser.add_argument("--check-xla", action="store_true", help="also compare XLA with tf.function steps")
    parser.add_argument("--check-steps", type=int, default=1)
    parser.add_argument("--_worker-devices", type=int, default=0, dest="worker_devices", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    batch = args.batch or common.load_preset(args.config).batch_size
    names = [n for n in args.variants.split(",") if n]

    if args.worker_devices:  # subprocess: one group, JSON on stdout
        group = run_variants(args.config, batch, names, args.steps, args.warmup, args.peak_size,
                             args.worker_devices)
        print(json.dumps(group, default=float))
        return

    multi = [n for n in names if variant_overrides(n)["devices"] > 1 or n.endswith("_1dev")]
    local = [n for n in names if n not in multi]
    groups = []
    if local:
        groups.append(("in-process", run_variants(args.config, batch, local, args.steps, args.warmup,
                                                  args.peak_size)))
    if multi:
        groups.append(("2 logical devices (subprocess)",
                       run_in_subprocess(args.config, batch, multi, args.steps, args.warmup, args.peak_size, 2)))
    result = {"config": args.config, "batch": batch, "steps": args.steps, "warmup": args.warmup,
              "machine": common.machine_info(), "groups": {}}
    tables = []
    for label, group in groups:
        if group is None:
            result["groups"][label] = None
            continue
        rows = summarise(group)
        result["groups"][label] = dict(group, rows=rows, attention_share=attention_share(group))
        peaks = group["peak_gflops"]
        tables.append((f"{args.config} batch {batch}, {label}: median of {args.steps} steps after {args.warmup} "
                       f"warm-up; peak fp32 {peaks['float32']:.0f} / bf16 {peaks['bfloat16']:.0f} GFLOP/s",
                       rows, COLUMNS))
        shares = attention_share(group)
        if shares:
            tables.append((f"{args.config}: attention share of step time", shares, None))
    if args.check_xla:
        check = check_xla(args.config, batch, steps=args.check_steps)
        result["xla_check"] = check
        rows = [dict(run=k, **v) for k, v in check.items() if isinstance(v, dict)]
        tables.append((f"{args.config} batch {batch}: {check['steps']} float32 step(s), XLA vs tf.function; max "
                       f"relative L2 weight difference (all weights / worst tensor): noise as in training "
                       f"{check['global_rel_weight_diff_rng_default']:.1e} / {check['max_rel_weight_diff_rng_default']:.1e}, "
                       f"same noise table {check['global_rel_weight_diff_rng_table']:.1e} / "
                       f"{check['max_rel_weight_diff_rng_table']:.1e}", rows, None))
    common.emit(args, result, tables)


if __name__ == "__main__":
    main()
