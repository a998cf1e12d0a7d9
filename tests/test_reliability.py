"""Faults a long run meets: kill -9 at random moments, a full disk while checkpointing, writing a sample
sheet or exporting, a second trainer on the same model_dir, SIGTERM before training starts, a second signal.

(SIGTERM, non-finite losses, bad flags, corrupt images and interrupted exports are tested beside
the code they exercise: test_trainers.py, test_training.py, test_data*.py, test_export.py.)
"""
import contextlib
import errno
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from sagan_tf.run import files
from sagan_tf.training import train
from tests.helpers import ROOT, run_cli, tiny_config, trained_run
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


@contextlib.contextmanager
def tmpfs(mount_point, size):
    """A size-limited tmpfs mounted at `mount_point` (created) for the block; skips the test without root."""
    os.makedirs(mount_point, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(disk, leave=0):
    """Fills the file system of `disk` up to `leave` bytes free, with `<disk>/filler`."""
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with open(os.path.join(disk, "filler"), "wb") as f:
        f.write(b"\0" * max(free - leave, 0))


@pytest.fixture
def small_disk(tmp_path):
    with tmpfs(tmp_path / "disk", "3m") as mount_point:
        yield mount_point


@pytest.mark.slow  # fault injection, ~45 s: runs in .ci/run with the other slow tests
def test_disk_full_while_checkpointing_keeps_previous_checkpoint(small_disk):
    config = tiny_config(train_steps=2, checkpoint_every=2, sample_every=1000, log_every=1000)
    model_dir = small_disk / "run"
    dataset_fn = lambda start: in_memory_dataset(4, start)
    train(config, str(model_dir), dataset_fn=dataset_fn, verbose=0)
    assert checkpoint_step(model_dir) == 2
    fill(small_disk, leave=20_000)  # too little for another checkpoint
    config.train_steps = 4
    before = sorted(os.listdir(model_dir / "checkpoints"))
    with pytest.raises(OSError, match=r"could not write the step-4 checkpoint.*No space left on device.*ckpt-2 is "
                                      r"unchanged; removed the failed save's partial files \['ckpt-4_temp'\]"):
        train(config, str(model_dir), dataset_fn=dataset_fn, verbose=0)
    # Nothing of the failed save where a reader would look: no ckpt-4 files, no temporary directory.
    assert sorted(os.listdir(model_dir / "checkpoints")) == before
    assert not (model_dir / ".lock").exists()
    os.remove(small_disk / "filler")
    assert checkpoint_step(model_dir) == 2
    assert_checkpoint_loads_finite(model_dir)
    # And the run resumes from it once there is space again.
    model = train(config, str(model_dir), dataset_fn=dataset_fn, verbose=0)
    assert int(model.step) == 4 and checkpoint_step(model_dir) == 4


class FullDiskGfile:
    """`tf.io.gfile` as `sagan_tf.run.files` uses it, except that a file written under a path containing
    `where` gets half of its bytes, then the write fails with ENOSPC (a full disk where no tmpfs can be mounted)."""

    def __init__(self, where):
        self.where = where

    def __getattr__(self, name):
        return getattr(tf.io.gfile, name)

    def GFile(self, path, mode="r"):
        opened = tf.io.gfile.GFile(path, mode)
        if "w" not in mode or self.where not in path:
            return opened
        where = self.where

        class HalfWritten:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                opened.close()

            def write(self, data):
                opened.write(data[:len(data) // 2])
                opened.flush()
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f"{path} (under {where})")

        return HalfWritten()


def test_a_sample_sheet_that_cannot_be_written_is_a_warning_naming_it_and_leaves_no_file(tmp_path, monkeypatch,
                                                                                         capsys):
    from sagan_tf.training.callbacks import SampleGrid
    monkeypatch.setattr(files, "gfile", FullDiskGfile(str(tmp_path / "samples")))
    path = str(tmp_path / "samples" / "step_00000004.png")
    assert SampleGrid.save_sheet(path, np.zeros([8, 8, 1], np.uint8)) is False
    assert f"WARNING: could not write the sample sheet {path} (OSError: [Errno 28] No space left on device" \
        in capsys.readouterr().err
    assert os.listdir(tmp_path / "samples") == []  # the half-written temporary file is gone
    monkeypatch.undo()
    assert SampleGrid.save_sheet(path, np.zeros([8, 8, 1], np.uint8)) is True
    assert os.listdir(tmp_path / "samples") == ["step_00000004.png"]


def _image_steps(model_dir, tag):
    steps = []
    for name in sorted((model_dir / "train").glob("events*")):
        for event in tf.compat.v1.train.summary_iterator(str(name)):
            steps += [event.step for value in event.summary.value if value.tag == tag]
    return sorted(steps)


@pytest.mark.slow  # two tiny runs, ~30 s each
@pytest.mark.parametrize("disk", ["tmpfs", "wrapper"])
def test_disk_full_for_sample_sheets_warns_naming_them_and_training_goes_on(tmp_path, monkeypatch, capfd, disk):
    model_dir = tmp_path / "run"
    samples = model_dir / "samples"
    with contextlib.ExitStack() as stack:
        if disk == "tmpfs":  # samples/ on its own full file system; the rest of model_dir has room
            stack.enter_context(tmpfs(samples, "64k"))
            fill(samples)
        else:
            monkeypatch.setattr(files, "gfile", FullDiskGfile(str(samples)))
        config = tiny_config(train_steps=2, checkpoint_every=2, sample_every=1, log_every=1)
        model = train(config, str(model_dir), dataset_fn=lambda start: in_memory_dataset(4, start), verbose=0)
        err = capfd.readouterr().err
        left = sorted(os.listdir(samples))
    assert int(model.step) == 2 and checkpoint_step(model_dir) == 2  # the run was not stopped by its sheets
    for step in (1, 2):
        for kind in ("step", "attention"):
            assert f"WARNING: could not write the sample sheet {samples / f'{kind}_{step:08d}.png'} (" in err, err[-3000:]
    assert "No space left on device" in err
    assert left == (["filler"] if disk == "tmpfs" else [])  # no PNG, no partial temporary file
    assert _image_steps(model_dir, "ema_samples") == [1, 2]  # the frames are still in TensorBoard
    assert_checkpoint_loads_finite(model_dir)


@pytest.mark.slow  # two exports of the session's tiny run and one export CLI, ~1 min
def test_disk_full_while_exporting_keeps_the_previous_version_loadable_and_servable(tmp_path):
    from export import saved_model as export_lib
    from export import serving_config
    model_dir, _ = trained_run()
    z, labels = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32), np.array([0, 1, 2], np.int32)

    def serve(version_dir):  # a fresh load and a call of the serving signature, as a server makes them
        images = tf.saved_model.load(str(version_dir)).signatures["serving_default"](
            z=tf.constant(z), label=tf.constant(labels))["images"].numpy()
        assert images.shape == (3, 32, 32, 1) and np.all(np.isfinite(images))
        return images

    with tmpfs(tmp_path / "disk", "32m") as disk:
        base = disk / "export"
        first = export_lib.export_run(model_dir, str(base))
        served = serve(first)
        serving_files = {name: (base / name).read_bytes() for name in ("models.config", "batching_parameters.txt")}
        fill(disk, leave=20_000)
        with pytest.raises(OSError, match=re.escape(f"could not write export version 2 to {base / '2'} (") + r".*"
                           r"No space left on device.*nothing was published.*versions already in .* \(1\) are unchanged"):
            export_lib.export_run(model_dir, str(base))
        assert sorted(os.listdir(base)) == ["1", "batching_parameters.txt", "models.config"]  # no temp dir
        assert {name: (base / name).read_bytes() for name in serving_files} == serving_files
        np.testing.assert_array_equal(serve(first), served)
        assert len(serving_config.read_warmup(os.path.join(first, "assets.extra", "tf_serving_warmup_requests"))) > 0
        # The CLI says the same in one line, without a traceback, and exits 1.
        result = run_cli("export.saved_model", f"--model_dir={model_dir}", f"--export_base={base}")
        assert result.returncode == 1 and "error: could not write export version 2 to" in result.stderr, \
            result.stderr[-3000:]
        assert "Traceback" not in result.stderr
        assert sorted(os.listdir(base)) == ["1", "batching_parameters.txt", "models.config"]
        os.remove(disk / "filler")  # with room again, the next export is version 2
        second = export_lib.export_run(model_dir, str(base))
        assert second == str(base / "2")
        np.testing.assert_array_equal(serve(second), served)


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
