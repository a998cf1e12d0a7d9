"""Self-attention in query blocks vs the single einsum: the layer alone, and the 128² train step.

    python benchmarks/attention.py [--sizes 32,64 --channels 256,128 --batch 8 --blocks 128,256,512]
        [--precisions float32[,mixed_bfloat16]] [--rounds 7 --warmup 2]
        [--step-sizes 32,64 --step-blocks 256 --step-batch 8 --step-rounds 5 --step-ch 64 | --no-step] [--json]

Layer table: one SelfAttention (pooled, γ = 0.5) on a [batch, size, size, C] map, forward + backward
(gradients w.r.t. the input and every weight) in one tf.function, per image. Variants: `plain`
(query_block=0, one einsum over all N queries), `qb<k>` (k query rows per block, the softmax
recomputed in the backward pass: the default when query_block > 0) and `qb<k>_keep` (the same blocks,
plain autodiff, every block's softmax kept for the backward pass). A block size ≥ N is skipped. Every
round times each variant of one (size, C, precision) once, in order (A/B/A/B...), so the load's drift
between rounds cancels in the paired ratios: `vs_plain` is the median over rounds of
t(plain) / t(variant) (> 1: the variant is faster). `logits_MB` is the [B, rows, M] logits
(compute dtype) + float32 softmax one block holds, rows = N for plain. bfloat16 is timed by default
only where the CPU multiplies it natively (AMX; `lscpu | grep amx`); elsewhere it is emulated.

Train-step table: the 128² ImageNet preset (`--step-ch` overrides ch, `--step-batch` the batch) with
attention in G and D at each of `--step-sizes`, for query_block 0 and each of `--step-blocks`, timed
with benchmarks/train_step.py's helpers (Keras' compiled train function on an in-memory batch,
interleaved with a peak matmul). `vs_32_plain` is the median over rounds of
t(variant) / t(attention at 32², plain): the cost of moving attention (the target is ≤ 1.1 at 64²).

Timings on a machine shared with other jobs are noise; run on a quiet machine.
"""
from __future__ import annotations

import argparse
import sys
import time

try:
    from benchmarks import common, train_step
except ImportError:  # run as a script from benchmarks/
    import common
    import train_step

BYTES = {"float32": 4, "mixed_bfloat16": 2, "mixed_float16": 2}
LAYER_COLUMNS = ["size", "C", "precision", "variant", "ms_per_image", "vs_plain", "logits_MB"]
STEP_COLUMNS = ["variant", "attention", "query_block", "precision", "batch", "step_ms", "img/s", "vs_32_plain"]


def log(message):
    print(f"[attention {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def int_list(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: every value must be a positive integer")
    return values


def layer_variants(size, blocks, pooled=True):
    """{name: (query_block, recompute)} for a size×size map: plain, then each block size < N twice."""
    n = size * size
    variants = {"plain": (0, True)}
    for block in blocks:
        if block < n:
            variants[f"qb{block}"] = (block, True)
            variants[f"qb{block}_keep"] = (block, False)
    return variants


def logits_bytes(size, batch, precision, query_block, pooled=True):
    """Bytes of the logits (compute dtype) and float32 softmax one block holds: [B, rows, M]."""
    n = size * size
    rows = query_block if query_block and query_block < n else n
    return batch * rows * (n // 4 if pooled else n) * (BYTES[precision] + 4)


def layer_step_fn(size, channels, batch, precision, query_block, recompute, seed=0):
    """A zero-argument tf.function: one forward + backward of a SelfAttention, returning a scalar."""
    import numpy as np
    import tensorflow as tf

    from sagan_tf.layers import SelfAttention

    layer = SelfAttention(init="normal", query_block=query_block, recompute=recompute, dtype=precision)
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.normal(size=(batch, size, size, channels)).astype(np.float32))
    w = tf.constant(rng.normal(size=(batch, size, size, channels)).astype(np.float32))
    layer(x[:1])
    layer.gamma.assign(0.5)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.cast(layer(x, training=True), tf.float32) * w)
        grads = tape.gradient(loss, [x] + layer.trainable_weights)
        return tf.add_n([tf.reduce_sum(tf.cast(g, tf.float32)) for g in grads])

    return step


def run_layer(sizes, channel_list, batch, blocks, precisions, rounds, warmup):
    rows, raw = [], {}
    for precision in precisions:
        for size in sizes:
            for channels in channel_list:
                variants = layer_variants(size, blocks)
                fns = {name: layer_step_fn(size, channels, batch, precision, qb, rc)
                       for name, (qb, rc) in variants.items()}
                label = f"{size}x{size} C={channels} {precision}"
                log(f"{label}: {len(fns)} variants, {warmup} warm-up + {rounds} rounds")
                times = common.interleaved(fns, rounds=rounds, warmup=warmup, sync=lambda r: r.numpy())
                raw[label] = times
                for name, (qb, _) in variants.items():
                    rows.append(dict(size=size, C=channels, precision=precision.replace("mixed_", ""),
                                     variant=name, ms_per_image=common.median(times[name]) * 1e3 / batch,
                                     vs_plain=train_step.paired_ratio(times["plain"], times[name]),
                                     logits_MB=logits_bytes(size, batch, precision, qb) / 2 ** 20))
    return rows, raw


