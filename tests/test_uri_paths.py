"""Run directories, exports and serving on URI paths that TF's filesystems handle and Python's open()/os do not.

`ram://` (TF's in-memory filesystem) inside one process: train, resume, restore, sample, export, load the
export and serve it, all with no local file. `file:///...` for every CLI (train, resume, sample, evaluate,
export, serve) as a user would run them (slow). Neither may create a directory named `ram:` or `file:`
(what `os.makedirs("file:///x")` does: a relative `file:` directory).
"""
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from export import client
from export import saved_model as export_lib
from export.grpc_server import InProcessServer
from sagan_tf import sampling
from sagan_tf.evaluation.classifier import build_classifier, save_classifier
from sagan_tf.run import files, run_dir
from sagan_tf.sampling.exported import ExportedGenerator
from sagan_tf.sampling.images import save_png
from sagan_tf.training import train
from tests.helpers import CLI_ENV, ROOT, random_dataset_fn, run_cli, tiny_config

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
SCHEME_DIRS = ("ram:", "file:", "gs:")


def assert_no_scheme_directories(*places):
    for place in places:
        found = [name for name in os.listdir(place) if name in SCHEME_DIRS]
        assert not found, f"{place} holds {found}: a URI was used as a local path"


def gfile_tree(root):
    """Every file under `root` (a URI), relative to it."""
    return sorted(os.path.relpath(files.join(top, name), root) if not files.is_uri(root)
                  else files.join(top, name)[len(root) + 1:]
                  for top, _, names in tf.io.gfile.walk(root) for name in names)


