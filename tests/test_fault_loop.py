"""benchmarks/fault_loop.py: its plan, its readers of a run directory (fast), and a short loop (slow)."""
import json
import os
import struct
import subprocess
import sys
import threading
import time

import pytest

from benchmarks import fault_loop
from tests.helpers import ROOT

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def test_the_plan_is_seeded_and_aims_its_first_kills_at_each_write_with_both_signals():
    plan = fault_loop.kill_plan(3, 120, 300)
    first = [next(plan) for _ in range(20)]
    again = fault_loop.kill_plan(3, 120, 300)
    assert first == [next(again) for _ in range(20)]
    other = fault_loop.kill_plan(4, 120, 300)
    assert first != [next(other) for _ in range(20)]
    assert sorted(target for _, _, target in first[:3]) == sorted(fault_loop.TARGETS)
    assert {name for _, name, _ in first[:3]} == {"SIGTERM", "SIGKILL"}
    assert all(120 <= wait <= 300 for wait, _, _ in first)
    assert {target for _, _, target in first[3:]} <= {*fault_loop.TARGETS, "any moment"}


@pytest.mark.parametrize("directory, name, kind", [
    ("checkpoints", "ckpt-40_temp", "checkpoint"),
    ("checkpoints", "checkpoint.tmp1f2e3d", "checkpoint"),
    ("checkpoints", "ckpt-40.index", None),
    ("samples", ".tmp-0123abcd-step_00000040.png", "sample sheet"),
    ("samples", "step_00000040.png", None),
    ("", ".tmp-0123abcd-eval_history.jsonl", "evaluation"),
    ("best", "ckpt-40_temp", "evaluation"),
    ("best", ".tmp-0123abcd-best.json", "evaluation"),
    ("", ".tmp-0123abcd-config.json", "other"),
    ("", "eval_history.jsonl", None),
])
def test_temporary_names_are_told_apart_by_the_write_they_belong_to(directory, name, kind):
    assert fault_loop.write_kind(directory, name) == kind


def _record(payload):
    return struct.pack("<Q", len(payload)) + b"\0" * 4 + payload + b"\0" * 4


def test_records_are_framed_and_a_cut_last_one_is_reported(tmp_path):
    path = tmp_path / "events"
    path.write_bytes(_record(b"one") + _record(b"three") + _record(b"cut short")[:-6])
    assert fault_loop.records(path) == ([b"one", b"three"], True)
    path.write_bytes(_record(b"one"))
    assert fault_loop.records(path) == ([b"one"], False)


def test_logged_steps_of_one_process_and_every_events_file_checked(tmp_path):
    import tensorflow as tf

    model_dir = tmp_path / "run"
    for pid, steps in ((111, range(1, 6)), (222, range(3, 9))):
        directory = tmp_path / f"w{pid}"
        writer = tf.summary.create_file_writer(str(directory))
        with writer.as_default():
            for step in steps:
                tf.summary.scalar("d_loss", float(step), step=step)
                tf.summary.scalar("g_loss", float(step), step=step)
        writer.close()
        (model_dir / "train").mkdir(parents=True, exist_ok=True)
        (name,) = os.listdir(directory)
        os.rename(directory / name, model_dir / "train" / f"events.out.tfevents.{1000 + pid}.host.name.{pid}.0.v2")
    assert fault_loop.logged_steps(model_dir, 111) == {1, 2, 3, 4, 5}
    assert fault_loop.logged_steps(model_dir) == set(range(1, 9))
    assert fault_loop.check_events(model_dir, killed_pids=set())[0]
    # The writer of pid 222 was killed mid-record: allowed for a killed process only.
    victim = model_dir / "train" / "events.out.tfevents.1222.host.name.222.0.v2"
    victim.write_bytes(victim.read_bytes()[:-7])
    assert fault_loop.check_events(model_dir, killed_pids={222})[0]
    ok, detail = fault_loop.check_events(model_dir, killed_pids=set())
    assert not ok and "was not killed" in detail
    # A flipped byte inside a record is never allowed.
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    ok, detail = fault_loop.check_events(model_dir, killed_pids={222})
    assert not ok and "checksum" in detail


def test_the_watcher_sees_a_sheet_write_begin_and_ignores_other_writes(tmp_path):
    (tmp_path / "samples").mkdir()
    (tmp_path / "checkpoints").mkdir()
    watcher = fault_loop.WriteWatcher(str(tmp_path))
    try:
        watcher.drain()

        def writes():
            time.sleep(0.3)
            (tmp_path / "checkpoints" / "ckpt-5_temp").mkdir()  # another kind first
            (tmp_path / "samples" / "step_00000005.png").write_bytes(b"done")  # a finished name
            time.sleep(0.3)
            (tmp_path / "samples" / ".tmp-00ff-step_00000010.png").write_bytes(b"half")

        thread = threading.Thread(target=writes)
        thread.start()
        start = time.monotonic()
        found = watcher.wait_for("sample sheet", time.monotonic() + 10, lambda: True)
        thread.join()
        assert found == ("samples", ".tmp-00ff-step_00000010.png")
        assert 0.5 < time.monotonic() - start < 5
        assert watcher.wait_for("evaluation", time.monotonic() + 0.3, lambda: True) is None
    finally:
        watcher.close()


def test_cpu_lists():
    assert fault_loop.parse_cpus("1") == [1]
    assert fault_loop.parse_cpus("0-2,5") == [0, 1, 2, 5]


@pytest.mark.slow  # ~6 min: 3 kills of a tiny Fashion-MNIST run, the final resume, an uninterrupted run, TensorBoard
@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST), reason="dataset-fashion-mnist is not installed")
def test_a_short_fault_loop_passes_every_check(tmp_path):
    command = [sys.executable, "benchmarks/fault_loop.py", f"--work_dir={tmp_path / 'loop'}", "--kills=3",
               "--minutes=10", "--min_interval=20", "--max_interval=40", "--aim_timeout=60", "--checkpoint_every=10",
               "--sample_every=5", "--eval_every=20", "--eval_samples=64", "--trainer_flag=--config.ch=4",
               "--trainer_flag=--config.z_dim=8", "--trainer_flag=--config.batch_size=4", "--json"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    report = json.loads(result.stdout[result.stdout.index("{\n"):])
    print(json.dumps(report["kills"], indent=1), json.dumps(report["checks"], indent=1))
    assert result.returncode == 0, (result.stdout[-5000:], result.stderr[-3000:])
    assert report["passed"] and len(report["kills"]) == 3
    assert {kill["aimed at"] for kill in report["kills"]} == set(fault_loop.TARGETS)
    assert {kill["signal"] for kill in report["kills"]} == {"SIGTERM", "SIGKILL"}
    assert [check["result"] for check in report["checks"]] == ["pass"] * 9
