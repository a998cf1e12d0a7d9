"""Cheap correctness checks of the benchmark helpers (no timing is asserted)."""
import json

import pytest

from benchmarks import common, input_pipeline, memory, peak, train_step
from tests.helpers import load_preset


def test_mfu_formula():
    # 1 TFLOP in 2 s against a 1 TFLOP/s peak: 50 %.
    assert common.mfu(1e12, 2.0, 1e12) == pytest.approx(0.5)
    assert common.mfu(3e9, 0.5, 12e9) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        common.mfu(1.0, 0.0, 1.0)


def test_median_and_matmul_flops():
    assert common.median([3, 1, 2]) == 2
    assert common.median([4, 1, 2, 3]) == 2.5
    assert peak.matmul_flops(4096) == 2 * 4096 ** 3


def test_interleaved_calls_every_fn_each_round_in_order():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in ("a", "b")}
    times = common.interleaved(fns, rounds=3, warmup=1)
    assert calls == ["a", "b"] + ["a", "b"] * 3
    assert {name: len(t) for name, t in times.items()} == {"a": 3, "b": 3}


def test_table_and_json_output(capsys):
    rows = [{"variant": "x", "step_ms": 1234.5, "MFU_%": 41.23}, {"variant": "long_name", "step_ms": 0.5}]
    table = common.format_table(rows, ["variant", "step_ms", "MFU_%"], title="T")
    lines = table.splitlines()
    assert lines[0] == "### T"
    assert lines[2].startswith("| variant ") and "MFU_%" in lines[2]
    assert "| 1234 " in table or "| 1235 " in table
    assert "41.2" in table and len({len(line) for line in lines[2:]}) == 1  # aligned columns

    class Args:
        json = True
    common.emit(Args(), {"rows": rows}, [("T", rows, None)])
    assert json.loads(capsys.readouterr().out)["rows"][0]["variant"] == "x"
    Args.json = False
    common.emit(Args(), {"rows": rows}, [("T", rows, None)])
    assert "| long_name" in capsys.readouterr().out


def test_variant_names():
    assert train_step.variant_overrides("bf16_xla") == dict(devices=1, mixed_precision="mixed_bfloat16",
                                                             jit_compile=True)
    assert train_step.variant_overrides("fp32_2dev_sync")["sync_bn"] is True
    assert train_step.variant_overrides("bf16_noattn")["g_attention"] == ()
    with pytest.raises(ValueError):
        train_step.variant_overrides("fp64")


@pytest.mark.parametrize("amx, expected", [(True, "mixed_bfloat16"), (False, "float32")])
def test_auto_variant_resolves_like_the_trainer(monkeypatch, amx, expected):
    from sagan_tf.runtime import precision
    monkeypatch.setattr(precision, "native_bfloat16", lambda strategy=None: amx)
    assert train_step.variant_overrides("auto_noattn")["mixed_precision"] == "auto"
    assert train_step.variant_config("fashion_mnist", 4, train_step.variant_overrides("auto")).mixed_precision == expected


def test_summary_of_fake_timings():
    flops = 2 * 4096 ** 3  # one step = one peak matmul's FLOPs
    group = {
        "peak_size": 4096, "peak_gflops": {"float32": 1.0, "bfloat16": 4.0},
        "peak_times": {"float32": [1.0, 2.0, 1.0], "bfloat16": [0.25, 0.5, 0.25]},
        "variants": {
            "bf16": dict(precision="mixed_bfloat16", xla=False, attention="pooled", bn="local", devices=1,
                         batch=8, n_dis=1, flops_per_step=flops, times=[0.5, 1.0, 0.5]),
            "bf16_noattn": dict(precision="mixed_bfloat16", xla=False, attention="none", bn="local", devices=1,
                                batch=8, n_dis=1, flops_per_step=flops * 0.9, times=[0.4, 0.8, 0.4]),
            "fp32": dict(precision="float32", xla=False, attention="pooled", bn="local", devices=1,
                         batch=8, n_dis=1, flops_per_step=flops, times=[2.0, 4.0, 2.0]),
        }}
    rows = {row["variant"]: row for row in train_step.summarise(group)}
    # Every round the step takes twice the bf16 matmul: MFU 50 %, whatever the load.
    assert rows["bf16"]["MFU_%"] == pytest.approx(50.0)
    assert rows["bf16"]["MFU_prec_%"] == pytest.approx(50.0)
    # fp32 takes twice its own matmul (50 % of the fp32 peak) but 8× the faster bf16 one: 12.5 %.
    assert rows["fp32"]["MFU_prec_%"] == pytest.approx(50.0)
    assert rows["fp32"]["MFU_%"] == pytest.approx(12.5)
    assert rows["bf16"]["img/s"] == pytest.approx(8 / 0.5)
    assert rows["bf16_noattn"]["vs_first"] == pytest.approx(1.25)
    share, = train_step.attention_share(group)
    assert share["measured_share_pct"] == pytest.approx(20.0)
    assert share["flop_share_pct"] == pytest.approx(10.0)
    # fp32_noattn pairs with "auto" when auto resolved to float32, never with a bf16 auto.
    for auto_precision, pairs in (("float32", 1), ("mixed_bfloat16", 0)):
        variants = {"auto": dict(group["variants"]["fp32"], precision=auto_precision),
                    "fp32_noattn": dict(group["variants"]["bf16_noattn"], precision="float32")}
        shares = train_step.attention_share(dict(group, variants=variants))
        assert [s["variant"] for s in shares] == ["auto"] * pairs


