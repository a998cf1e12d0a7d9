"""Measured matmul peak of this machine in float32 and bfloat16: the reference of every MFU.

    python benchmarks/peak.py [--size 4096 --rounds 5] [--json]

A large square tf.linalg.matmul inside a tf.function (oneDNN; AMX tiles for bfloat16 on Sapphire
Rapids-class CPUs). train_step.py imports `peak_fns` and times them interleaved with its train steps,
so the peak and the steps see the same machine load.
"""
from __future__ import annotations

import argparse

try:
    from benchmarks import common
except ImportError:  # run as a script from benchmarks/
    import common

PRECISIONS = ("float32", "bfloat16")


def matmul_flops(size):
    return 2 * size ** 3


def peak_fns(size=4096, seed=0):
    """{precision: zero-argument callable running one size×size matmul and returning a scalar tensor}."""
    import tensorflow as tf

    fns = {}
    for precision in PRECISIONS:
        dtype = getattr(tf, precision)
        a = tf.cast(tf.random.stateless_normal([size, size], seed=[seed, 1]), dtype)
        b = tf.cast(tf.random.stateless_normal([size, size], seed=[seed, 2]), dtype)

        @tf.function
        def run(a=a, b=b):
            return tf.linalg.matmul(a, b)[0, 0]

        fns[precision] = run
    return fns


def sync(result):
    if hasattr(result, "numpy"):
        result.numpy()


def peak_from_times(times, size):
    """{precision: GFLOP/s (median over rounds)} from interleaved() timings of peak_fns."""
    return {p: matmul_flops(size) / common.median(times[p]) / 1e9 for p in PRECISIONS if p in times}


def measure_peak(size=4096, rounds=5, warmup=2):
    """{precision: GFLOP/s} measured now."""
    times = common.interleaved(peak_fns(size), rounds=rounds, warmup=warmup, sync=sync)
    return peak_from_times(times, size)


def main(argv=None):
    parser = common.add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    peak = measure_peak(args.size, args.rounds)
    rows = [{"precision": p, "GFLOP/s": g} for p, g in peak.items()]
    rows.append({"precision": "bf16/fp32", "GFLOP/s": peak["bfloat16"] / peak["float32"]})
    common.emit(args, {"machine": common.machine_info(), "size": args.size, "peak_gflops": peak},
                [(f"Matmul peak ({args.size}x{args.size}, median of {args.rounds})", rows, ["precision", "GFLOP/s"])])


if __name__ == "__main__":
    main()
