"""Multi-worker training: TF_CONFIG clusters of real processes on 127.0.0.1, the local launcher, chief-only
output, equivalence with a single process, failure of a worker, and the fail-fast checks.

The slow tests start 2 worker processes (1 CPU replica each under MultiWorkerMirroredStrategy).
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.training import loop
from sagan_tf.runtime.strategy import get_strategy
from tests import miniature_ilsvrc
from tests.helpers import ROOT

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
needs_fashion_mnist = pytest.mark.skipif(not os.path.isdir(FASHION_MNIST),
                                         reason="dataset-fashion-mnist is not installed")
LAUNCHER = str(ROOT / "scripts" / "launch_local_cluster.py")
TINY = ["--config.ch=4", "--config.z_dim=8", "--config.batch_size=4", "--config.mixed_precision=float32",
        "--config.sync_bn=True", "--config.checkpoint_every=2", "--config.sample_every=2", "--config.log_every=1"]


def worker_env(tmp_path):
    """Environment of the worker processes: quiet TF, and a private TMPDIR to see the non-chief's scratch."""
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", TMPDIR=str(scratch), PYTHONUNBUFFERED="1")
    return env


def launch(tmp_path, num_workers, *trainer, options=(), timeout=240):
    """Runs the launcher; returns (exit code, combined output, {worker index: pid})."""
    result = subprocess.run([sys.executable, LAUNCHER, *options, "--timeout", str(timeout), "--grace", "5",
                             str(num_workers), "--", *trainer], cwd=ROOT, env=worker_env(tmp_path),
                            capture_output=True, text=True, timeout=timeout + 60)
    output = result.stdout + result.stderr
    pids = {int(i): int(pid) for i, pid in re.findall(r"\[launcher\] worker (\d+) .*started, pid (\d+)", output)}
    return result.returncode, output, pids


# ---------------------------------------------------------------------------------------------------------------
# Cheap checks: no cluster needed.
# ---------------------------------------------------------------------------------------------------------------
def test_tpu_strategy_without_tpu_fails_fast(monkeypatch):
    for name in ("TPU_NAME", "KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS", "TPU_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"--strategy=tpu: no TPU found.*--tpu="):
        get_strategy("tpu", tpu=None)
    assert time.monotonic() - start < 10


def test_tpu_trainer_on_a_machine_without_tpu_fails_fast_and_writes_nothing(tmp_path):
    model_dir = tmp_path / "run"
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "trainers.fashion_mnist", f"--model_dir={model_dir}",
                             "--strategy=tpu", "--tpu=local", *TINY], cwd=ROOT, env=worker_env(tmp_path),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "--strategy=tpu: no TPU found at --tpu='local'" in result.stderr, result.stderr[-2000:]
    assert time.monotonic() - start < 90
    assert not model_dir.exists()


def test_global_batch_not_divisible_by_replicas_fails_before_any_work(tmp_path, two_device_strategy):
    from tests.helpers import tiny_config
    model_dir = tmp_path / "run"
    with pytest.raises(ValueError, match=r"batch_size=3 .*not divisible by the number of replicas \(2\)"):
        loop.train(tiny_config(batch_size=3), str(model_dir), strategy=two_device_strategy)
    assert not model_dir.exists()


