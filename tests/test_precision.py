"""'auto' precision: bfloat16 only where the hardware multiplies it natively; config.json records the choice."""
import json
import types

import pytest

from sagan_tf.runtime import precision
from tests.helpers import tiny_config

AMX_CPU = "processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
AVX512_CPU = "processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 avx512_fp16\n"


def test_bfloat16_kind_is_read_from_the_cpu_flags_only():
    assert precision.cpu_bfloat16_kind(AMX_CPU) == "amx"
    assert precision.cpu_bfloat16_kind(AVX512_CPU) == "avx512_bf16"
    assert precision.cpu_bfloat16_kind("model name\t: amx_bf16 avx512_bf16 lookalike\nflags\t\t: fpu\n") is None
    assert precision.cpu_bfloat16_kind("flags\t\t: fpu avx2 fma\n") is None
    assert precision.cpu_bfloat16_kind("") is None


def test_the_probe_speedup_is_the_ratio_of_median_times():
    # medians, so one slow round (another process woke up) does not decide
    assert precision.median_speedup([2.0, 2.0, 9.0, 2.1, 1.9], [1.0, 1.0, 1.0, 0.2, 1.1]) == pytest.approx(2.0)
    assert precision.median_speedup([1.0, 1.0, 1.0], [1.6, 1.6, 5.0]) == pytest.approx(1 / 1.6)


def test_the_probe_measures_this_cpu_once_per_process():
    speedup = precision.bfloat16_matmul_speedup()
    assert 0.02 < speedup < 50  # a ratio of two timings of the same matmul, whatever this CPU is
    assert precision.bfloat16_matmul_speedup() == speedup  # cached: the second call times nothing
    assert precision.bfloat16_matmul_speedup.cache_info().hits >= 1


@pytest.mark.parametrize("native, expected", [(True, "mixed_bfloat16"), (False, "float32")])
def test_auto_follows_the_hardware(monkeypatch, native, expected):
    monkeypatch.setattr(precision, "native_bfloat16", lambda strategy=None: native)
    assert precision.resolve_precision("auto") == expected
    for name in precision.POLICIES:  # explicit choices are kept whatever the hardware
        assert precision.resolve_precision(name) == name
    with pytest.raises(ValueError, match="mixed_precision='bf16'"):
        precision.resolve_precision("bf16")


class _FakeGPU:
    def __init__(self, name):
        self.name = name


@pytest.mark.parametrize("cpuinfo, gpus, speedup, expected", [
    (AMX_CPU, [], None, True),                            # AMX CPU, no GPU: no need to measure
    (AVX512_CPU, [], 0.6, False),                         # avx512_bf16, measured slower (the Xeon)
    (AVX512_CPU, [], 1.1, False),                         # within the noise margin: float32
    (AVX512_CPU, [], 1.5, True),                          # avx512_bf16, measured faster (the Zen 5 EPYC)
    ("flags\t\t: fpu avx2 fma\n", [], None, False),       # no bfloat16 instructions at all
    (AVX512_CPU, [(8, 0), (9, 0)], None, True),           # A100 + H100: native on every GPU
    (AMX_CPU, [(7, 0)], None, False),                     # V100: the GPU decides, not the host CPU
    (AVX512_CPU, [(8, 0), (7, 5)], None, False),          # one T4 in the mix: not on every replica
])
def test_native_bfloat16_on_faked_hardware(monkeypatch, capsys, cpuinfo, gpus, speedup, expected):
    import tensorflow as tf

    monkeypatch.setattr(precision, "_read_cpuinfo", lambda: cpuinfo)
    probe = FakeProbe(speedup)
    monkeypatch.setattr(precision, "bfloat16_matmul_speedup", probe)
    devices = [_FakeGPU(f"/physical_device:GPU:{i}") for i in range(len(gpus))]
    details = {d.name: {"compute_capability": c} for d, c in zip(devices, gpus)}
    real_list = tf.config.list_physical_devices
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda kind=None: devices if kind == "GPU" else real_list(kind))
    monkeypatch.setattr(tf.config.experimental, "get_device_details", lambda device: details[device.name])
    assert precision.native_bfloat16() is expected
    assert precision.resolve_precision("auto") == ("mixed_bfloat16" if expected else "float32")
    assert probe.calls == (2 if speedup is not None else 0)  # measured only where the flags cannot tell
    out = capsys.readouterr().out
    if speedup is not None:  # said once, with the measured figure and the choice
        assert out.count(f"ran {speedup:.2f}× as fast") == 1, out
        assert f"auto means {'mixed_bfloat16' if expected else 'float32'!r}" in out
    else:
        assert out == ""


