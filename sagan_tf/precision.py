"""The compute precision a run trains in, and "auto": bfloat16 only where the hardware multiplies it natively.

mixed_bfloat16 is ≈ 4–7× faster than float32 on a CPU with AMX-BF16 (oneDNN uses its tile
units), on TPUs and on GPUs of compute capability ≥ 8.0 — and *slower* where bfloat16 is emulated:
on an AVX-512 CPU without AMX the Fashion-MNIST step took 1.1 s in mixed_bfloat16 vs 0.7 s in float32
(docs/performance.md). So the presets ask for ``"auto"``, which :func:`resolve_precision` turns
into a concrete Keras policy name before anything is built; the run's config.json records the
resolved name, so a resumed or exported run never depends on the machine it is read on.

"mixed_float16" is never chosen by "auto" (V100/T4 GPUs need it by name): each optimizer then gets its
own dynamic loss scale, and a skipped update still counts as a step
(sagan_tf.training.loop.StepCountingLossScaleOptimizer; docs/distributed.md, "mixed_float16").
"""
from __future__ import annotations

import functools

AUTO = "auto"
POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")

__all__ = ["AUTO", "POLICIES", "cpu_has_amx_bf16", "native_bfloat16", "resolve_precision"]


def cpu_has_amx_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU flags (of ``/proc/cpuinfo``, or the text given) include ``amx_bf16``."""
    if cpuinfo is None:
        cpuinfo = _read_cpuinfo()
    return any(line.startswith("flags") and "amx_bf16" in line.split() for line in cpuinfo.splitlines())


@functools.lru_cache(maxsize=1)
def _read_cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:  # not Linux: no way to tell, assume no AMX
        return ""


def native_bfloat16(strategy=None) -> bool:
    """Whether the devices `strategy` (default: the current one) computes on multiply bfloat16 natively."""
    import tensorflow as tf

    strategy = strategy or tf.distribute.get_strategy()
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return True
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capabilities = [tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
                        for gpu in gpus]
        return all(tuple(capability) >= (8, 0) for capability in capabilities)
    return cpu_has_amx_bf16()


def resolve_precision(name: str, strategy=None) -> str:
    """A Keras policy name for config.mixed_precision: itself, or for "auto" mixed_bfloat16 / float32."""
    if name == AUTO:
        return "mixed_bfloat16" if native_bfloat16(strategy) else "float32"
    if name not in POLICIES:
        raise ValueError(f"mixed_precision={name!r} is not one of {[AUTO, *POLICIES]}")
    return name