def run_train_step(sizes, blocks, batch, ch, precision, rounds, warmup, peak_size):
    """Rows of the 128² train step with attention at each size, plain and blocked."""
    import tensorflow as tf

    from sagan_tf.models.architecture import attention_resolutions

    for network in ("generator", "discriminator"):
        allowed = attention_resolutions(network, 128)
        bad = [s for s in sizes if s not in allowed]
        if bad:
            raise ValueError(f"--step-sizes={sizes}: {bad} is not a {network} feature size at 128² ({allowed})")
    strategy = tf.distribute.get_strategy()
    configs, meta = {}, {}
    for size in sizes:
        for block in [0] + [b for b in blocks if b < size * size]:
            name = f"att{size}_{'plain' if not block else f'qb{block}'}"
            overrides = dict(mixed_precision=precision, jit_compile=False, g_attention=(size,),
                             d_attention=(size,), attention_query_block=block)
            if ch:
                overrides["ch"] = ch
            configs[name] = (train_step.variant_config("imagenet128", batch, overrides), strategy, 1)
            meta[name] = (size, block)
    group = train_step.time_configs(configs, rounds, warmup, peak_size)
    variants = group["variants"]
    first = f"att{sizes[0]}_plain"
    rows = []
    for name, v in variants.items():
        seconds = common.median(v["times"])
        rows.append(dict(variant=name, attention=f"{meta[name][0]}x{meta[name][0]}", query_block=meta[name][1],
                         precision=v["precision"].replace("mixed_", ""), batch=v["batch"], step_ms=seconds * 1e3,
                         **{"img/s": v["batch"] / seconds},
                         vs_32_plain=train_step.paired_ratio(v["times"], variants[first]["times"])))
    return rows, group


def main(argv=None):
    parser = common.add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--sizes", type=int_list, default=[32, 64], help="feature-map sizes of the layer table")
    parser.add_argument("--channels", type=int_list, default=[256, 128], help="channel counts (multiples of 8)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--blocks", type=int_list, default=[128, 256, 512], help="query rows per block")
    parser.add_argument("--precisions", default=None,
                        help="comma-separated Keras policies (default: float32, plus mixed_bfloat16 with AMX)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-step", action="store_true", help="skip the train-step table")
    parser.add_argument("--step-sizes", type=int_list, default=[32, 64])
    parser.add_argument("--step-blocks", type=int_list, default=[256])
    parser.add_argument("--step-batch", type=int, default=8)
    parser.add_argument("--step-ch", type=int, default=0, help="override the preset's ch=64 (0: keep it)")
    parser.add_argument("--step-rounds", type=int, default=5)
    parser.add_argument("--step-warmup", type=int, default=2)
    parser.add_argument("--peak-size", type=int, default=2048, help="side of the peak matmul timed each round")
    args = parser.parse_args(argv)

    from sagan_tf.runtime.precision import native_bfloat16
    precisions = (args.precisions.split(",") if args.precisions
                  else ["float32"] + (["mixed_bfloat16"] if native_bfloat16() else []))
    bad = [p for p in precisions if p not in BYTES]
    if bad:
        parser.error(f"--precisions: {bad} not in {sorted(BYTES)}")
    bad = [c for c in args.channels if c % 8]
    if bad:
        parser.error(f"--channels: {bad} are not multiples of 8")

    result = {"machine": common.machine_info(), "batch": args.batch, "rounds": args.rounds, "warmup": args.warmup}
    tables = []
    layer_rows, raw = run_layer(args.sizes, args.channels, args.batch, args.blocks, precisions, args.rounds,
                                args.warmup)
    result["layer"] = dict(rows=layer_rows, times=raw)
    tables.append((f"SelfAttention forward + backward, batch {args.batch}: median of {args.rounds} interleaved "
                   f"rounds after {args.warmup} warm-up; vs_plain = median t(plain)/t(variant)",
                   layer_rows, LAYER_COLUMNS))
    if not args.no_step:
        for precision in precisions:
            step_rows, group = run_train_step(args.step_sizes, args.step_blocks, args.step_batch, args.step_ch,
                                              precision, args.step_rounds, args.step_warmup, args.peak_size)
            result.setdefault("train_step", {})[precision] = dict(rows=step_rows, group=group)
            tables.append((f"imagenet128{f' ch={args.step_ch}' if args.step_ch else ''} train step, batch "
                           f"{args.step_batch}, {precision}: median of {args.step_rounds} rounds; vs_32_plain = "
                           f"median t(variant)/t(attention at {args.step_sizes[0]}², plain)", step_rows, STEP_COLUMNS))
    result["machine"] = common.machine_info()
    common.emit(args, result, tables)


if __name__ == "__main__":
    main()
