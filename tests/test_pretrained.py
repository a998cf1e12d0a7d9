"""The committed artifacts: the shipped generator (the highest version under pretrained/fashion_mnist, the one
TF-Serving's models.config serves) and the classifier that scores it.

docs/results.md reports their quality on 10,000 samples; here 500 samples must still be drawn from the
requested classes (a re-export of an untrained or broken generator scores ≈ 0.1).
"""
import json
import os

import numpy as np
import tensorflow as tf

from tests.helpers import ROOT, run_cli, shipped_generator

GENERATOR = shipped_generator()
CLASSIFIER = ROOT / "pretrained" / "fashion_mnist_classifier"


def directory_bytes(path):
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names)


def test_pretrained_generator_is_small_and_describes_itself():
    assert directory_bytes(GENERATOR) <= 20 * 2 ** 20
    metadata = json.loads((GENERATOR / "assets.extra" / "sagan_export.json").read_text())
    assert metadata["model"]["num_classes"] == 10 and metadata["model"]["resolution"] == 32
    classifier = json.loads((CLASSIFIER / "classifier.json").read_text())
    assert classifier["name"] == "fashion_mnist_classifier" and classifier["test_accuracy"] >= 0.9


def test_committed_metadata_holds_no_path_of_the_machine_it_was_made_on():
    def strings(value):
        if isinstance(value, dict):
            return [s for item in value.values() for s in strings(item)]
        if isinstance(value, list):
            return [s for item in value for s in strings(item)]
        return [value] if isinstance(value, str) else []

    metadata_files = sorted((ROOT / "pretrained").glob("*/*/assets.extra/sagan_export.json"))
    metadata_files += sorted((ROOT / "pretrained").glob("*/classifier.json"))
    assert GENERATOR / "assets.extra" / "sagan_export.json" in metadata_files
    for path in metadata_files:
        absolute = [s for s in strings(json.loads(path.read_text())) if s.startswith("/") or "://" in s]
        assert absolute == [], (path, absolute)


def test_pretrained_generator_draws_the_requested_classes():
    from sagan_tf.evaluation import load_feature_network
    generate = tf.saved_model.load(str(GENERATOR)).signatures["serving_default"]
    network = load_feature_network(f"classifier:{CLASSIFIER}")
    labels = np.arange(500, dtype=np.int32) % 10
    z = np.random.default_rng(0).standard_normal((500, 128)).astype(np.float32)
    images = np.concatenate([generate(z=tf.constant(z[i:i + 250]), label=tf.constant(labels[i:i + 250]))["images"]
                             for i in (0, 250)])  # the export accepts at most 256 rows per request
    assert images.shape == (500, 32, 32, 1) and images.min() >= -1 and images.max() <= 1
    _, logits = network(images)
    accuracy = float(np.mean(np.argmax(logits, axis=1) == labels))
    assert accuracy >= 0.8, f"conditional accuracy {accuracy:.3f}"


def test_sample_cli_writes_npz_from_the_pretrained_model(tmp_path):
    npz = tmp_path / "out.npz"
    result = run_cli("trainers.sample", f"--saved_model={GENERATOR}", "--num=25", f"--npz={npz}")
    assert result.returncode == 0, result.stderr[-3000:]
    with np.load(npz) as data:
        assert data["images"].shape == (25, 32, 32, 1) and data["images"].dtype == np.uint8
        assert list(data["labels"]) == [i % 10 for i in range(25)]