def test_step_flops_uses_cost_model():
    from sagan_tf.models.architecture import model_fields
    from sagan_tf.models.cost import train_step_flops
    config = train_step.variant_config("fashion_mnist", 4, dict(mixed_precision="float32"))
    assert train_step.step_flops(config) == 4 * train_step_flops(model_fields(config), config.n_dis)


def test_attention_map_sizes_pooled_is_four_times_smaller():
    config = load_preset("imagenet64")
    config.mixed_precision = "mixed_bfloat16"  # the preset's "auto" depends on the machine
    pooled = memory.attention_map_bytes(config, True, batch=1)
    full = memory.attention_map_bytes(config, False, batch=1)
    assert [(n, s) for n, s, _ in pooled] == [("G", 32), ("D", 32)]
    # 32² map: N = 1024 positions, M = 256 pooled; bf16 logits + float32 softmax = 6 bytes.
    assert pooled[0][2] == 1024 * 256 * 6 and full[0][2] == 4 * pooled[0][2]
    assert memory.step_attention_bytes(config, False, 1) == 4 * memory.step_attention_bytes(config, True, 1)


def test_step_img_s_from_train_step_json(tmp_path):
    path = tmp_path / "ts.json"
    path.write_text(json.dumps({"config": "imagenet64", "groups": {
        "in-process": {"rows": [{"attention": "pooled", "img/s": 2.0}, {"attention": "none", "img/s": 9.0}]},
        "2 logical devices (subprocess)": {"rows": [{"attention": "pooled", "img/s": 3.0}]},
        "failed": None}}))
    assert input_pipeline.step_img_s_from_json([str(path)]) == {"imagenet64": 3.0}


def test_scaling_pairs_compare_time_ratio_with_flop_ratio():
    from benchmarks import scaling

    def variant(flops_per_image, times, batch=4):
        return dict(precision="float32", xla=False, attention="pooled", bn="local", devices=1, batch=batch,
                    n_dis=1, flops_per_step=flops_per_image * batch, times=times)
    group = {"peak_size": 4096, "peak_gflops": {"float32": 1.0, "bfloat16": 1.0},
             "peak_times": {"float32": [1.0] * 3, "bfloat16": [1.0] * 3},
             "variants": {"a": variant(1e9, [1.0, 2.0, 1.0]),     # load doubles in round 2
                          "b": variant(2e9, [2.0, 4.0, 2.0]),     # 2× the FLOPs, 2× the time
                          "c": variant(8e9, [10.0, 20.0, 10.0])}}  # 4× the FLOPs, 5× the time
    ab, bc = scaling.pair_rows(group, ["a", "b", "c"])
    assert (ab["flop_ratio"], ab["time_ratio"], ab["deviation_%"], ab["within_20%"]) == pytest.approx((2, 2, 0, "yes"))
    assert bc["flop_ratio"] == pytest.approx(4) and bc["time_ratio"] == pytest.approx(5)
    assert bc["deviation_%"] == pytest.approx(25) and bc["within_20%"] == "no"
    rows = scaling.preset_rows(group, {"a": 32, "b": 64, "c": 128})
    assert [r["ms/img"] for r in rows] == pytest.approx([250, 500, 2500])


