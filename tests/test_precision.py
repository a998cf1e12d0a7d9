"""'auto' precision: bfloat16 only where the hardware multiplies it natively; config.json records the choice."""
import json

import pytest

from sagan_tf import precision
from tests.helpers import tiny_config

AMX_CPU = "processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
AVX512_CPU = "processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 avx512_fp16\n"


def test_amx_is_read_from_the_cpu_flags_only():
    assert precision.cpu_has_amx_bf16(AMX_CPU)
    assert not precision.cpu_has_amx_bf16(AVX512_CPU)  # avx512_bf16 converts, it does not tile-multiply
    assert not precision.cpu_has_amx_bf16("model name\t: amx_bf16 lookalike\nflags\t\t: fpu\n")
    assert not precision.cpu_has_amx_bf16("")


@pytest.mark.parametrize("native, expected", [(True, "mixed_bfloat16"), (False, "float32")])
def test_auto_follows_the_hardware(monkeypatch, native, expected):
    monkeypatch.setattr(precision, "native_bfloat16", lambda strategy=None: native)
    assert precision.resolve_precision("auto") == expected
    for name in precision.POLICIES:  # explicit choices are kept whatever the hardware
        assert precision.resolve_precision(name) == name
    with pytest.raises(ValueError, match="mixed_precision='bf16'"):
        precision.resolve_precision("bf16")


def test_native_bfloat16_on_this_cpu_matches_its_flags():
    with open("/proc/cpuinfo") as f:
        flags = f.read()
    assert precision.native_bfloat16() == ("amx_bf16" in flags.split())


def test_training_records_the_resolved_policy(monkeypatch, tmp_path):
    from sagan_tf.training import train
    from tests.helpers import random_dataset_fn
    monkeypatch.setattr(precision, "native_bfloat16", lambda strategy=None: False)
    config = tiny_config(mixed_precision="auto", train_steps=1)
    model = train(config, str(tmp_path), dataset_fn=random_dataset_fn(config), verbose=0)
    assert json.loads((tmp_path / "config.json").read_text())["mixed_precision"] == "float32"
    assert model.generator.dtype_policy.name == "float32"