class FakeProbe:
    """Stands in for bfloat16_matmul_speedup: a fixed figure, an lru_cache-like cache_info."""

    def __init__(self, speedup):
        self.speedup, self.calls = speedup, 0

    def __call__(self):
        if self.speedup is None:
            raise AssertionError("the probe ran where the CPU flags decide")
        self.calls += 1
        return self.speedup

    def cache_info(self):
        return types.SimpleNamespace(currsize=min(self.calls, 1))


def test_training_records_the_resolved_policy():
    # The session's tiny run (tests/helpers.py) asked for 'auto' on hardware faked to lack native bfloat16.
    from tests.helpers import TRAINED_RUN_PRECISION, trained_run
    model_dir, model = trained_run()
    assert TRAINED_RUN_PRECISION == "auto"
    with open(f"{model_dir}/config.json") as f:
        assert json.load(f)["mixed_precision"] == "float32"
    assert model.generator.dtype_policy.name == "float32"


def test_mixed_bfloat16_matches_float32_within_tolerance():
    # What "auto" switches on for AMX: attention and the generator (SN everywhere) computed in
    # bfloat16 must stay within bfloat16 rounding of the float32 result, from identical weights.
    import keras
    import numpy as np
    import tensorflow as tf

    from sagan_tf.layers import SelfAttention
    from sagan_tf.models import Generator
    from sagan_tf.models.architecture import model_fields

    x = np.random.default_rng(0).normal(size=(4, 16, 16, 32)).astype(np.float32)
    config = tiny_config(init="normal")
    z = np.random.default_rng(1).normal(size=(8, config.z_dim)).astype(np.float32)
    labels = np.arange(8) % config.num_classes
    outputs = {}
    weights = None
    for policy in ("float32", "mixed_bfloat16"):
        keras.mixed_precision.set_global_policy(policy)
        attention = SelfAttention(init="normal")
        attention(x)
        generator = Generator(model_fields(config), dtype=policy)
        generator((z, labels))
        if weights is None:
            attention.gamma.assign(0.7)  # γ = 0 at init would hide the attention branch
            weights = attention.get_weights(), generator.get_weights()
        else:
            attention.set_weights(weights[0])
            generator.set_weights(weights[1])
        y, beta = attention(x, return_attention=True)
        outputs[policy] = (y, beta, generator((z, labels)))
    (y32, beta32, images32), (y16, beta16, images16) = outputs["float32"], outputs["mixed_bfloat16"]
    assert y16.dtype == tf.bfloat16 and beta16.dtype == tf.float32
    y16, images16 = (tf.cast(t, tf.float32).numpy() for t in (y16, images16))
    assert 0 < np.abs(y16 - y32).max() <= 2e-2 * np.abs(y32).max()
    assert np.abs(beta16 - beta32).max() <= 5e-2
    np.testing.assert_allclose(beta16.numpy().sum(-1), 1.0, rtol=1e-5)
    assert np.abs(images16 - images32).max() <= 0.1
    assert np.abs(images16 - images32).mean() <= 1e-2  # images are in [-1, 1], mean |x| ≈ 0.3


@pytest.mark.parametrize("policy, replicas, bfloat16, expected", [
    ("mixed_bfloat16", 4, 4, "mixed_bfloat16"),  # all agree
    ("float32", 4, 0, "float32"),
    ("mixed_bfloat16", 4, 3, "float32"),          # one worker disagrees: all fall back to float32
    ("float32", 4, 1, "float32"),
    ("mixed_float16", 2, 0, "mixed_float16"),     # asked for by name on every worker
])
def test_workers_agree_on_one_policy(policy, replicas, bfloat16, expected):
    from sagan_tf.runtime.precision import agree_on_precision, agreed_precision
    assert agreed_precision(policy, replicas, bfloat16) == expected
    import tensorflow as tf
    assert agree_on_precision(tf.distribute.get_strategy(), policy) == policy  # one process: nothing to agree
