"""The trainer CLIs take the run lock before TensorFlow is imported: a second trainer on a model_dir that
another run holds is refused within seconds, naming the holder, without TensorFlow ever starting."""
import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest

from sagan_tf.run import run_lock
from sagan_tf.run.run_lock import LOCK_FILE, RunLock
from sagan_tf.runtime.lock_holding import holding_run_lock, is_chief_task
from tests.helpers import CLI_ENV, ROOT

# `python -X importtime` writes one line per module imported, as it is imported: "import time: self | total | name".
IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)\s*$", re.M)


@pytest.fixture
def held_model_dir(tmp_path):
    """A model_dir whose lock a live process (another "trainer") holds."""
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    info = {"pid": holder.pid, "host": socket.gethostname(), "started": "2026-01-01T00:00:00", "argv": ["trainer"]}
    (model_dir / LOCK_FILE).write_text(json.dumps(info))
    yield model_dir, holder.pid
    holder.kill()
    holder.wait()


@pytest.mark.parametrize("trainer, args", [
    ("trainers.fashion_mnist", []),
    ("trainers.image_folder", ["--data_dir={data}", "--resolution=32"]),  # its flags scan the folder (TF)
    ("trainers.imagenet", []),
])
def test_a_second_trainer_is_refused_before_tensorflow_is_imported(tmp_path, held_model_dir, trainer, args):
    model_dir, holder = held_model_dir
    (tmp_path / "data" / "a").mkdir(parents=True)
    command = [sys.executable, "-X", "importtime", "-m", trainer, f"--model_dir={model_dir}",
               *[arg.format(data=tmp_path / "data") for arg in args]]
    start = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, env=CLI_ENV, capture_output=True, text=True, timeout=120)
    took = time.monotonic() - start
    messages = IMPORT_LINE.sub("", result.stderr).strip()
    assert result.returncode == 1, result.stderr[-3000:]
    assert f"in use by another training run: pid {holder} on host '{socket.gethostname()}'" in messages, messages
    assert "Traceback" not in messages
    imported = set(IMPORT_LINE.findall(result.stderr))
    assert "ml_collections" in imported and "sagan_tf.config" in imported  # the preset was loaded: -X importtime works
    assert not {"tensorflow", "keras"} & imported, sorted(name for name in imported if "tensorflow" in name)[:10]
    assert took < 5, f"refused after {took:.1f} s"
    assert json.loads((model_dir / LOCK_FILE).read_text())["pid"] == holder  # the holder's lock is untouched


def test_a_bad_flag_after_the_lock_releases_it_and_removes_the_directories_it_made(tmp_path):
    model_dir = tmp_path / "new" / "nested" / "run"
    result = subprocess.run([sys.executable, "-m", "trainers.fashion_mnist", f"--model_dir={model_dir}",
                             "--config.d_lr=-0.1"], cwd=ROOT, env=CLI_ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "config.d_lr=-0.1 is not allowed" in result.stderr, result.stderr[-2000:]
    assert os.listdir(tmp_path) == []


def test_a_bad_flag_on_an_existing_run_leaves_only_its_files(tmp_path):
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    result = subprocess.run([sys.executable, "-m", "trainers.fashion_mnist", f"--model_dir={model_dir}",
                             "--config.d_lr=-0.1"], cwd=ROOT, env=CLI_ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr[-2000:]
    assert os.listdir(model_dir) == ["config.json"]


def test_train_keeps_a_lock_this_process_already_holds(tmp_path):
    """What `train` does when a CLI took the lock first: `holding` runs under it and leaves it held."""
    from sagan_tf.training.loop import holding
    with holding_run_lock(tmp_path) as outer:
        content = (tmp_path / LOCK_FILE).read_text()
        with holding(str(tmp_path)) as inner:
            assert inner is outer
        assert (tmp_path / LOCK_FILE).read_text() == content  # not released by the inner holder
        assert run_lock.held_lock(tmp_path / ".") is outer  # the same directory, spelled differently
    assert not (tmp_path / LOCK_FILE).exists() and run_lock.held_lock(tmp_path) is None
    # A lock object of this process that is not held (another one's, released) does not count.
    other = RunLock(tmp_path).acquire()
    other.release()
    with holding(str(tmp_path)) as fresh:
        assert fresh is not other and fresh.held


@pytest.mark.parametrize("tf_config", [
    None,
    {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}},
    {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}},
    {"cluster": {"chief": ["c:0"], "worker": ["a:1"]}, "task": {"type": "chief", "index": 0}},
    {"cluster": {"chief": ["c:0"], "worker": ["a:1"]}, "task": {"type": "worker", "index": 0}},
    {"cluster": {"chief": ["c:0"], "worker": ["a:1"], "evaluator": ["e:0"]}, "task": {"type": "evaluator", "index": 0}},
    {"cluster": {}, "task": {}},
])
def test_the_chief_is_known_from_tf_config_as_tensorflow_knows_it(monkeypatch, tf_config):
    """The CLI decides who holds the lock before TensorFlow exists; `train` decides it from the strategy's
    cluster resolver. They must agree."""
    import tensorflow as tf

    from sagan_tf.training.loop import is_chief
    text = None if tf_config is None else json.dumps(tf_config)
    if text is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", text)

    class Strategy:  # what is_chief reads of a MultiWorkerMirroredStrategy
        cluster_resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()

    assert is_chief_task(text, "multi_worker_mirrored") == is_chief(Strategy())
    assert is_chief_task(text, "mirrored")  # any other strategy: one process, the chief


@pytest.mark.parametrize("scheme", ["ram", "file"])
def test_the_lock_on_a_uri_is_exclusive_and_released(tmp_path, scheme):
    """ram:// goes through tf.io.gfile (imported only then); file:// is the local lock under another name."""
    from sagan_tf.run import files
    model_dir = f"ram://early-lock-{os.getpid()}/run" if scheme == "ram" else f"file://{tmp_path}/run"
    lock_file = files.join(model_dir, LOCK_FILE)
    with holding_run_lock(model_dir) as lock:
        assert json.loads(files.read_text(lock_file))["pid"] == os.getpid()
        with pytest.raises(run_lock.RunLockedError, match=rf"pid {os.getpid()} on host"):
            RunLock(model_dir).acquire()
        assert run_lock.held_lock(model_dir) is lock
    assert not files.exists(lock_file)
    if scheme == "file":
        assert (tmp_path / "run").is_dir()
