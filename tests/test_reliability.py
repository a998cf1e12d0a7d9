"""Faults a long run meets: kill -9 at random moments, a full disk while checkpointing, a second
trainer on the same model_dir, SIGTERM before training starts, a second signal.

(SIGTERM, non-finite losses, bad flags, corrupt images and interrupted exports are tested beside
the code they exercise: test_trainers.py, test_training.py, test_data*.py, test_export.py.)
"""
import os
import random
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from sagan_tf.training import train
from tests.helpers import ROOT, tiny_config
from tests.shared_runs import in_memory_dataset

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


def logged_steps(model_dir):
    """The G steps that TensorBoard saw completed (log_every=1)."""
    steps = set()
    for name in (model_dir / "train").glob("events*"):
        try:
            for event in tf.compat.v1.train.summary_iterator(str(name)):
                if event.summary.value:
                    steps.add(event.step)
        except tf.errors.DataLossError:  # the last record of a killed writer may be truncated
            pass
    return steps


def checkpoint_step(model_dir):
    latest = tf.train.latest_checkpoint(str(model_dir / "checkpoints"))
    return 0 if latest is None else int(latest.rsplit("-", 1)[1])


def assert_checkpoint_loads_finite(model_dir):
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(model_dir / "checkpoints")))
    for name in reader.get_variable_to_shape_map():
        value = np.asarray(reader.get_tensor(name))
        if np.issubdtype(value.dtype, np.floating):
            assert np.all(np.isfinite(value)), name


@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("a", "b", "c"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "data" / label / f"{i}.png")
    return tmp_path / "data"


def trainer_command(data, model_dir, steps, checkpoint_every):
    return [sys.executable, "-m", "trainers.image_folder", f"--data_dir={data}", "--resolution=32",
            f"--model_dir={model_dir}", f"--train_steps={steps}", "--config.ch=4", "--config.z_dim=8",
            "--config.batch_size=4", "--config.mixed_precision=float32", "--config.g_attention=(16,)",
            "--config.d_attention=(16,)", f"--config.checkpoint_every={checkpoint_every}",
            "--config.sample_every=1000", "--config.log_every=1"]


@pytest.mark.slow
def test_kill_9_at_random_moments_loses_at_most_one_interval(tmp_path, image_folder):
    model_dir, every, total = tmp_path / "run", 3, 400
    rng = random.Random(7)
    previous_checkpoint, seen = 0, 0
    for attempt in range(5):
        process = subprocess.Popen(trainer_command(image_folder, model_dir, total, every), cwd=ROOT, env=ENV,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        # Wait for this process to make progress of its own, then kill it at a random moment.
        while time.time() < deadline and process.poll() is None and max(logged_steps(model_dir), default=0) <= seen:
            time.sleep(0.2)
        time.sleep(rng.uniform(0.0, 3.0))  # lands in steps and in checkpoint writes alike
        process.send_signal(signal.SIGKILL)
        process.wait()
        done = seen = max(logged_steps(model_dir), default=0)
        assert done < total, "the run finished before it could be killed; raise `total`"
        resumed_from = checkpoint_step(model_dir)
        assert resumed_from >= previous_checkpoint, "the step counter went backwards"
        assert resumed_from >= done - every, f"lost more than one interval: saw step {done}, checkpoint {resumed_from}"
        if resumed_from:
            assert_checkpoint_loads_finite(model_dir)
        print(f"attempt {attempt}: exit {process.returncode}, logged up to step {done}, checkpoint {resumed_from}")
        previous_checkpoint = resumed_from
    assert (model_dir / ".lock").exists()  # a killed run cannot release its lock...
    result = subprocess.run(trainer_command(image_folder, model_dir, total, every), cwd=ROOT, env=ENV,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Taking over the stale lock" in result.stderr and "is not running" in result.stderr  # ...the next takes it
    assert not (model_dir / ".lock").exists()
    assert checkpoint_step(model_dir) == total
    assert_checkpoint_loads_finite(model_dir)


@pytest.fixture
def small_disk(tmp_path):
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount_point)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.mark.slow  # fault injection, ~45 s: runs in .ci/run with the other slow tests
def test_disk_full_while_checkpointing_keeps_previous_checkpoint(small_disk):
    config = tiny_config(train_steps=2, checkpoint_every=2, sample_every=1000, log_every=1000)
    model_dir = small_disk / "run"
    dataset_fn = lambda start: in_memory_dataset(4, start)
    train(config, str(model_dir), dataset_fn=dataset_fn, verbose=0)
    assert checkpoint_step(model_dir) == 2
    # Fill the disk, leaving too little for another checkpoint.
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    with open(small_disk / "filler", "wb") as f:
        f.write(b"\0" * max(free - 20_000, 0))
    config.train_steps = 4
    with pytest.raises(OSError, match=r"could not write the step-4 checkpoint.*ckpt-2 is unchanged"):
        train(config, str(model_dir), dataset_fn=dataset_fn, verbose=0)
    os.remove(small_disk / "filler")
    assert checkpoint_step(model_dir) == 2
    assert_checkpoint_loads_finite(model_dir)
    # And the run resumes from it once there is space again.
    model = train(config, str(model_dir), dataset_fn=dataset_fn, verbose=0)
    assert int(model.step) == 4 and checkpoint_step(model_dir) == 4


@pytest.mark.slow
def test_export_killed_mid_write_never_shows_a_half_written_version(tmp_path):
    model_dir, export_base = tmp_path / "run", tmp_path / "export"
    train(tiny_config(train_steps=1), str(model_dir), dataset_fn=lambda start: in_memory_dataset(4, start), verbose=0)
    command = [sys.executable, "-m", "export.saved_model", f"--model_dir={model_dir}", f"--export_base={export_base}"]
    start = time.monotonic()
    subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, check=True, timeout=300)
    duration = time.monotonic() - start  # kills below land before, during and after the write
    rng = random.Random(3)
    complete = 0
    for attempt in range(6):
        process = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.4, 1.1) * duration)
        process.send_signal(signal.SIGKILL)
        process.wait()
        versions = [p for p in export_base.iterdir() if p.name.isdigit()] if export_base.exists() else []
        for version in versions:  # every visible version is whole: it loads and generates
            loaded = tf.saved_model.load(str(version))
            images = loaded.signatures["serving_default"](z=tf.zeros([1, 8]), label=tf.constant([0]))["images"]
            assert images.shape == (1, 32, 32, 1) and np.all(np.isfinite(images.numpy()))
        complete = len(versions)
    assert complete >= 1
    print(f"{complete} complete versions after one clean export and 6 kills")