def test_shell_wrapper_runs_the_launcher(tmp_path):
    result = subprocess.run(["bash", str(ROOT / "scripts" / "launch_local_cluster.sh"), "2", "--", "-c",
                             "import os; print('cluster' in os.environ['TF_CONFIG'])"],
                            env=dict(worker_env(tmp_path), PYTHON=sys.executable), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[worker 0] True" in result.stdout and "[worker 1] True" in result.stdout


def _strategy_for(monkeypatch, tf_config):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    return types.SimpleNamespace(cluster_resolver=tf.distribute.cluster_resolver.TFConfigClusterResolver())


@pytest.mark.parametrize("cluster, task, expected", [
    (None, None, True),
    ({"worker": ["a:1", "b:1"]}, ("worker", 0), True),
    ({"worker": ["a:1", "b:1"]}, ("worker", 1), False),
    ({"chief": ["a:1"], "worker": ["b:1", "c:1"]}, ("chief", 0), True),
    ({"chief": ["a:1"], "worker": ["b:1", "c:1"]}, ("worker", 0), False),
    ({"chief": ["a:1"], "worker": ["b:1", "c:1"]}, ("worker", 1), False),
])
def test_is_chief_from_tf_config(monkeypatch, cluster, task, expected):
    tf_config = None if cluster is None else {"cluster": cluster, "task": {"type": task[0], "index": task[1]}}
    assert loop.is_chief(_strategy_for(monkeypatch, tf_config)) is expected
    assert loop.is_chief(tf.distribute.get_strategy()) is True  # no cluster resolver at all


def _launcher(tmp_path, num_workers, code, *options, timeout=60):
    return launch(tmp_path, num_workers, "-c", code, options=options, timeout=timeout)


def test_launcher_gives_each_worker_its_tf_config_and_prefixes_its_output(tmp_path):
    code = "import json, os; c = json.loads(os.environ['TF_CONFIG']); print(json.dumps(c))"
    rc, output, pids = _launcher(tmp_path, 3, code)
    assert rc == 0, output
    configs = {int(i): json.loads(line) for i, line in re.findall(r"^\[worker (\d)\] (\{.*\})$", output, re.M)}
    assert sorted(configs) == [0, 1, 2] and len(pids) == 3
    workers = configs[0]["cluster"]["worker"]
    assert len(set(workers)) == 3 and all(address.startswith("127.0.0.1:") for address in workers)
    for i, config in configs.items():
        assert config == {"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}
    rc, output, _ = _launcher(tmp_path, 2, code, "--chief")
    configs = {int(i): json.loads(line) for i, line in re.findall(r"^\[worker (\d)\] (\{.*\})$", output, re.M)}
    assert rc == 0 and configs[0]["task"] == {"type": "chief", "index": 0}
    assert configs[1]["task"] == {"type": "worker", "index": 0}
    assert len(configs[1]["cluster"]["chief"]) == len(configs[1]["cluster"]["worker"]) == 1


def test_launcher_stops_every_worker_when_one_fails(tmp_path):
    code = ("import json, os, sys, time; i = json.loads(os.environ['TF_CONFIG'])['task']['index']; "
            "print('up', flush=True); time.sleep(0.5); sys.exit(3) if i == 1 else time.sleep(600)")
    start = time.monotonic()
    rc, output, pids = _launcher(tmp_path, 3, code)
    assert rc == 3, output
    assert time.monotonic() - start < 30
    assert "worker 1 exited with code 3: stopping the other workers" in output
    for pid in pids.values():  # nothing left running
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_launcher_timeout_stops_hung_workers(tmp_path):
    rc, output, pids = _launcher(tmp_path, 2, "import time; time.sleep(600)", timeout=2)
    assert rc == 124 and "timeout" in output
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_launcher_passes_sigterm_to_every_worker(tmp_path):
    # Workers stop cleanly on SIGTERM (as the trainers do: checkpoint, exit 0); the launcher exits 128 + 15.
    code = ("import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: (print('TERM', flush=True), "
            "sys.exit(0))); print('ready', flush=True); time.sleep(600)")
    launcher = subprocess.Popen([sys.executable, LAUNCHER, "--grace", "20", "2", "--", "-c", code], cwd=ROOT,
                                env=worker_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in launcher.stdout:
        lines.append(line)
        if sum("] ready" in seen for seen in lines) == 2:
            break
    launcher.send_signal(signal.SIGTERM)
    output = "".join(lines) + launcher.communicate(timeout=30)[0]
    assert launcher.returncode == 128 + signal.SIGTERM, output
    assert "[worker 0] TERM" in output and "[worker 1] TERM" in output
    assert "stopped: worker 0 exited with code 0, worker 1 exited with code 0" in output


def test_launcher_rejects_a_missing_trainer():
    result = subprocess.run([sys.executable, LAUNCHER, "2", "--"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "trainer" in result.stderr


# ---------------------------------------------------------------------------------------------------------------
# Real 2-worker clusters.
# ---------------------------------------------------------------------------------------------------------------
# SGD instead of Adam: Adam's first steps are ≈ lr·sign(g), so they hide a wrongly scaled gradient and are
# unstable where g ≈ 0; SGD's update is proportional to the gradient.
SGD_DRIVER = """
import os, sys
import keras, numpy as np
from sagan_tf.training import loop
from sagan_tf.runtime.strategy import get_strategy
from tests.test_multi_worker import sgd_config
model_dir, strategy_name = sys.argv[1], sys.argv[2]
loop.make_optimizers = lambda config: (keras.optimizers.SGD(1e-3), keras.optimizers.SGD(1e-3))
strategy = get_strategy(strategy_name)
model = loop.train(sgd_config(), model_dir, strategy=strategy, data_dir=os.environ.get("SAGAN_DATA"), verbose=0)
if loop.is_chief(strategy):
    np.savez(os.path.join(model_dir, "weights.npz"), *[w.numpy() for w in
             model.generator.trainable_weights + model.discriminator.trainable_weights])
"""


def sgd_config():
    """Tiny Fashion-MNIST config; cross-replica BN makes G's batch statistics those of the global batch."""
    from tests.helpers import tiny_config
    return tiny_config(dataset="fashion_mnist_idx", num_classes=10, sync_bn=True, batch_size=4, train_steps=2,
                       checkpoint_every=2, sample_every=2)


def _trainable(model):
    return [w.numpy().copy() for w in model.generator.trainable_weights + model.discriminator.trainable_weights]


def _events_pids(model_dir):
    names = os.listdir(os.path.join(model_dir, "train"))
    return [int(name.split(".")[-3]) for name in names if name.startswith("events.out.tfevents")]


@pytest.mark.slow
@needs_fashion_mnist
def test_two_workers_train_like_one_process_and_only_the_chief_writes(tmp_path, monkeypatch):
    model_dir = str(tmp_path / "multi")
    monkeypatch.setenv("SAGAN_DATA", FASHION_MNIST)
    rc, output, pids = launch(tmp_path, 2, "-c", SGD_DRIVER, model_dir, "multi_worker_mirrored")
    assert rc == 0, output[-5000:]
    assert output.count("on 2 replica(s)") == 2
    # Only the chief (worker 0) wrote: one events file, from its process; the other's scratch dir is gone.
    assert _events_pids(model_dir) == [pids[0]]
    assert tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")).endswith("ckpt-2")
    assert sorted(os.listdir(os.path.join(model_dir, "samples"))) == ["attention_00000002.png", "step_00000002.png"]
    assert os.listdir(tmp_path / "scratch") == []
    multi = [a for _, a in sorted(np.load(os.path.join(model_dir, "weights.npz")).items(),
                                  key=lambda item: int(item[0].split("_")[1]))]

    # The same global batches and noise in this process, on one device.
    monkeypatch.setattr(loop, "make_optimizers",
                        lambda config: (keras.optimizers.SGD(1e-3), keras.optimizers.SGD(1e-3)))
    initial = _trainable(loop.build_model(sgd_config(), tf.distribute.get_strategy()))
    single = _trainable(loop.train(sgd_config(), str(tmp_path / "single"), data_dir=FASHION_MNIST,
                                   verbose=0))
    assert len(multi) == len(single) == len(initial)
    # Compare the updates: a gradient averaged over the local instead of the global batch, or a worker
    # training on the other's rows or on different batches, changes them by O(1). Biases feeding a batch
    # norm get ~1e-8 updates (float noise around a zero gradient): the scale has a floor for them.
    largest = max(np.abs(a - w0).max() for w0, a in zip(initial, single))
    assert largest > 1e-4
    for w0, a, b in zip(initial, single, multi):
        update_single, update_multi = a - w0, b - w0
        scale = max(np.abs(update_single).max(), 1e-3 * largest)
        np.testing.assert_allclose(update_multi / scale, update_single / scale, atol=2e-3)


@pytest.mark.slow
@needs_fashion_mnist
def test_trainer_cli_with_explicit_chief_task(tmp_path):
    model_dir = str(tmp_path / "run")
    rc, output, pids = launch(tmp_path, 2, "trainers.fashion_mnist", f"--model_dir={model_dir}",
                              "--strategy=multi_worker_mirrored", "--train_steps=2", *TINY, options=["--chief"])
    assert rc == 0, output[-5000:]
    assert _events_pids(model_dir) == [pids[0]]  # the "chief" task, not worker 0 (launched second)
    assert tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")).endswith("ckpt-2")
    assert os.path.exists(os.path.join(model_dir, "samples", "step_00000002.png"))
    assert os.path.exists(os.path.join(model_dir, "config.json"))
    assert os.listdir(tmp_path / "scratch") == []


@pytest.mark.slow
def test_batch_not_divisible_by_total_replicas_fails_on_every_worker_before_any_work(tmp_path):
    model_dir = tmp_path / "run"
    rc, output, _ = launch(tmp_path, 2, "trainers.fashion_mnist", f"--model_dir={model_dir}",
                           "--strategy=multi_worker_mirrored", "--train_steps=2", *TINY, "--config.batch_size=3")
    assert rc != 0
    for worker in (0, 1):
        assert re.search(rf"\[worker {worker}\] .*batch_size=3 .*not divisible by the number of replicas \(2\)",
                         output), output[-3000:]
    assert not model_dir.exists()


def _latest_step(checkpoints):
    latest = tf.train.latest_checkpoint(checkpoints)
    return int(latest.rsplit("-", 1)[1]) if latest else 0


def _start_worker(index, ports, args, env, log):
    tf_config = {"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                 "task": {"type": "worker", "index": index}}
    return subprocess.Popen([sys.executable, "-m", "trainers.fashion_mnist", *args], cwd=ROOT,
                            env=dict(env, TF_CONFIG=json.dumps(tf_config)), stdout=log, stderr=subprocess.STDOUT)


@pytest.mark.slow
@needs_fashion_mnist
def test_killed_worker_stops_the_others_and_a_relaunch_resumes(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    from launch_local_cluster import free_ports
    model_dir = str(tmp_path / "run")
    checkpoints = os.path.join(model_dir, "checkpoints")
    args = [f"--model_dir={model_dir}", "--strategy=multi_worker_mirrored", "--train_steps=100000", *TINY]
    env, ports = worker_env(tmp_path), free_ports(2)
    logs = [open(tmp_path / f"worker{i}.log", "w") for i in range(2)]
    workers = [_start_worker(i, ports, args, env, logs[i]) for i in range(2)]
    try:
        deadline = time.monotonic() + 240
        while _latest_step(checkpoints) < 2:
            assert time.monotonic() < deadline and all(w.poll() is None for w in workers), \
                (tmp_path / "worker0.log").read_text()[-3000:]
            time.sleep(0.5)
        workers[1].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        # TF's coordination service notices the missing heartbeats and aborts the pending collectives.
        code = workers[0].wait(timeout=90)
        assert code != 0 and time.monotonic() - killed_at < 90
        log = (tmp_path / "worker0.log").read_text()
        assert re.search(r"Collective ops is aborted|unhealthy|Connection reset", log), log[-3000:]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
            worker.wait()
        for log in logs:
            log.close()

    last = _latest_step(checkpoints)
    assert last >= 2
    rc, output, _ = launch(tmp_path, 2, "trainers.fashion_mnist", *args[:-len(TINY) - 1],
                           f"--train_steps={last + 2}", *TINY)
    assert rc == 0, output[-5000:]
    assert output.count(f"Resuming at step {last}; training to step {last + 2} on 2 replica(s)") == 2
    assert tf.train.latest_checkpoint(checkpoints).endswith(f"ckpt-{last + 2}")


PER_WORKER_MODEL_DIR = """
import json, os, runpy, sys
index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
sys.argv = ["fashion_mnist", f"--model_dir={sys.argv[1]}{index}", *sys.argv[2:]]
runpy.run_module("trainers.fashion_mnist", run_name="__main__")
"""


@pytest.mark.slow
@needs_fashion_mnist
def test_workers_restoring_different_steps_fail_with_a_clear_error(tmp_path):
    # Worker 0's model_dir holds a step-2 checkpoint, worker 1's (not shared) holds nothing.
    prefix = str(tmp_path / "run")
    result = subprocess.run([sys.executable, "-m", "trainers.fashion_mnist", f"--model_dir={prefix}0",
                             "--train_steps=2", *TINY], cwd=ROOT, env=worker_env(tmp_path), capture_output=True,
                            text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    rc, output, _ = launch(tmp_path, 2, "-c", PER_WORKER_MODEL_DIR, prefix, "--strategy=multi_worker_mirrored",
                           "--train_steps=4", *TINY)
    assert rc != 0
    assert re.search(r"\[worker \d\] RuntimeError: the workers restored different steps \(this one: [02], mean 1\)"
                     r".*--model_dir must be storage every worker reads", output), output[-3000:]
    assert tf.train.latest_checkpoint(prefix + "0/checkpoints").endswith("ckpt-2")
    assert not os.path.exists(prefix + "1/checkpoints")


WORKER_1_HAS_NATIVE_BFLOAT16 = """
import json, os, runpy, sys
from sagan_tf.runtime import precision
index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
precision.native_bfloat16 = lambda strategy=None, native=index == 1: native  # "auto": bf16 on worker 1 only
sys.argv = ["fashion_mnist", *sys.argv[1:]]
runpy.run_module("trainers.fashion_mnist", run_name="__main__")
"""


@pytest.mark.slow
@needs_fashion_mnist
def test_workers_resolving_auto_differently_all_train_in_float32(tmp_path):
    model_dir = str(tmp_path / "run")
    rc, output, _ = launch(tmp_path, 2, "-c", WORKER_1_HAS_NATIVE_BFLOAT16, f"--model_dir={model_dir}",
                           "--strategy=multi_worker_mirrored", "--train_steps=2",
                           *[flag for flag in TINY if "mixed_precision" not in flag], "--config.mixed_precision=auto")
    assert rc == 0, output[-3000:]
    for worker in (0, 1):
        assert re.search(rf"\[worker {worker}\] mixed_precision: 1 of 2 replicas resolved 'mixed_bfloat16', the "
                         r"others 'float32'; every worker trains in 'float32'", output), output[-3000:]
    with open(os.path.join(model_dir, "config.json")) as f:
        assert json.load(f)["mixed_precision"] == "float32"
    assert tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")).endswith("ckpt-2")


@pytest.mark.slow
def test_tfds_imagenet_on_two_workers_chief_prepares_each_reads_its_share(tmp_path):
    # A --data_dir that does not exist yet: the chief prepares the miniature ILSVRC2012 there while the
    # other worker waits; then each worker reads and decodes only its half of the records.
    manual_dir = miniature_ilsvrc.write(tmp_path / "ilsvrc")
    model_dir, data_dir = str(tmp_path / "run"), str(tmp_path / "tfds")
    rc, output, _ = launch(tmp_path, 2, "trainers.imagenet", f"--model_dir={model_dir}", f"--data_dir={data_dir}",
                           f"--config.manual_dir={manual_dir}", "--train_steps=2", "--strategy=multi_worker_mirrored",
                           "--config.resolution=32", "--config.g_attention=(16,)", "--config.d_attention=(16,)", *TINY)
    assert rc == 0, output[-3000:]
    assert re.search(r"\[worker 0\] Preparing TFDS dataset 'imagenet2012'", output), output[-3000:]
    assert not re.search(r"\[worker 1\] Preparing", output)
    assert re.search(r"\[worker 1\] TFDS dataset imagenet2012 5.1.0 ready", output)
    n = len(miniature_ilsvrc.train_file_names())  # 15 records in one file: one record in 2 for each worker
    assert re.search(rf"\[worker 0\] input pipeline 1/2: imagenet2012 train, one record in 2 of 1 record file\(s\), "
                     rf"{(n + 1) // 2} records per epoch", output), output[-3000:]
    assert re.search(rf"\[worker 1\] input pipeline 2/2: .* {n // 2} records per epoch", output)
    assert tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")).endswith("ckpt-2")
