"""Serving throughput: the exported SavedModel (loaded signature) vs the eager Keras generator.

    python benchmarks/serving.py [--resolutions=32,128] [--batch_sizes=1,8,64] [--ch=64] [--iters=3] [--json]
        [--json_out=results.json] [--variants=savedmodel,keras_eager,generate]

For each resolution the generator of the matching preset (32²: cifar10, 64²: imagenet64, 128²:
imagenet128; ``--ch`` overrides the width) is built in float32 with random weights, exported with
`export.saved_model.export_generator` (the same code path as a real export) and loaded back with
``tf.saved_model.load``. Each round times one call of every variant at every batch size, side by
side, so machine load hits all variants alike; the table reports the median over ``--iters`` rounds
after one untimed warm-up call:

* ``savedmodel``: ``signatures["serving_default"](z=..., label=...)`` — what TF-Serving runs;
* ``keras_eager``: ``G((z, labels), training=False)`` called eagerly (no tf.function);
* ``generate``: ``signatures["generate"]`` — server-side noise, uint8 conversion and PNG encoding;
* ``savedmodel_bf16`` (not in the default list): ``serving_default`` of the same weights exported with
  ``compute_dtype=bfloat16`` (``--compute_dtype`` of export.saved_model); the table adds its speed
  relative to the float32 SavedModel. Only worth it where bfloat16 is native (``lscpu | grep amx``).
* ``grpc`` / ``grpc_bf16`` (not in the default list): ``serving_default`` of the float32 / bfloat16-compute
  export through ``python -m export.grpc_server``, a subprocess on a loopback port, called with
  tensorflow-serving-api's Predict on one channel kept open (``export.client.GrpcClient``): what a client
  of a server on the same machine gets, request encoding and the response's bytes included. The table
  adds each one's speed relative to its in-process call.

Weights are random: throughput does not depend on their values. 128² at ch=64 is ~9 GMAC per image,
slow on a 2-core CPU: keep ``--iters`` small there.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PRESET_FOR_RESOLUTION = {32: "cifar10", 64: "imagenet64", 128: "imagenet128"}
VARIANTS = ("savedmodel", "keras_eager", "generate", "savedmodel_bf16", "grpc", "grpc_bf16")
DEFAULT_VARIANTS = VARIANTS[:3]


def _ints(text):
    return [int(part) for part in text.split(",") if part.strip()]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolutions", type=_ints, default=[32, 128], help="comma list of 32, 64, 128")
    parser.add_argument("--batch_sizes", type=_ints, default=[1, 8, 64])
    parser.add_argument("--ch", type=int, default=64, help="generator width (the presets use 64)")
    parser.add_argument("--iters", type=int, default=3, help="timed rounds per (resolution, batch, variant)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per (resolution, batch, variant)")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help=f"comma list of {VARIANTS}")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--json_out", default=None, help="also write the JSON results to this file")
    args = parser.parse_args(argv)
    for resolution in args.resolutions:
        if resolution not in PRESET_FOR_RESOLUTION:
            parser.error(f"--resolutions: {resolution} not in {sorted(PRESET_FOR_RESOLUTION)}")
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = set(args.variants) - set(VARIANTS)
    if unknown or not args.variants:
        parser.error(f"--variants: unknown {sorted(unknown)}; allowed {VARIANTS}")
    if args.ch < 8 or args.iters < 1 or args.warmup < 0 or min(args.batch_sizes) < 1:
        parser.error("need --ch >= 8, --iters >= 1, --warmup >= 0 and batch sizes >= 1")
    return args


def load_preset(name):
    import importlib.util
    spec = importlib.util.spec_from_file_location(f"preset_{name}", os.path.join(ROOT, "configs", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def serve_over_grpc(version_dir, workdir, stack):
    """A fn(batch inputs) that calls `version_dir` served by a grpc_server subprocess (stopped by `stack`)."""
    from export.client import GrpcClient
    try:
        from benchmarks.server_process import MODEL_NAME, ServerProcess
    except ImportError:  # run as a script from benchmarks/
        from server_process import MODEL_NAME, ServerProcess

    server = ServerProcess(version_dir, read_timeout=60,
                           log_path=os.path.join(workdir, f"server-{os.path.basename(version_dir)}.log"))
    stack.callback(server.stop)
    server.wait_ready()
    client = stack.enter_context(GrpcClient(server.address))
    return lambda b: client.predict(MODEL_NAME, "serving_default", {"z": b["z"].numpy(),
                                                                    "label": b["label"].numpy()})["images"]


def build_variants(resolution, ch, workdir, names, stack):
    """({variant: fn(batch inputs)}, model fields) for one resolution; servers it starts are stopped by
    the contextlib.ExitStack `stack`."""
    import keras
    import tensorflow as tf

    from export.saved_model import export_generator
    from sagan_tf.models import Generator
    from sagan_tf.models.architecture import model_fields

    config = load_preset(PRESET_FOR_RESOLUTION[resolution])
    config.ch = ch
    spec = model_fields(config)
    keras.utils.set_random_seed(0)
    generator = Generator(spec, dtype="float32")
    generator.build()
    version_dir = export_generator(generator, os.path.join(workdir, f"res{resolution}"), version=1)
    loaded = tf.saved_model.load(version_dir)
    serve, generate = loaded.signatures["serving_default"], loaded.signatures["generate"]
    if {"savedmodel_bf16", "grpc_bf16"} & set(names):  # the same weights, bfloat16 compute (--compute_dtype=bfloat16)
        bf16_generator = Generator(spec, dtype="mixed_bfloat16", name="ema_generator")
        bf16_generator.build()
        bf16_generator.set_weights(generator.get_weights())
        bf16_dir = export_generator(bf16_generator, os.path.join(workdir, f"res{resolution}"), version=2)
        serve_bf16 = tf.saved_model.load(bf16_dir).signatures["serving_default"]
    grpc_fp32 = serve_over_grpc(version_dir, workdir, stack) if "grpc" in names else None
    grpc_bf16 = serve_over_grpc(bf16_dir, workdir, stack) if "grpc_bf16" in names else None
    fns = {
        "grpc": lambda b: grpc_fp32(b),
        "grpc_bf16": lambda b: grpc_bf16(b),
        "savedmodel_bf16": lambda b: serve_bf16(z=b["z"], label=b["label"])["images"],
        "savedmodel": lambda b: serve(z=b["z"], label=b["label"])["images"],
        "keras_eager": lambda b: generator((b["z"], b["label"]), training=False),
        "generate": lambda b: generate(label=b["label"], seed=b["seed"], truncation=b["truncation"])["png"],
    }
    return {name: fns[name] for name in names}, spec


def make_batch(batch, spec, seed=0):
    import numpy as np
    import tensorflow as tf
    rng = np.random.default_rng(seed)
    classes = max(spec["num_classes"], 1)
    return {"z": tf.constant(rng.standard_normal((batch, spec["z_dim"])), tf.float32),
            "label": tf.constant(rng.integers(0, classes, batch), tf.int32),
            "seed": tf.constant(np.arange(batch), tf.int64), "truncation": tf.zeros([batch], tf.float32)}


def time_call(fn, batch):
    import numpy as np

    start = time.perf_counter()
    result = fn(batch)
    _ = np.asarray(result)  # wait for the values (a tensor's; a served response is numpy already)
    return time.perf_counter() - start


RATIOS = (  # (column, numerator variant, denominator variant)
    ("SavedModel/eager", "savedmodel", "keras_eager"),
    ("bf16/fp32 SavedModel", "savedmodel_bf16", "savedmodel"),
    ("gRPC/in-process", "grpc", "savedmodel"),
    ("gRPC bf16/in-process", "grpc_bf16", "savedmodel_bf16"),
    ("gRPC bf16/fp32", "grpc_bf16", "grpc"),
)


def time_resolution(args, resolution, workdir):
    """The table's rows of one resolution: every variant at every batch size, in interleaved rounds."""
    with contextlib.ExitStack() as stack:
        variants, spec = build_variants(resolution, args.ch, workdir, args.variants, stack)
        batches = {b: make_batch(b, spec) for b in args.batch_sizes}
        times = {(b, v): [] for b in args.batch_sizes for v in variants}
        for b in args.batch_sizes:
            for name, fn in variants.items():
                for _ in range(args.warmup):
                    time_call(fn, batches[b])
        for _ in range(args.iters):  # interleaved rounds
            for b in args.batch_sizes:
                for name, fn in variants.items():
                    times[(b, name)].append(time_call(fn, batches[b]))
    rows = []
    for b in args.batch_sizes:
        row = {"resolution": resolution, "ch": args.ch, "batch": b}
        for name in variants:
            seconds = statistics.median(times[(b, name)])
            row[f"{name}_img_per_s"] = b / seconds
            row[f"{name}_ms_per_batch"] = 1000 * seconds
        for column, numerator, denominator in RATIOS:
            if numerator in variants and denominator in variants:
                row[column] = row[f"{numerator}_img_per_s"] / row[f"{denominator}_img_per_s"]
        rows.append(row)
    return rows