def _wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.1)


@pytest.mark.slow
def test_second_trainer_on_the_same_model_dir_fails_at_once_naming_the_first(tmp_path, image_folder):
    model_dir = tmp_path / "run"
    first = subprocess.Popen(trainer_command(image_folder, model_dir, 100000, 3), cwd=ROOT, env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait(lambda: max(logged_steps(model_dir), default=0) >= 1 or first.poll() is not None, 240, "the first run")
        start = time.monotonic()
        second = subprocess.Popen(trainer_command(image_folder, model_dir, 100000, 3), cwd=ROOT, env=ENV,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _, second_err = second.communicate(timeout=240)
        took = time.monotonic() - start  # from Popen to exit
        assert second.returncode == 1, second_err[-3000:]
        assert f"in use by another training run: pid {first.pid} on host" in second_err, second_err[-3000:]
        assert "Traceback" not in second_err
        # The lock is taken before TensorFlow is imported (tests/test_early_lock.py checks that no TF module
        # is imported); before that, the refusal came after TF's import and the model build (~26 s here).
        assert took < 5, f"the second trainer was refused only {took:.1f} s after it started"
        print(f"second trainer refused {took:.1f} s after it started")
        steps_before = max(logged_steps(model_dir))
        _wait(lambda: max(logged_steps(model_dir)) > steps_before, 120, "the first run to keep training")
        assert first.poll() is None
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=120)
        assert first.returncode == 0, err[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert not (model_dir / ".lock").exists()


def _lock_pid(model_dir):
    import json
    try:
        return json.loads((model_dir / ".lock").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


@pytest.mark.slow
def test_sigterm_before_training_starts_stops_cleanly_and_a_second_signal_exits_at_once(tmp_path, image_folder):
    model_dir = tmp_path / "run"
    # A short run leaves a checkpoint, so that the next start spends its first seconds restoring.
    done = subprocess.run(trainer_command(image_folder, model_dir, 3, 3), cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    before = checkpoint_step(model_dir)
    outcomes = []
    for phase in ("as soon as the lock is taken (building, restoring, data)", "during training, twice"):
        process = subprocess.Popen(trainer_command(image_folder, model_dir, 100000, 1000), cwd=ROOT, env=ENV,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        streams = {"out": [], "err": []}  # read as they come, so the test can wait for a line
        readers = [threading.Thread(target=lambda pipe=pipe, lines=lines: lines.extend(pipe), daemon=True)
                   for pipe, lines in ((process.stdout, streams["out"]), (process.stderr, streams["err"]))]
        for reader in readers:
            reader.start()
        try:
            if phase.startswith("as soon"):
                _wait(lambda: _lock_pid(model_dir) == process.pid or process.poll() is not None, 240, "the lock")
                process.send_signal(signal.SIGTERM)
            else:
                seen = max(logged_steps(model_dir), default=0)
                _wait(lambda: max(logged_steps(model_dir), default=0) > seen or process.poll() is not None, 240,
                      "a training step")
                process.send_signal(signal.SIGTERM)
                # The second signal once the first was seen (as a user presses Ctrl-C again after the message):
                # two signals that both arrive during one TensorFlow call reach Python's handler as one.
                _wait(lambda: any("checkpointing and stopping" in line for line in streams["out"])
                      or process.poll() is not None, 120, "the first signal's message")
                sent = time.monotonic()
                process.send_signal(signal.SIGTERM)
            process.wait(timeout=120)
            for reader in readers:
                reader.join(timeout=30)
            out, err = "".join(streams["out"]), "".join(streams["err"])
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        outcomes.append((phase, process.returncode))
        assert not (model_dir / ".lock").exists(), phase
        if phase.startswith("as soon"):
            assert process.returncode == 0, err[-3000:]  # not -15 (143)
            assert "SIGTERM received before training started: stopping cleanly" in err, err[-3000:]
            assert checkpoint_step(model_dir) == before and "Resuming" not in out
        else:
            assert process.returncode == 143, (out[-2000:], err[-3000:])
            assert "SIGTERM received again: exiting now" in err
            assert time.monotonic() - sent < 10
    print(outcomes)