def test_profile_step_assigns_ops_to_stages_and_counts_their_flops():
    from benchmarks import profile_step
    from sagan_tf.models.architecture import model_fields
    from sagan_tf.models.cost import discriminator_macs, generator_macs, train_step_flops

    assert profile_step.stage_of("StatefulPartitionedCall/gradient_tape/discriminator_1/block4_1/sn_conv2_1/"
                                 "convolution/Conv2DBackpropInput:_MklNativeConv2DBackpropInput") == ("discriminator", "block4")
    assert profile_step.stage_of("StatefulPartitionedCall/generator_3/attention2_1/MatMul:_MklMatMul") == ("generator", "attention2")
    assert profile_step.stage_of("StatefulPartitionedCall/ema_generator/block0/mul:Mul") is None
    assert profile_step.stage_of("StatefulPartitionedCall/adam/Sub:Sub") is None

    config = train_step.variant_config("fashion_mnist", 4, dict(mixed_precision="float32"))
    flops = profile_step.stage_flops(config)
    # Everything but the linear input, G's output conv and D's head is in a stage.
    spec = model_fields(config)
    outside_g = sum(m for name, m in generator_macs(spec) if name in ("linear", "conv_out"))
    outside_d = sum(m for name, m in discriminator_macs(spec) if name == "head")
    outside = 2 * 4 * (outside_g * (config.n_dis + 3) + outside_d * (6 * config.n_dis + 3))
    assert sum(flops.values()) + outside == train_step_flops(spec, config.n_dis) * 4

    key = next(iter(flops))
    times = {f"x/{key[0]}_1/{key[1]}_1/conv:Conv2D": 30.0, f"gradient_tape/{key[0]}_2/{key[1]}_1/c:Conv2DBackpropInput": 10.0,
             "adam/mul:Mul": 40.0, "adam/sub:Sub": 20.0}
    rows, rest = profile_step.stage_rows(times, flops)
    first = rows[0]
    assert (first["network"], first["stage"], first["op_ms"], first["op_share_%"]) == ("G", key[1], 40.0, 40.0)
    assert first["GFLOP/s"] == pytest.approx(flops[key] / 1e9 / 0.040)
    assert rows[-1]["stage"] == "rest" and rows[-1]["op_ms"] == 60.0
    assert rest == [{"op_type": "Mul", "op_ms": 40.0}, {"op_type": "Sub", "op_ms": 20.0}]


# Op names as a bfloat16 Fashion-MNIST step's trace records them (benchmarks/profile_step.py), with their class.
TRACED_OPS = {
    "StatefulPartitionedCall/gradient_tape/discriminator_1/block4_1/sn_conv2_1/convolution/Conv2DBackpropInput:"
    "_MklNativeConv2DBackpropInput": "conv backward-input",
    "StatefulPartitionedCall/gradient_tape/generator_3/block2_1/Conv2DBackpropFilter:_MklNativeConv2DBackpropFilter":
        "conv backward-filter",
    "StatefulPartitionedCall/discriminator_1/block1_1/Pad:_MklNativePadWithConv2D": "conv forward",
    "StatefulPartitionedCall/generator_3/block0_1/sn_conv2_1/add:_MklNativeFusedConv2D": "conv forward",
    "StatefulPartitionedCall/generator_3/sn_linear_1/add:_MklNativeFusedMatMul": "matmul / einsum",
    "StatefulPartitionedCall/gradient_tape/generator_3/attention1_1/einsum_1/Einsum:_MklEinsum": "matmul / einsum",
    "StatefulPartitionedCall/discriminator_3/attention0_1/sn_theta_1/power_iteration/MatMul:_MklMatMul":
        "spectral norm",
    "StatefulPartitionedCall/discriminator_1/block2_1/sn_conv1_1/power_iteration/Sum:Sum": "spectral norm",
    "StatefulPartitionedCall/gradient_tape/discriminator_1/attention0_1/softmax/mul:Mul": "attention softmax",
    "StatefulPartitionedCall/discriminator_1/attention0_1/softmax/Softmax:_MklSoftmax": "attention softmax",
    "StatefulPartitionedCall/gradient_tape/discriminator_1/attention0_1/softmax/Cast/Cast:Cast": "cast",
    "StatefulPartitionedCall/generator_3/bn_out_1/bn_1/Cast_5:Cast": "cast",
    "StatefulPartitionedCall/generator_1/block2_1/cbn2_1/bn_1/moments/SquaredDifference:SquaredDifference":
        "batch norm",
    "StatefulPartitionedCall/gradient_tape/generator_3/bn_out_1/bn_1/moments/Tile:Tile": "batch norm",
    "StatefulPartitionedCall/d_adam/Sqrt_47:Sqrt": "optimizer (Adam)",
    "StatefulPartitionedCall/g_adam/AssignSubVariableOp_7:AssignSubVariableOp": "optimizer (Adam)",
    "StatefulPartitionedCall/ema/mul_29:Mul": "EMA",
    "StatefulPartitionedCall/gradient_tape/generator_3/block2_1/strided_slice_11/StridedSliceGrad:StridedSliceGrad":
        "slice / pad / tile",
    "StatefulPartitionedCall/generator_1/block2_1/Repeat/Tile:Tile": "slice / pad / tile",
    "StatefulPartitionedCall/generator_3/block2_1/Relu_1:Relu": "elementwise and other",
    "StatefulPartitionedCall/UnsortedSegmentSum_9:UnsortedSegmentSum": "elementwise and other",
}