def benchmark(args):
    import tensorflow as tf

    workdir = tempfile.mkdtemp(prefix="sagan-serving-bench-")
    try:
        rows = [row for resolution in args.resolutions for row in time_resolution(args, resolution, workdir)]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"rows": rows, "iters": args.iters, "warmup": args.warmup, "tensorflow": tf.__version__,
            "cpus": os.cpu_count(), "variants": args.variants}


def format_table(result):
    variants = result["variants"]
    ratios = [column for column, numerator, denominator in RATIOS if {numerator, denominator} <= set(variants)]
    header = ["res", "ch", "batch"] + [f"{v} img/s" for v in variants] + ratios
    lines = [header]
    for row in result["rows"]:
        line = [f"{row['resolution']}²", str(row["ch"]), str(row["batch"])]
        line += [f"{row[f'{v}_img_per_s']:.1f}" for v in variants]
        line += [f"{row[column]:.2f}x" for column in ratios]
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in lines]
    text.insert(1, "  ".join("-" * width for width in widths))
    text.append(f"(median of {result['iters']} interleaved rounds after {result['warmup']} warm-up call(s); "
                f"TF {result['tensorflow']}, {result['cpus']} CPUs; generate = server-side noise + uint8 + PNG; "
                f"gRPC = export.grpc_server on loopback, one open channel)")
    return "\n".join(text)


def main(argv=None):
    args = parse_args(argv)
    result = benchmark(args)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2) if args.json else format_table(result))


if __name__ == "__main__":
    main()
