"""Peak host memory of a train step, pooled vs full vs no attention, plus the attention maps' sizes.

    python benchmarks/memory.py [--configs imagenet64,imagenet128] [--batch64 8 --batch128 4]
        [--precision mixed_bfloat16] [--variants pooled,full,none,ortho] [--layer] [--json]

Each (config, attention) variant runs in its own subprocess (peak RSS is per process and never goes
down): build the model, run `--steps` train steps on an in-memory batch, and report the process's peak
RSS (resource.getrusage ru_maxrss) after building and after the steps, and
tf.config.experimental.get_memory_info('CPU:0') when TF supports it on CPU. The variant "ortho" is
"pooled" with `g_ortho_reg=1e-4`: what the orthogonal penalty on G's kernels costs. The step's transient
memory is peak-after-steps − peak-after-build; attention's part of it is that of the pooled or full
variant minus the no-attention variant's. Analytic sizes: every attention layer holds its logits
[B, N, M] in the compute dtype and its softmax [B, N, M] in float32 (M = N/4 pooled, N full), both
kept for the backward pass, in every forward pass of the step (D step: G forward + D forward on real
and fake; G step: G forward + D forward).

`--layer` measures the attention layer alone instead: for each attention placement (feature size,
channels) of the configs, one subprocess per pooled/full runs a lone SelfAttention forward + backward
and reports TF's CPU allocator peak above the memory at rest. That is the layer's whole working
memory: the maps, and also the f/g/h projections and gradients both variants need, so its ratio is
below the maps'.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

try:
    from benchmarks import common
except ImportError:  # run as a script from benchmarks/
    import common

VARIANTS = {"pooled": dict(pooled_attention=True), "full": dict(pooled_attention=False),
            "none": dict(g_attention=(), d_attention=()),
            "ortho": dict(pooled_attention=True, g_ortho_reg=1e-4)}  # pooled + BigGAN's orthogonal penalty on G
BYTES = {"float32": 4, "mixed_bfloat16": 2, "mixed_float16": 2}
PRECISION_CHOICES = ("auto", *BYTES)


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kB


def attention_placements(config):
    """[(network, feature size, channels)] of every attention layer of `config`."""
    from sagan_tf.models.architecture import discriminator_stages, generator_stages

    stages = {"G": generator_stages(config.resolution, config.ch, config.g_attention),
              "D": discriminator_stages(config.resolution, config.ch, config.image_channels, config.d_attention)}
    return [(network, stage.resolution, stage.out_channels)
            for network, network_stages in stages.items() for stage in network_stages if stage.attention]


def map_bytes(size, batch, precision, pooled):
    """Bytes of one layer's maps on a size×size feature map: logits [B, N, M] in the compute dtype and
    softmax [B, N, M] in float32, M = N/4 pooled or N full."""
    from sagan_tf.runtime.precision import resolve_precision

    n = size * size
    return batch * n * (n // 4 if pooled else n) * (BYTES[resolve_precision(precision)] + 4)


def attention_map_bytes(config, pooled, batch=None):
    """[(network, feature size, bytes of one forward pass's maps)] for every attention layer."""
    batch = batch or config.batch_size
    return [(network, size, map_bytes(size, batch, config.mixed_precision, pooled))
            for network, size, _ in attention_placements(config)]


def step_attention_bytes(config, pooled, batch=None):
    """Attention-map bytes alive over one train step's passes (n_dis=1: G fwd ×2 at batch B, D fwd on 2B
    and on B), the sum over passes: an upper bound of what the step holds at once."""
    batch = batch or config.batch_size
    total = 0
    for network, _, size in attention_map_bytes(config, pooled, batch):
        total += size * (2 if network == "G" else 3) * config.n_dis  # G: 2 passes of B; D: 2B + B
    return total


def worker(preset, batch, variant, precision, steps):
    """Runs in the subprocess: prints one JSON line."""
    import tensorflow as tf

    from benchmarks.train_step import make_step_fn, sync_outputs, variant_config

    config = variant_config(preset, batch, dict(mixed_precision=precision, **VARIANTS[variant]))
    model, fn = make_step_fn(config, tf.distribute.get_strategy())
    after_build = peak_rss_bytes()
    for _ in range(steps):
        sync_outputs(fn())
    info = None
    try:
        info = tf.config.experimental.get_memory_info("CPU:0")
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        info = f"unsupported: {str(error).splitlines()[0][:80]}"
    params = sum(int(tf.size(w)) for w in model.trainable_weights)
    print(json.dumps(dict(preset=preset, batch=batch, variant=variant, precision=precision, steps=steps,
                          peak_rss_after_build=after_build, peak_rss_after_steps=peak_rss_bytes(),
                          memory_info=info, trainable_params=params)))


def layer_worker(size, channels, batch, pooled, precision):
    """Runs in the subprocess: TF allocator peak above the resting memory during one forward + backward
    of a lone SelfAttention layer on a [batch, size, size, channels] map; prints one JSON line."""
    import keras
    import tensorflow as tf

    from sagan_tf.layers.attention import SelfAttention

    keras.mixed_precision.set_global_policy(precision)
    layer = SelfAttention(pooled=pooled, init="normal")
    x = tf.random.normal([batch, size, size, channels])
    layer.build(x.shape)

    @tf.function
    def forward_backward():
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.cast(layer(x, training=True), tf.float32)
            loss = tf.reduce_sum(y * y)
        return tf.add_n([tf.reduce_sum(tf.cast(g, tf.float32)) for g in tape.gradient(loss, [x] + layer.trainable_variables)])

    forward_backward().numpy()  # trace and warm up
    tf.config.experimental.reset_memory_stats("CPU:0")
    resting = tf.config.experimental.get_memory_info("CPU:0")["current"]
    forward_backward().numpy()
    peak = tf.config.experimental.get_memory_info("CPU:0")["peak"]
    print(json.dumps(dict(size=size, channels=channels, batch=batch, pooled=pooled, precision=precision,
                          layer_peak_bytes=peak - resting)))


def layer_rows(preset, batch, precision):
    """One row per attention placement of the preset: pooled vs full layer working memory, measured
    (one subprocess each) and the maps' analytic bytes."""
    config = common.load_preset(preset)
    placements = sorted({(size, channels) for _, size, channels in attention_placements(config)})
    rows = []
    for size, channels in placements:
        measured = {}
        for pooled in (True, False):
            command = [sys.executable, os.path.abspath(__file__),
                       f"--_layer-worker={size},{channels},{batch},{int(pooled)},{precision}"]
            out = subprocess.run(command, stdout=subprocess.PIPE, text=True, cwd=common.ROOT, check=True).stdout
            measured[pooled] = json.loads(out.strip().splitlines()[-1])["layer_peak_bytes"]
        maps = {pooled: map_bytes(size, batch, precision, pooled) for pooled in (True, False)}
        rows.append(dict(config=preset, layer=f"{size}²×{channels}", batch=batch, precision=precision,
                         pooled_layer_MB=measured[True] / 2 ** 20, full_layer_MB=measured[False] / 2 ** 20,
                         layer_ratio=measured[False] / measured[True],
                         pooled_maps_MB=maps[True] / 2 ** 20, full_maps_MB=maps[False] / 2 ** 20,
                         maps_ratio=maps[False] / maps[True]))
    return rows


def run_worker(preset, batch, variant, precision, steps):
    command = [sys.executable, os.path.abspath(__file__), f"--_worker={preset},{batch},{variant},{precision},{steps}"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=common.ROOT)


def main(argv=None):
    parser = common.add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--configs", default="imagenet64,imagenet128")
    parser.add_argument("--batch64", type=int, default=8)
    parser.add_argument("--batch128", type=int, default=4)
    parser.add_argument("--precision", default="mixed_bfloat16", choices=PRECISION_CHOICES)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--variants", default="pooled,full,none,ortho",
                        help=f"comma-separated, of {list(VARIANTS)}")
    parser.add_argument("--parallel", type=int, default=3, help="subprocesses at once (memory is per process)")
    parser.add_argument("--results-json", default=None, help="re-render the results of an earlier --json run")
    parser.add_argument("--layer", action="store_true",
                        help="instead: one SelfAttention layer's forward+backward working memory, pooled vs "
                             "full, at each attention placement of the configs")
    parser.add_argument("--_worker", default=None, dest="worker", help=argparse.SUPPRESS)
    parser.add_argument("--_layer-worker", default=None, dest="layer_worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.variants = args.variants.split(",")
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        parser.error(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")
    from sagan_tf.runtime.precision import resolve_precision
    args.precision = resolve_precision(args.precision)
    if args.layer_worker:
        size, channels, batch, pooled, precision = args.layer_worker.split(",")
        layer_worker(int(size), int(channels), int(batch), bool(int(pooled)), precision)
        return
    if args.layer:
        rows = []
        for preset in args.configs.split(","):
            config = common.load_preset(preset)
            rows += layer_rows(preset, args.batch128 if config.resolution >= 128 else args.batch64, args.precision)
        common.emit(args, dict(machine=common.machine_info(), rows=rows), [
            ("One SelfAttention layer, forward + backward: TF allocator peak above resting memory (measured) "
             "and the attention maps alone (analytic: logits in the compute dtype + float32 softmax)", rows, None)])
        return
    if args.worker:
        preset, batch, variant, precision, steps = args.worker.split(",")
        worker(preset, int(batch), variant, precision, int(steps))
        return
    if args.results_json:
        with open(args.results_json) as f:
            report(args, json.load(f)["results"])
        return

    jobs = []
    for preset in args.configs.split(","):
        config = common.load_preset(preset)
        batch = args.batch128 if config.resolution >= 128 else args.batch64
        for variant in args.variants:
            jobs.append((preset, batch, variant))
    results, running = [], []
    for job in jobs + [None] * args.parallel:
        if job is not None:
            running.append((job, run_worker(*job, args.precision, args.steps)))
        while running and (len(running) >= args.parallel or job is None):
            (preset, batch, variant), process = running.pop(0)
            out, _ = process.communicate()
            if process.returncode:
                results.append(dict(preset=preset, batch=batch, variant=variant, error=process.returncode))
            else:
                results.append(json.loads(out.strip().splitlines()[-1]))
            if job is None:
                break
    report(args, results)


def report(args, results):
    rows, attention_rows = [], []
    for preset in args.configs.split(","):
        config = common.load_preset(preset)
        config.mixed_precision = args.precision
        by_variant = {r["variant"]: r for r in results if r["preset"] == preset and "error" not in r}
        none = by_variant.get("none")
        for variant in getattr(args, "variants", VARIANTS):
            r = by_variant.get(variant)
            if r is None:
                rows.append(dict(config=preset, attention=variant, error="failed"))
                continue
            step_mb = (r["peak_rss_after_steps"] - r["peak_rss_after_build"]) / 2 ** 20
            row = dict(config=preset, batch=r["batch"], attention=variant,
                       build_peak_MB=r["peak_rss_after_build"] / 2 ** 20,
                       step_peak_MB=r["peak_rss_after_steps"] / 2 ** 20, step_delta_MB=step_mb)
            if none is not None:
                row["rss_minus_noattn_MB"] = (r["peak_rss_after_steps"] - none["peak_rss_after_steps"]) / 2 ** 20
            if isinstance(r.get("memory_info"), dict):  # TF's CPU allocator peak (works in TF 2.21)
                row["tf_peak_MB"] = r["memory_info"]["peak"] / 2 ** 20
                if none is not None and isinstance(none.get("memory_info"), dict):
                    row["tf_minus_noattn_MB"] = (r["memory_info"]["peak"] - none["memory_info"]["peak"]) / 2 ** 20
            rows.append(row)
        batch = args.batch128 if config.resolution >= 128 else args.batch64
        for pooled in (True, False):
            layers = attention_map_bytes(config, pooled, batch)
            attention_rows.append(dict(
                config=preset, batch=batch, attention="pooled" if pooled else "full",
                layers=" ".join(f"{net}@{size}²" for net, size, _ in layers),
                one_pass_MB=sum(b for _, _, b in layers) / 2 ** 20,
                step_MB=step_attention_bytes(config, pooled, batch) / 2 ** 20,
                per_image_step_MB=step_attention_bytes(config, pooled, 1) / 2 ** 20))
        for label, key in (("peak RSS", "peak_rss_after_steps"), ("TF allocator peak", "tf_peak")):
            def value(r, key=key):
                if key == "tf_peak":
                    return r["memory_info"]["peak"] if isinstance(r.get("memory_info"), dict) else None
                return r[key]
            if none is None or value(none) is None or any(v not in by_variant or value(by_variant[v]) is None
                                                          for v in ("pooled", "full")):
                continue
            extra = {v: value(by_variant[v]) - value(none) for v in ("pooled", "full")}
            attention_rows.append(dict(config=preset, batch=batch, attention="measured full/pooled",
                                       layers=f"({label} − no-attention {label})", one_pass_MB="",
                                       step_MB=f"{extra['full'] / max(extra['pooled'], 1):.2f}x",
                                       per_image_step_MB=""))
    memory_info = {f"{r['preset']}/{r['variant']}": r.get("memory_info") for r in results}
    common.emit(args, dict(machine=common.machine_info(), precision=args.precision, results=results,
                           rows=rows, attention=attention_rows, memory_info=memory_info),
                [(f"Peak RSS of {args.steps} train steps ({args.precision}), one subprocess per row", rows, None),
                 ("Attention maps, analytic (logits in compute dtype + float32 softmax per layer)",
                  attention_rows, None)])
    info = next(iter(memory_info.values()), None)
    if not args.json:
        print(f"tf.config.experimental.get_memory_info('CPU:0'): {info}")


if __name__ == "__main__":
    main()