@pytest.mark.slow  # trains or runs CLIs for tens of seconds (docs/testing.md)
def test_a_run_on_ram_trains_resumes_samples_exports_and_serves(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a URI taken for a local path would appear here
    model_dir, export_base = "ram://uri-test/run", "ram://uri-test/export"
    config = tiny_config(train_steps=2, checkpoint_every=2, sample_every=2)
    train(config, model_dir, dataset_fn=random_dataset_fn(config), verbose=0)
    config.train_steps = 3
    model = train(config, model_dir, dataset_fn=random_dataset_fn(config), verbose=0)

    written = gfile_tree(model_dir)
    assert {"config.json", "checkpoints/checkpoint", "checkpoints/ckpt-2.index", "checkpoints/ckpt-3.index",
            "samples/step_00000002.png"} <= set(written), written
    assert any(name.startswith("train/events.out.tfevents") for name in written)
    assert ".lock" not in written  # released at the end of each run
    assert run_dir.read_config(model_dir).train_steps == 3

    restored = run_dir.load_ema_generator(model_dir)
    assert restored.step == 3 and restored.checkpoint == f"{model_dir}/checkpoints/ckpt-3"
    z = sampling.sample_noise(6, config.z_dim, seed=1)
    labels = np.arange(6, dtype=np.int32) % config.num_classes
    expected = model.ema_generator((z, labels), training=False).numpy()  # the trained EMA G, in this process
    np.testing.assert_allclose(restored.generator((z, labels), training=False).numpy(), expected, atol=1e-5)

    sheet = sampling.sheet("sheet", restored.generator, None, 2, config.z_dim, config.num_classes).grid()
    save_png(f"{model_dir}/sheet.png", sheet)
    decoded = tf.io.decode_png(files.read_bytes(f"{model_dir}/sheet.png")).numpy()
    assert decoded.shape[:2] == sheet.shape[:2]

    version_dir = export_lib.export_run(model_dir, export_base, max_batch=8)
    assert version_dir == f"{export_base}/1"
    assert {"models.config", "batching_parameters.txt", "1/saved_model.pb",
            "1/assets.extra/sagan_export.json"} <= set(gfile_tree(export_base))
    exported = ExportedGenerator(version_dir)
    assert (exported.z_dim, exported.num_classes) == (config.z_dim, config.num_classes)
    np.testing.assert_allclose(exported(z, labels), expected, atol=1e-5)
    with InProcessServer(export_base, model_name="sagan") as server:
        out = client.predict_grpc(server.address, "sagan", "serving_default", {"z": z, "label": labels})
    np.testing.assert_allclose(out["images"], expected, atol=1e-5)
    assert_no_scheme_directories(tmp_path, ROOT)


def _serve_once(saved_model, z, labels):
    """Starts `python -m export.grpc_server --saved_model=...`, predicts once, stops it with SIGTERM."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "export.grpc_server", f"--saved_model={saved_model}",
                                f"--port={port}"], cwd=ROOT, env=CLI_ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        address = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                out = client.predict_grpc(address, "sagan", "serving_default", {"z": z, "label": labels}, timeout=5)
                break
            except client.ServingError as error:
                if error.code != "UNAVAILABLE":  # anything but "not listening yet"
                    raise
                assert process.poll() is None, process.communicate()[1][-3000:]
                assert time.monotonic() < deadline, "the gRPC server never answered"
                time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0
    return out["images"]


@pytest.mark.slow  # ~1.5 min: seven CLI processes
@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST), reason="dataset-fashion-mnist is not installed")
def test_every_cli_takes_file_uris(tmp_path):
    base = f"file://{tmp_path}"
    model_dir = f"{base}/run"
    tiny = ["--config.ch=4", "--config.z_dim=8", "--config.batch_size=4", "--config.mixed_precision=float32",
            "--config.checkpoint_every=2", "--config.sample_every=2", "--config.log_every=1"]
    result = run_cli("trainers.fashion_mnist", f"--model_dir={model_dir}", f"--data_dir=file://{FASHION_MNIST}",
                     "--train_steps=2", *tiny)
    assert result.returncode == 0, result.stderr[-3000:]
    result = run_cli("trainers.fashion_mnist", f"--model_dir={model_dir}", f"--data_dir=file://{FASHION_MNIST}",
                     "--train_steps=3", *tiny)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resuming at step 2" in result.stdout
    run = tmp_path / "run"
    assert tf.train.latest_checkpoint(str(run / "checkpoints")).endswith("ckpt-3")
    assert (run / "samples" / "step_00000002.png").is_file() and (run / "config.json").is_file()

    result = run_cli("trainers.sample", f"--model_dir={model_dir}", "--columns=2", f"--out={base}/sheet.png",
                     f"--npz={base}/samples.npz", "--num=5")
    assert result.returncode == 0, result.stderr[-3000:]
    with np.load(tmp_path / "samples.npz") as npz:
        assert npz["images"].shape == (5, 32, 32, 1) and list(npz["labels"]) == [0, 1, 2, 3, 4]
    assert (tmp_path / "sheet.png").is_file()

    classifier = build_classifier(image_size=32, image_channels=1, num_classes=10, width=4, feature_dim=8)
    save_classifier(classifier, str(tmp_path / "classifier"), dataset_name="fashion_mnist")
    result = run_cli("trainers.evaluate", f"--model_dir={model_dir}", "--num_samples=20", "--batch_size=10",
                     "--num_reference=20", f"--feature_network=classifier:{base}/classifier",
                     f"--reference_cache={base}/refs", f"--json={base}/eval.json",
                     f"--data_dir=file://{FASHION_MNIST}")
    assert result.returncode == 0, result.stderr[-3000:]
    record = files.read_json(f"{base}/eval.json")
    assert record["step"] == 3 and record["reference"]["num"] == 20
    assert os.listdir(tmp_path / "refs")

    result = run_cli("export.saved_model", f"--model_dir={model_dir}", f"--export_base={base}/export",
                     "--max_batch=8")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "export" / "1" / "saved_model.pb").is_file()
    assert (tmp_path / "export" / "models.config").is_file()

    restored = run_dir.load_ema_generator(str(run))
    z = sampling.sample_noise(3, 8, seed=2)
    labels = np.array([0, 4, 9], np.int32)
    served = _serve_once(f"{base}/export", z, labels)
    np.testing.assert_allclose(served, restored.generator((z, labels), training=False).numpy(), atol=1e-5)
    assert_no_scheme_directories(tmp_path, ROOT)
