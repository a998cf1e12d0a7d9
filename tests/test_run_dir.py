"""Run directories that survive a damaged checkpoint, a lost index, a wrong resume and a second writer
(in-process and fast; the multi-process versions are in test_reliability.py, marked slow)."""
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from export.saved_model import export_run
from sagan_tf.run import run_dir
from sagan_tf.run.run_dir import ConfigMismatchError
from sagan_tf.run.run_lock import LOCK_FILE, RunLock, RunLockedError
from sagan_tf.training import build_model, train
from sagan_tf.training.checkpointing import CheckpointManager
from tests.helpers import random_dataset_fn, tiny_config

CONFIG = dict(train_steps=4, checkpoint_every=2, sample_every=1000, log_every=1000)


def _synthetic_run(model_dir):
    """What a finished tiny run leaves (config.json, ckpt-2 and ckpt-4 with different weights), made
    without training: build the model, set the step counter, save."""
    from sagan_tf.training.loop import write_config
    config = tiny_config(**CONFIG)
    model = build_model(config, tf.distribute.get_strategy())
    manager = CheckpointManager(model, os.path.join(model_dir, "checkpoints"), keep=3)
    rng = np.random.default_rng(0)
    for step in (2, 4):
        for weight in model.generator.weights:
            weight.assign(rng.standard_normal(weight.shape).astype(weight.dtype) * 0.01 * step)
        model.g_optimizer.iterations.assign(step)
        manager.save()
    write_config(config, model_dir)
    return model_dir


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """A run directory with ckpt-2 and ckpt-4 (made once per module)."""
    return _synthetic_run(str(tmp_path_factory.mktemp("run_dir") / "base"))


@pytest.fixture
def run(base_run, tmp_path):
    """A private copy of the base run."""
    target = tmp_path / "run"
    shutil.copytree(base_run, target)
    return target


def ckpt(run, step):
    return str(run / "checkpoints" / f"ckpt-{step}")


def data_file(run, step):
    [name] = [n for n in os.listdir(run / "checkpoints") if n.startswith(f"ckpt-{step}.data-")]
    return run / "checkpoints" / name


