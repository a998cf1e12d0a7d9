"""The compute precision a run trains in, and "auto": bfloat16 only where the hardware multiplies it natively.

mixed_bfloat16 is ≈ 4–7× faster than float32 on a CPU with AMX-BF16 (oneDNN uses its tile
units), on TPUs and on GPUs of compute capability ≥ 8.0 — and *slower* where bfloat16 is emulated.
The ``avx512_bf16`` flag alone does not tell which: on an Intel Xeon with it (and no AMX) the
Fashion-MNIST step took 1.1 s in mixed_bfloat16 vs 0.7 s in float32, on an AMD EPYC (Zen 5) with it
mixed_bfloat16 was 1.4–1.5× *faster* (docs/performance.md). So on such a CPU "auto" measures:
one bfloat16 and one float32 1024² matmul, timed interleaved (≈ 0.6 s, once per process), and bfloat16 wins
only if it is at least ``PROBE_MIN_SPEEDUP`` faster.

The presets ask for ``"auto"``, which :func:`resolve_precision` turns into a concrete Keras policy name
before anything is built; the run's config.json records the resolved name, so a resumed or exported
run never depends on the machine it is read on (:func:`resume_precision`: "auto" keeps a resumed run's
recorded policy), and every worker of a multi-worker run trains the same one (:func:`agree_on_precision`).

"mixed_float16" is never chosen by "auto" (V100/T4 GPUs need it by name): each optimizer then gets its
own dynamic loss scale, and a skipped update still counts as a step
(sagan_tf.training.optimizers.StepCountingLossScaleOptimizer; docs/distributed.md, "mixed_float16").
"""
from __future__ import annotations

import functools

AUTO = "auto"
POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")

#: How much faster (time ratio) the probe's bfloat16 matmul must be for "auto" to pick it on a CPU
#: with avx512_bf16 and no AMX: a margin over timing noise (the machines measured so far gave 0.6× and 1.5×).
PROBE_MIN_SPEEDUP = 1.15
PROBE_SIZE = 1024
PROBE_ROUNDS = 5

__all__ = ["AUTO", "POLICIES", "PROBE_MIN_SPEEDUP", "bfloat16_matmul_speedup", "cpu_bfloat16_kind",
           "native_bfloat16", "resolve_precision", "resume_precision", "agreed_precision", "agree_on_precision"]


def cpu_bfloat16_kind(cpuinfo: str | None = None) -> str | None:
    """"amx" when the CPU flags (of ``/proc/cpuinfo``, or the text given) include ``amx_bf16``,
    "avx512_bf16" when they include only that (bfloat16 dot products: native on some CPUs, no faster
    than float32 on others), None otherwise."""
    if cpuinfo is None:
        cpuinfo = _read_cpuinfo()
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split())
    if "amx_bf16" in flags:
        return "amx"
    return "avx512_bf16" if "avx512_bf16" in flags else None


@functools.lru_cache(maxsize=1)
def _read_cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:  # not Linux: no way to tell, assume no bfloat16
        return ""


def median_speedup(float32_seconds, bfloat16_seconds) -> float:
    """float32 time ÷ bfloat16 time, each the median of its rounds (> 1: bfloat16 is faster)."""
    import statistics

    return statistics.median(float32_seconds) / statistics.median(bfloat16_seconds)


@functools.lru_cache(maxsize=1)
def bfloat16_matmul_speedup(size: int = PROBE_SIZE, rounds: int = PROBE_ROUNDS) -> float:
    """How many times faster a size×size bfloat16 matmul runs than a float32 one on this CPU, measured
    now (after one untimed call of each, timed in alternation so both see the same load)."""
    import time

    import tensorflow as tf

    with tf.device("/CPU:0"):
        runs = {}
        for dtype in (tf.float32, tf.bfloat16):
            a = tf.cast(tf.random.stateless_normal([size, size], seed=[0, 1]), dtype)
            runs[dtype] = tf.function(lambda a=a: tf.linalg.matmul(a, a)[0, 0])
            runs[dtype]().numpy()
        seconds = {dtype: [] for dtype in runs}
        for _ in range(rounds):
            for dtype, run in runs.items():
                start = time.perf_counter()
                run().numpy()
                seconds[dtype].append(time.perf_counter() - start)
    return median_speedup(seconds[tf.float32], seconds[tf.bfloat16])