@pytest.mark.parametrize("name, expected", TRACED_OPS.items())
def test_profile_step_op_classes(name, expected):
    from benchmarks import profile_step
    assert profile_step.op_class(name) == expected


def test_profile_step_class_rows_and_host_idle_against_a_naive_timeline():
    import numpy as np

    from benchmarks import profile_step
    rng = np.random.default_rng(0)
    events = [(name, int(start), int(length)) for name, start, length in
              zip(TRACED_OPS, rng.integers(0, 10 ** 9, len(TRACED_OPS)), rng.integers(1, 2 * 10 ** 8, len(TRACED_OPS)))]
    timeline = np.zeros(2 * 10 ** 9 // 10 ** 6, bool)  # 1 µs resolution, in ps units of 10⁶
    for _, start, length in events:
        timeline[start // 10 ** 6:(start + length) // 10 ** 6] = True
    assert profile_step.busy_ms(events) == pytest.approx(timeline.sum() / 1e3, abs=len(events) * 2e-3)
    times = {name: length / 1e9 for name, _, length in events}
    rows = profile_step.class_rows(times, wall_ms=2000.0, busy_ms_per_step=profile_step.busy_ms(events))
    assert [row["class"] for row in rows] == [*profile_step.CLASSES, "host idle (no op running)"]
    by_class = {row["class"]: row["op_ms"] for row in rows}
    for cls in profile_step.CLASSES:
        assert by_class[cls] == pytest.approx(sum(times[n] for n, c in TRACED_OPS.items() if c == cls))
    assert sum(row["op_share_%"] for row in rows[:-1]) == pytest.approx(100)
    assert rows[-1]["op_ms"] == pytest.approx(2000.0 - profile_step.busy_ms(events))


def test_layer_memory_rows_cover_every_attention_placement(monkeypatch):
    import subprocess

    calls = []

    def fake_run(command, **kwargs):
        size, channels, batch, pooled, precision = command[-1].split("=", 1)[1].split(",")
        calls.append((int(size), int(channels), int(pooled)))
        peak = 3 * 2 ** 20 if int(pooled) else 9 * 2 ** 20
        return subprocess.CompletedProcess(command, 0, stdout=json.dumps({"layer_peak_bytes": peak}) + "\n")
    monkeypatch.setattr(memory.subprocess, "run", fake_run)
    rows = memory.layer_rows("imagenet64", 8, "float32")
    # imagenet64: G and D attention at 32², with 128 and 64 channels; a pooled and a full run each.
    assert sorted(calls) == sorted((32, c, p) for c in (64, 128) for p in (0, 1))
    for row in rows:
        assert row["layer_ratio"] == pytest.approx(3.0) and row["maps_ratio"] == pytest.approx(4.0)
        # 32² map: N = 1024, M = 256 pooled; float32 logits + float32 softmax = 8 bytes, batch 8.
        assert row["pooled_maps_MB"] == pytest.approx(8 * 1024 * 256 * 8 / 2 ** 20)


def test_recipe_study_tables_and_cpu_accounting(tmp_path):
    from benchmarks import recipe_study as study
    records = str(tmp_path / "records")
    for step, cpu, fid in ((1000, 900.0, 15.0), (2000, 1800.0, 9.0), (4000, 3600.0, 5.0)):
        study.append_point(records, "base", {"step": step, "train_cpu_seconds": cpu, "precision": "float32",
                                             "metrics": {"fid": fid, "precision": 0.9, "recall": 0.4,
                                                         "conditional_accuracy": 0.8}})
    rows = study.table_rows(records)
    assert [(row["step"], row["CPU-h"], row["FID"]) for row in rows] == [(1000, 0.25, 15.0), (2000, 0.5, 9.0),
                                                                        (4000, 1.0, 5.0)]
    (budgets,) = study.budget_rows(rows)
    assert (budgets["FID ≤0.25 CPU-h"], budgets["FID ≤0.5 CPU-h"], budgets["FID ≤1 CPU-h"]) == (15.0, 9.0, 5.0)
    assert "FID ≤2 CPU-h" not in budgets  # no recipe was followed past 1 CPU-h
    # A second, shorter recipe: blank beyond the budget its run ended in, not its last FID repeated.
    study.append_point(records, "ch32", {"step": 1000, "train_cpu_seconds": 1000.0, "precision": "float32",
                                         "metrics": {"fid": 12.0, "precision": 0.9, "recall": 0.4,
                                                     "conditional_accuracy": 0.8}})
    _, short = study.budget_rows(study.table_rows(records))
    assert (short["FID ≤0.25 CPU-h"], short["FID ≤0.5 CPU-h"], short["FID ≤1 CPU-h"]) == ("", 12.0, "")
    # CPU of a segment a signal cut short is carried to the next recorded point.
    model_dir = str(tmp_path / "run")
    assert study.read_pending(model_dir) == 0.0
    study.write_pending(model_dir, 12.5)
    assert study.read_pending(model_dir) == 12.5
    assert "diffaug" in study.RECIPES and study.RECIPES["diffaug"][0] == ("--config.augment=translation,cutout",)


@pytest.mark.slow  # starts two export.grpc_server processes
def test_serving_benchmark_grpc_rows_serve_what_the_in_process_call_computes(tmp_path):
    """The gRPC variants call the same export through a served subprocess: the same images as the in-process
    signature (float32 exactly; bfloat16 compute against its own in-process call), and the table's ratio
    columns are the ratios of its img/s columns."""
    import contextlib

    import numpy as np

    from benchmarks import serving
    with contextlib.ExitStack() as stack:
        names = ["savedmodel", "grpc", "savedmodel_bf16", "grpc_bf16"]
        variants, spec = serving.build_variants(32, 8, str(tmp_path), names, stack)
        batch = serving.make_batch(3, spec)
        images = {name: np.asarray(variants[name](batch)) for name in names}
    assert images["grpc"].shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(images["grpc"], images["savedmodel"])
    np.testing.assert_array_equal(images["grpc_bf16"], images["savedmodel_bf16"])
    assert np.abs(images["savedmodel_bf16"] - images["savedmodel"]).max() > 0  # a different computation
    args = serving.parse_args(["--resolutions=32", "--ch=8", "--batch_sizes=1,2", "--iters=1", "--warmup=0",
                               f"--variants={','.join(names)}"])
    result = serving.benchmark(args)
    row = result["rows"][1]
    assert row["gRPC/in-process"] == pytest.approx(row["grpc_img_per_s"] / row["savedmodel_img_per_s"])
    assert row["gRPC bf16/fp32"] == pytest.approx(row["grpc_bf16_img_per_s"] / row["grpc_img_per_s"])
    table = serving.format_table(result)
    assert "gRPC/in-process" in table and f"{row['gRPC bf16/in-process']:.2f}x" in table


def test_machine_info_names_the_isa_that_decides_the_precision():
    from benchmarks import common
    text = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu avx2 avx512f avx512_bf16 "
            "amx_tile amx_bf16 amx_int8\n\nprocessor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n")
    assert common.cpu_description(text) == ("Intel(R) Xeon(R) Processor", "amx_bf16 amx_tile avx512_bf16 avx512f avx2")
    assert common.cpu_description("model name\t: AMD EPYC\nflags\t: fpu avx2 fma\n") == ("AMD EPYC", "avx2")
    with open("/proc/cpuinfo") as f:
        name, isa = common.cpu_description(f.read())
    assert common.machine_info()["cpu"] == (f"{name} [{isa}]" if isa else name)
