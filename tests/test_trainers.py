"""Each trainer CLI, run as a user would in a subprocess, on a tiny config."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests import miniature_ilsvrc
from tests.helpers import CLI_ENV, ROOT, run_cli

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
TINY = ["--config.ch=4", "--config.z_dim=8", "--config.batch_size=4", "--config.mixed_precision=float32",
        "--config.checkpoint_every=2", "--config.sample_every=2", "--config.log_every=1"]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


def assert_run_outputs(model_dir, step):
    assert tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")).endswith(f"ckpt-{step}")
    events = os.listdir(os.path.join(model_dir, "train"))
    assert any(name.startswith("events.out.tfevents") for name in events)
    assert os.path.exists(os.path.join(model_dir, "samples", f"step_{step:08d}.png"))
    assert os.path.exists(os.path.join(model_dir, "config.json"))


@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST), reason="dataset-fashion-mnist is not installed")
@pytest.mark.slow  # trains or runs CLIs for tens of seconds (docs/testing.md)
def test_fashion_mnist_trainer_writes_checkpoint_events_and_samples(tmp_path):
    model_dir = str(tmp_path / "fmnist")
    result = run_cli("trainers.fashion_mnist", f"--model_dir={model_dir}", "--train_steps=2", *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_run_outputs(model_dir, 2)
    sheet = np.asarray(Image.open(os.path.join(model_dir, "samples", "step_00000002.png")))
    assert sheet.shape == (10 * 32, 8 * 32)  # one row per class, 8 samples each, 1 channel
    overlays = np.asarray(Image.open(os.path.join(model_dir, "samples", "attention_00000002.png")))
    assert overlays.shape[0] == 4 * 32 * 4 and overlays.shape[-1] == 3  # 4 samples, 4× upscaled, RGB heat
    # A rerun with a larger --train_steps resumes and continues to the new total.
    result = run_cli("trainers.fashion_mnist", f"--model_dir={model_dir}", "--train_steps=4", *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resuming at step 2" in result.stdout
    assert_run_outputs(model_dir, 4)


@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST), reason="dataset-fashion-mnist is not installed")
@pytest.mark.slow  # trains for tens of seconds (docs/testing.md)
def test_the_shipped_recipe_preset_trains_with_its_rates_from_the_command_line(tmp_path):
    """`--config=configs/fashion_mnist_ttur2x.py` (the quickstart's and the shipped model's recipe) is what
    the run records and what its optimizers hold."""
    model_dir = tmp_path / "fmnist"
    result = run_cli("trainers.fashion_mnist", "--config=configs/fashion_mnist_ttur2x.py", f"--model_dir={model_dir}",
                     "--train_steps=2", *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    recorded = json.loads((model_dir / "config.json").read_text())
    assert (recorded["g_lr"], recorded["d_lr"], recorded["ch"]) == (2e-4, 8e-4, 4)
    reader = tf.train.load_checkpoint(str(model_dir / "checkpoints"))
    rates = {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map() if "learning_rate" in name}
    assert sorted(np.round(list(rates.values()), 8)) == [2e-4, 8e-4], rates


IMAGENET_TINY = ["--strategy=mirrored", "--num_cpu_devices=2", "--config.resolution=32",
                 "--config.g_attention=(16,)", "--config.d_attention=(16,)", *TINY]


def run_imagenet(tmp_path, steps):
    """trainers.imagenet with its default seed, TFDS preparing a miniature ILSVRC2012 (the real archive
    layout) into a --data_dir that does not exist yet on the first call."""
    manual_dir = tmp_path / "ilsvrc"
    if not manual_dir.exists():
        miniature_ilsvrc.write(manual_dir)
    return run_cli("trainers.imagenet", f"--data_dir={tmp_path / 'tfds'}", f"--config.manual_dir={manual_dir}",
                   f"--model_dir={tmp_path / 'run'}", f"--train_steps={steps}", *IMAGENET_TINY)


@pytest.mark.slow  # ~50 s: a CLI process on 2 logical devices (the reader itself: test_data_tfds.py)
def test_imagenet_trainer_prepares_the_ilsvrc_archives_and_trains(tmp_path):
    result = run_imagenet(tmp_path, 2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Preparing TFDS dataset 'imagenet2012'" in result.stdout
    assert "input pipeline 1/1: imagenet2012 train, 1 of 1 record files, 15 records per epoch" in result.stdout
    assert "on 2 replica(s)" in result.stdout
    assert_run_outputs(str(tmp_path / "run"), 2)


@pytest.mark.slow
def test_imagenet_trainer_rerun_resumes_on_the_prepared_data(tmp_path):
    assert run_imagenet(tmp_path, 2).returncode == 0
    result = run_imagenet(tmp_path, 3)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resuming at step 2" in result.stdout and "Preparing" not in result.stdout
    assert tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints")).endswith("ckpt-3")


@pytest.mark.parametrize("flag, message", [
    ("--config.d_attention=(32,)", r"config.d_attention=\[32\] is not allowed; allowed: sizes from \[8, 16\]"),
    ("--config.d_lr=-0.1", r"config.d_lr=-0.1 is not allowed"),
    ("--strategy=gpu_cluster", r"gpu_cluster"),
    ("--data_dir=/nonexistent/fmnist", r"--data_dir=/nonexistent/fmnist does not exist"),
    ("--config.batch_size=5", r"batch_size=5.*replicas \(2\)"),
])
def test_bad_flags_fail_before_any_work(tmp_path, flag, message):
    model_dir = tmp_path / "untouched"
    result = run_cli("trainers.fashion_mnist", f"--model_dir={model_dir}", "--num_cpu_devices=2",
                     "--strategy=mirrored", *TINY, flag) if "strategy" not in flag else run_cli(
        "trainers.fashion_mnist", f"--model_dir={model_dir}", *TINY, flag)
    assert result.returncode != 0
    assert re.search(message, result.stderr), result.stderr[-2000:]
    assert not model_dir.exists()


@pytest.mark.slow  # fault injection: a training process stopped by SIGTERM
@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST), reason="dataset-fashion-mnist is not installed")
def test_sigterm_checkpoints_and_exits_zero(tmp_path):
    model_dir = tmp_path / "preempted"
    process = subprocess.Popen(
        [sys.executable, "-m", "trainers.fashion_mnist", f"--model_dir={model_dir}", "--train_steps=100000",
         *TINY[:-3], "--config.checkpoint_every=100000", "--config.sample_every=100000", "--config.log_every=1"],
        cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not any((model_dir / "train").glob("events*")) and process.poll() is None:
        time.sleep(0.5)
    time.sleep(8)  # let it take a few steps
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-3000:]
    assert "SIGTERM received" in stdout
    latest = tf.train.latest_checkpoint(str(model_dir / "checkpoints"))
    assert latest is not None and int(latest.rsplit("-", 1)[1]) > 0


def test_run_cli_gives_what_a_plain_python_m_process_gives(tmp_path):
    """tests.helpers.run_cli forks the CLI from a server with TensorFlow imported: exit status, stdout and
    stderr must be a plain `python -m` process's, for a flag error (absl, before main) and a usage error
    (main's validation), both with the trainer's own usage text."""
    for flag in ("--num_cpu_devices=-1", "--config.d_lr=-0.1"):
        args = ["trainers.fashion_mnist", f"--model_dir={tmp_path / 'untouched'}", flag]
        forked = run_cli(*args)
        plain = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=CLI_ENV, capture_output=True, text=True,
                               timeout=300)
        # TensorFlow's C++ start-up lines are printed once, by the server's import, not by each child.
        startup = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\).*|[IWE]\d{4} .*\] .*)\n", re.M)
        assert not startup.search(forked.stderr)
        assert (forked.returncode, forked.stdout, forked.stderr) == (plain.returncode, plain.stdout,
                                                                       startup.sub("", plain.stderr))
        assert forked.returncode == 1 and flag.split("=")[0].lstrip("-") in forked.stderr
    assert "Train SAGAN on Fashion-MNIST" in forked.stderr  # the usage text is the trainer's docstring
    assert not (tmp_path / "untouched").exists()


def test_an_unreachable_tpu_is_a_usage_error_not_a_traceback(tmp_path):
    """--strategy=tpu where no TPU can be reached (this machine has none) ends as a usage error naming the
    flag value, with the trainer's usage text, before anything is written."""
    result = run_cli("trainers.fashion_mnist", f"--model_dir={tmp_path / 'untouched'}", "--strategy=tpu", "--tpu=local")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "--strategy=tpu: no TPU found at --tpu='local'" in result.stderr
    assert "Train SAGAN on Fashion-MNIST" in result.stderr
    assert not (tmp_path / "untouched").exists()