def tree(path):
    """{relative path: bytes} of every file under `path`."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def saved_tensors(prefix):
    """The bytes of every tensor in checkpoint `prefix`."""
    reader = tf.train.load_checkpoint(prefix)
    return {np.asarray(reader.get_tensor(name)).tobytes() for name in reader.get_variable_to_shape_map()}


def g_kernels(model):
    kernels = [w.numpy().tobytes() for w in model.generator.weights if "kernel" in w.path]
    assert kernels
    return kernels


def restore(run, **kwargs):
    """(step, model, messages) after restoring `run` into a freshly built tiny model."""
    messages = []
    model = build_model(tiny_config(**CONFIG), tf.distribute.get_strategy())
    manager = CheckpointManager(model, str(run / "checkpoints"), log=messages.append, **kwargs)
    return manager.restore_latest(), model, messages


# --- unreadable newest checkpoint ----------------------------------------------------------------------

def test_saves_after_a_fallback_never_touch_the_bad_checkpoint(run):
    """Continuing from ckpt-2 saves ckpt-4 again and later max_to_keep garbage-collects: the bad
    ckpt-4 must be neither overwritten nor deleted, and the index must list only real checkpoints."""
    bad = data_file(run, 4)
    truncated = bad.read_bytes()[:100]
    bad.write_bytes(truncated)
    messages = []
    model = build_model(tiny_config(**CONFIG), tf.distribute.get_strategy())
    manager = CheckpointManager(model, str(run / "checkpoints"), keep=2, log=messages.append)
    assert manager.restore_latest() == 2
    assert any("ckpt-4 is unreadable (IndexError: Read less bytes than requested)" in m and "falling back to ckpt-2"
               in m and "kept, not deleted" in m for m in messages), messages
    for step in (4, 6, 8):  # the resumed run's checkpoints; keep=2 deletes the older ones
        model.g_optimizer.iterations.assign(step)
        manager.save()
    [kept] = list((run / "checkpoints" / "unreadable").glob("*/ckpt-4.data-*"))
    assert kept.read_bytes() == truncated
    assert "IndexError" in (kept.parent / "REASON.txt").read_text()
    state = tf.train.get_checkpoint_state(str(run / "checkpoints"))
    assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == ["ckpt-6", "ckpt-8"]
    assert sorted(checkpoint_files_steps(run)) == [6, 8]


def checkpoint_files_steps(run):
    return list(run_dir.checkpoint_files(str(run / "checkpoints")))


@pytest.mark.slow  # trains 4 steps (~40 s on a loaded 2-core machine)
def test_truncated_newest_checkpoint_falls_back_keeps_it_and_training_continues_past_it(run, capsys):
    bad = data_file(run, 4)
    original = bad.read_bytes()
    bad.write_bytes(original[: len(original) // 2])  # a copy or a full disk cut it short
    truncated = bad.read_bytes()
    config = tiny_config(**{**CONFIG, "train_steps": 6})
    model = train(config, str(run), dataset_fn=random_dataset_fn(config), verbose=0)
    out = capsys.readouterr().out
    assert "ckpt-4 is unreadable (IndexError: Read less bytes than requested)" in out, out
    assert "falling back to ckpt-2" in out and "Resuming at step 2" in out, out
    assert int(model.step) == 6
    # The bad files are kept byte for byte, out of reach of max_to_keep and of the new ckpt-4.
    [kept] = list((run / "checkpoints" / "unreadable").glob("*/ckpt-4.data-*"))
    assert kept.read_bytes() == truncated
    assert "IndexError" in (kept.parent / "REASON.txt").read_text()
    state = tf.train.get_checkpoint_state(str(run / "checkpoints"))
    assert [os.path.basename(p) for p in state.all_model_checkpoint_paths][-2:] == ["ckpt-4", "ckpt-6"]
    assert tf.train.latest_checkpoint(str(run / "checkpoints")) == ckpt(run, 6)
    # The new ckpt-4 is a real checkpoint written by the resumed run, not the bad one.
    assert data_file(run, 4).read_bytes() != truncated
    assert all(kernel in saved_tensors(ckpt(run, 6)) for kernel in g_kernels(model))


def test_flipped_bytes_in_the_newest_checkpoint_fall_back_to_the_previous_one(run):
    bad = data_file(run, 4)
    data = bytearray(bad.read_bytes())
    data[len(data) // 3] ^= 0xFF
    bad.write_bytes(bytes(data))
    step, model, messages = restore(run)
    assert step == 2
    assert any("ckpt-4 is unreadable" in m and "Checksum does not match" in m for m in messages), messages
    # The model holds ckpt-2's values (every G kernel is one of its tensors), none of ckpt-4's.
    two = saved_tensors(ckpt(run, 2))
    assert all(kernel in two for kernel in g_kernels(model))
    assert not os.path.exists(ckpt(run, 4) + ".index")  # moved aside (kept under unreadable/)
    assert len(list((run / "checkpoints" / "unreadable").glob("*/ckpt-4.index"))) == 1


def test_non_chief_restore_falls_back_without_changing_the_directory(run):
    data_file(run, 4).write_bytes(b"")
    before = tree(run)
    step, _, messages = restore(run, repair=False)
    assert step == 2 and any("falling back to ckpt-2" in m for m in messages), messages
    assert tree(run) == before


def test_no_readable_checkpoint_refuses_naming_them_and_deletes_nothing(run):
    data_file(run, 2).write_bytes(b"")
    data_file(run, 4).write_bytes(b"\0" * 10)
    with pytest.raises(RuntimeError, match=r"none can be read.*ckpt-4.*ckpt-2"):
        restore(run)
    kept = sorted(p.name for p in (run / "checkpoints" / "unreadable").rglob("ckpt-*"))
    assert [name.split(".")[0] for name in kept] == ["ckpt-2", "ckpt-2", "ckpt-4", "ckpt-4"], kept  # index + data


# --- missing index ---------------------------------------------------------------------------------------

def test_missing_index_is_rebuilt_from_the_checkpoint_files_not_a_silent_step_0(run):
    os.remove(run / "checkpoints" / "checkpoint")
    step, _, messages = restore(run)
    assert step == 4, messages
    assert any("index file is missing" in m and "ckpt-4, ckpt-2" in m for m in messages), messages
    state = tf.train.get_checkpoint_state(str(run / "checkpoints"))
    assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == ["ckpt-2", "ckpt-4"]
    assert tf.train.latest_checkpoint(str(run / "checkpoints")) == ckpt(run, 4)


# --- resuming with another config ------------------------------------------------------------------------

def test_resume_with_another_model_config_names_each_field_and_changes_nothing(run):
    before = tree(run)
    config = tiny_config(**{**CONFIG, "train_steps": 6, "ch": 8, "z_dim": 16})
    with pytest.raises(ConfigMismatchError) as raised:
        train(config, str(run), dataset_fn=random_dataset_fn(config), verbose=0)
    message = str(raised.value)
    assert "ch: the run has 4, this config 8 (--config.ch)" in message, message
    assert "z_dim: the run has 8, this config 16 (--config.z_dim)" in message, message
    assert "resolution" not in message and "Nothing in" in message
    assert tree(run) == before  # config.json, checkpoints, no lock left behind
    assert json.loads((run / "config.json").read_text())["ch"] == 4


def test_a_resume_with_auto_keeps_the_recorded_precision_on_a_bfloat16_machine(run, monkeypatch, capsys):
    from sagan_tf.runtime import precision
    monkeypatch.setattr(precision, "native_bfloat16", lambda strategy=None: True)  # AMX here: auto = bfloat16
    assert precision.resolve_precision("auto") == "mixed_bfloat16"
    assert json.loads((run / "config.json").read_text())["mixed_precision"] == "float32"
    # train_steps = the run's step: the model is built and restored, config.json rewritten, nothing trained
    config = tiny_config(**{**CONFIG, "train_steps": 4, "mixed_precision": "auto"})
    model = train(config, str(run), dataset_fn=random_dataset_fn(config), verbose=0)
    assert model.generator.dtype_policy.name == "float32"
    assert json.loads((run / "config.json").read_text())["mixed_precision"] == "float32"
    assert "resuming in the run's recorded precision 'float32'" in capsys.readouterr().out


@pytest.mark.parametrize("requested, recorded, native, expected, message", [
    ("auto", "float32", True, "float32", "would pick 'mixed_bfloat16'"),
    ("auto", "mixed_bfloat16", False, "mixed_bfloat16", "would pick 'float32'"),
    ("auto", "float32", False, "float32", None),                 # same choice: nothing to say
    ("mixed_bfloat16", "float32", False, "mixed_bfloat16", "continues in mixed_precision='mixed_bfloat16'"),
    ("auto", None, True, "mixed_bfloat16", None),                # no checkpoints: a new run, auto decides
])
def test_resume_precision(run, tmp_path, monkeypatch, capsys, requested, recorded, native, expected, message):
    from sagan_tf.runtime import precision
    from sagan_tf.runtime.precision import resume_precision
    monkeypatch.setattr(precision, "native_bfloat16", lambda strategy=None: native)
    if recorded is None:
        model_dir = tmp_path / "new"
        model_dir.mkdir()
        (model_dir / "config.json").write_text(json.dumps({"mixed_precision": "float32"}))  # but no checkpoints
    else:
        model_dir = run
        config = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps({**config, "mixed_precision": recorded}))
    assert resume_precision(requested, str(model_dir)) == expected
    out = capsys.readouterr().out
    assert (message in out) if message else out == ""


@pytest.mark.parametrize("recorded", ["auto", "float16", 32])
def test_resume_precision_names_the_file_with_a_malformed_recorded_policy(run, recorded):
    from sagan_tf.runtime.precision import resume_precision
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "mixed_precision": recorded}))
    with pytest.raises(ConfigMismatchError, match=rf"config\.json records mixed_precision={recorded!r}.*Nothing was changed"):
        resume_precision("auto", str(run))
    assert json.loads((run / "config.json").read_text())["mixed_precision"] == recorded


def test_export_errors_name_the_checkpoint_and_the_cause(run, tmp_path):
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "ch": 8}))
    with pytest.raises(run_dir.RunDirError, match=r"checkpoint '.*ckpt-4' does not hold this run's EMA generator.*config"):
        export_run(str(run), str(tmp_path / "export"))
    (run / "config.json").write_text(json.dumps(config))
    data_file(run, 4).write_bytes(b"")
    with pytest.raises(run_dir.RunDirError, match=r"checkpoint '.*ckpt-4' cannot be read \(IndexError.*--checkpoint="):
        export_run(str(run), str(tmp_path / "export"))
    assert not (tmp_path / "export").exists() or not any(p.name.isdigit() for p in (tmp_path / "export").iterdir())


# --- the run-directory lock ------------------------------------------------------------------------------

@pytest.fixture
def live_process():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield process
    process.kill()
    process.wait()


def write_lock(model_dir, pid, host=None):
    os.makedirs(model_dir, exist_ok=True)
    info = {"pid": pid, "host": host or socket.gethostname(), "started": "2026-01-01T00:00:00", "argv": ["trainer"]}
    (model_dir / LOCK_FILE).write_text(json.dumps(info))


def test_second_writer_fails_at_once_naming_the_holder(run, live_process):
    write_lock(run, live_process.pid)
    before = tree(run)
    config = tiny_config(**{**CONFIG, "train_steps": 6})
    with pytest.raises(RunLockedError, match=rf"pid {live_process.pid} on host '{socket.gethostname()}'"):
        train(config, str(run), dataset_fn=random_dataset_fn(config), verbose=0)
    assert tree(run) == before  # nothing trained, the holder's lock left alone


def test_lock_is_exclusive_released_and_only_its_own_file_is_removed(tmp_path):
    first = RunLock(tmp_path).acquire()
    info = json.loads((tmp_path / LOCK_FILE).read_text())
    assert (info["pid"], info["host"]) == (os.getpid(), socket.gethostname())
    with pytest.raises(RunLockedError, match=rf"pid {os.getpid()} on host"):
        RunLock(tmp_path).acquire()
    first.release()
    assert not (tmp_path / LOCK_FILE).exists()
    # A lock replaced by someone else is not removed by the old holder's release.
    second = RunLock(tmp_path).acquire()
    write_lock(tmp_path, 1)
    second.release()
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == 1


def test_stale_lock_of_a_dead_process_is_taken_over_with_a_message(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_lock(tmp_path, dead.pid)
    messages = []
    with RunLock(tmp_path, log=messages.append):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert len(messages) == 1 and "stale lock" in messages[0] and f"pid {dead.pid}" in messages[0] \
        and "not running" in messages[0], messages
    assert not (tmp_path / LOCK_FILE).exists()


def test_lock_from_another_host_is_not_taken_over(tmp_path):
    write_lock(tmp_path, 1, host="some-other-host")
    with pytest.raises(RunLockedError, match=r"pid 1 on host 'some-other-host'.*remove .*\.lock by hand"):
        RunLock(tmp_path).acquire()


@pytest.mark.parametrize("moment", ["_create_exclusive", "_read"])
def test_a_stop_signal_while_the_lock_is_being_taken_still_releases_it(tmp_path, monkeypatch, moment):
    """The race the slow SIGTERM test hit: the signal arrives once the lock file exists but before
    `acquire` returns (after the exclusive create, or during the read-back that checks it is ours)."""
    import signal

    from sagan_tf.runtime import stop_signals
    from sagan_tf.training.loop import holding
    original = getattr(RunLock, moment)
    sent = []

    def then_a_signal(self, *args):
        result = original(self, *args)
        if (tmp_path / LOCK_FILE).exists() and not sent:  # once: a second signal would exit the process
            sent.append(moment)
            signal.raise_signal(signal.SIGTERM)  # Python runs the handler at the next bytecode
        return result

    monkeypatch.setattr(RunLock, moment, then_a_signal)
    previous = stop_signals.install()
    body = []
    try:
        with pytest.raises(stop_signals.StopRequested):
            with holding(tmp_path):
                body.append("ran")
    finally:
        stop_signals.restore(previous)
    assert sent and body == [] and stop_signals.received() == "SIGTERM"
    assert not (tmp_path / LOCK_FILE).exists()