def native_bfloat16(strategy=None) -> bool:
    """Whether the devices `strategy` (default: the current one) computes on multiply bfloat16 natively
    (on a CPU with avx512_bf16 but no AMX: whether a measured bfloat16 matmul is clearly faster)."""
    import tensorflow as tf

    strategy = strategy or tf.distribute.get_strategy()
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return True
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capabilities = [tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
                        for gpu in gpus]
        return all(tuple(capability) >= (8, 0) for capability in capabilities)
    kind = cpu_bfloat16_kind()
    if kind != "avx512_bf16":
        return kind == "amx"
    first = bfloat16_matmul_speedup.cache_info().currsize == 0
    speedup = bfloat16_matmul_speedup()
    if first:
        choice = "mixed_bfloat16" if speedup >= PROBE_MIN_SPEEDUP else "float32"
        print(f"mixed_precision='auto': this CPU has avx512_bf16 and no AMX; a bfloat16 matmul ran "
              f"{speedup:.2f}× as fast as float32 (bfloat16 needs ≥ {PROBE_MIN_SPEEDUP}×), so auto "
              f"means {choice!r} in this process.", flush=True)
    return speedup >= PROBE_MIN_SPEEDUP


def resolve_precision(name: str, strategy=None) -> str:
    """A Keras policy name for config.mixed_precision: itself, or for "auto" mixed_bfloat16 / float32."""
    if name == AUTO:
        return "mixed_bfloat16" if native_bfloat16(strategy) else "float32"
    if name not in POLICIES:
        raise ValueError(f"mixed_precision={name!r} is not one of {[AUTO, *POLICIES]}")
    return name


# --- a run's policy: resumed as recorded, the same on every worker --------------------------------------

def resume_precision(requested: str, model_dir: str, strategy=None) -> str:
    """The Keras policy a run (re)started with ``mixed_precision=requested`` trains in.

    "auto" picks for the hardware (:func:`resolve_precision`) only for a new run: a resume keeps the policy
    its config.json recorded, so a run moved to a machine with (or without) native bfloat16 keeps its
    arithmetic. An explicit policy is obeyed, with a message when it changes the run's.
    """
    from sagan_tf.run import run_dir  # tf.io.gfile: imported when a run starts, not with the policy names
    stored = run_dir.recorded_config(model_dir)
    recorded = (stored or {}).get("mixed_precision")
    if recorded is None:
        return resolve_precision(requested, strategy)
    if recorded not in POLICIES:
        raise run_dir.ConfigMismatchError(f"{run_dir.config_file(model_dir)} records mixed_precision={recorded!r}, which is not "
                                  f"one of {list(POLICIES)}; it describes the checkpoints in "
                                  f"{run_dir.checkpoint_dir(model_dir)}. Nothing was changed; repair it.")
    if requested == AUTO:
        here = resolve_precision(AUTO, strategy)
        if here != recorded:
            print(f"{model_dir}: resuming in the run's recorded precision {recorded!r}; mixed_precision='auto' "
                  f"would pick {here!r} on this machine for a new run (pass --config.mixed_precision={here} "
                  "to switch this run).", flush=True)
        return resolve_precision(recorded)
    policy = resolve_precision(requested, strategy)
    if policy != recorded:
        print(f"{model_dir}: the run trained in {recorded!r}; it continues in mixed_precision={policy!r} "
              "as asked.", flush=True)
    return policy


def agreed_precision(policy: str, replicas: int, bfloat16_replicas: int) -> str:
    """The policy every worker trains in, given how many of the `replicas` resolved mixed_bfloat16: theirs
    when they agree, float32 (what every CPU and GPU computes natively) when they do not."""
    if bfloat16_replicas in (0, replicas):
        return policy
    return "float32"


def agree_on_precision(strategy: tf.distribute.Strategy, policy: str) -> str:
    """Multi-worker runs only: "auto" is resolved on each worker's own hardware (and, on an avx512_bf16
    CPU, by a timing), so workers may disagree; they must all train one policy."""
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return policy
    values = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant([1.0, float(policy == "mixed_bfloat16")], tf.float64))
    replicas, bfloat16 = strategy.reduce(tf.distribute.ReduceOp.SUM, values, axis=None).numpy()
    agreed = agreed_precision(policy, int(replicas), int(bfloat16))
    if 0 < bfloat16 < replicas:  # said on every worker, the chief's log included
        print(f"mixed_precision: {int(bfloat16)} of {int(replicas)} replicas resolved 'mixed_bfloat16', the others "
              f"'float32'; every worker trains in {agreed!r} (pass --config.mixed_precision to choose).", flush=True)
    return agreed
