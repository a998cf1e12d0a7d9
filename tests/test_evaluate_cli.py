"""The evaluation runner, the periodic-evaluation callback, and the classifier/evaluate CLIs."""
import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.data import real_images
from sagan_tf.evaluation import metrics
from sagan_tf.evaluation import runner
from sagan_tf.evaluation.periodic import (BestCheckpointSaver, PeriodicEvaluation, build_periodic_evaluation,
                                         make_evaluate_fn)
from sagan_tf.evaluation.reference_stats import ReferenceStatsMismatchError
from tests.helpers import run_cli, tiny_config
from tests.shared_runs import tiny_run

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
K = 4  # classes of the stand-ins


class StandInNetwork:
    """Features are fixed statistics of each image; the logits read the class the fake generator wrote."""
    name = "standin_net"
    fingerprint = "standin-v1"

    def __init__(self, num_classes=K, dataset_name=None):
        self.num_classes, self.dataset_name = num_classes, dataset_name

    @staticmethod
    def features_of(images):
        x = np.asarray(images, np.float64)
        half = x.shape[1] // 2
        return np.stack([x.mean((1, 2, 3)), x.std((1, 2, 3)), x[:, :half].mean((1, 2, 3)),
                         x[:, :, :half].mean((1, 2, 3)), (x ** 2).mean((1, 2, 3)), x[:, 0, 0, 0]], axis=1)

    def __call__(self, images):
        images = np.asarray(images)
        written = np.round((images[:, 0, 0, 0] + 1) * 10).astype(int)  # the class the generator wrote
        logits = np.eye(self.num_classes)[written % self.num_classes] * 5.0
        return self.features_of(images).astype(np.float32), logits.astype(np.float32)


class RecordingGenerator:
    """fn(z, labels): random-looking images from z; pixel (0, 0) encodes the class it *draws*, which is the
    requested label unless z[0] > 0.5 (then the next class). Records every call."""

    def __init__(self):
        self.z, self.labels, self.images = [], [], []

    def __call__(self, z, labels):
        drawn = np.where(z[:, 0] > 0.5, (labels + 1) % K, labels)
        base = np.tanh(np.einsum("bz,hwz->bhw", z, np.random.default_rng(0).standard_normal((8, 8, z.shape[1]))))
        images = base[..., None].astype(np.float32)
        images[:, 0, 0, 0] = drawn / 10.0 - 1
        self.z.append(z), self.labels.append(labels), self.images.append(images)
        return images


def real_reference(network, num=200, with_features=True):
    real = np.tanh(np.random.default_rng(1).standard_normal((num, 8, 8, 1))).astype(np.float32)
    features, _ = network(real)
    mu, sigma = metrics.mean_and_covariance(features)
    reference = {"mu": mu, "sigma": sigma, "network_name": network.name}
    if with_features:
        reference["features"] = features
    return reference


def test_runner_metrics_equal_the_metric_functions_on_the_same_features():
    network, fake = StandInNetwork(), RecordingGenerator()
    reference = real_reference(network)
    result = runner.evaluate_generator(fake, network, reference, num_samples=150, batch_size=40, num_classes=K,
                                       z_dim=5, seed=3)
    images = np.concatenate(fake.images)
    assert images.shape[0] == 150 and [len(b) for b in fake.images] == [40, 40, 40, 30]
    fake_features = StandInNetwork.features_of(images).astype(np.float32)
    _, fake_logits = network(images)
    assert set(result) == {f"{m}/standin_net" for m in runner.METRICS}
    assert result["fid/standin_net"] == pytest.approx(metrics.frechet_distance(fake_features, reference["features"]),
                                                      rel=1e-6, abs=1e-9)
    assert result["fid/standin_net"] > 0.01
    assert result["is/standin_net"] == pytest.approx(metrics.inception_score(fake_logits, 10)[0], rel=1e-9)
    kid = metrics.kernel_inception_distance(fake_features, reference["features"], seed=3)
    assert (result["kid/standin_net"], result["kid_std/standin_net"]) == pytest.approx(kid, rel=1e-9)
    pr = metrics.precision_recall(reference["features"], fake_features, k=3)
    assert (result["precision/standin_net"], result["recall/standin_net"]) == pytest.approx(pr)
    # Hand count: a sample is drawn from its requested class exactly when z[0] <= 0.5.
    z = np.concatenate(fake.z)
    assert 0 < np.sum(z[:, 0] > 0.5) < 150
    assert result["conditional_accuracy/standin_net"] == pytest.approx(np.mean(z[:, 0] <= 0.5))
    # Same seed, same numbers.
    again = runner.evaluate_generator(RecordingGenerator(), network, reference, 150, 40, K, z_dim=5, seed=3)
    assert again == result


def test_conditional_accuracy_only_when_the_networks_classes_match():
    reference = real_reference(StandInNetwork(), with_features=False)
    other_count = runner.evaluate_generator(RecordingGenerator(), StandInNetwork(num_classes=K + 1), reference, 20,
                                            10, K, z_dim=5)
    assert set(other_count) == {"fid/standin_net", "is/standin_net", "is_std/standin_net"}
    other_data = runner.evaluate_generator(RecordingGenerator(), StandInNetwork(dataset_name="cifar10"), reference,
                                           20, 10, K, z_dim=5, dataset_name="fashion_mnist")
    assert "conditional_accuracy/standin_net" not in other_data
    same_data = runner.evaluate_generator(RecordingGenerator(), StandInNetwork(dataset_name="fashion_mnist"),
                                          reference, 20, 10, K, z_dim=5, dataset_name="fashion_mnist")
    assert "conditional_accuracy/standin_net" in same_data


def test_reference_from_another_network_is_refused():
    reference = real_reference(StandInNetwork())
    reference["network_name"] = "inception_v3_pool3"
    with pytest.raises(ReferenceStatsMismatchError, match="inception_v3_pool3"):
        runner.evaluate_generator(RecordingGenerator(), StandInNetwork(), reference, 20, 10, K, z_dim=5)


def test_reference_is_cached_and_checked(tmp_path):
    network = StandInNetwork()
    real = np.tanh(np.random.default_rng(2).standard_normal((64, 8, 8, 1))).astype(np.float32)
    first = runner.load_or_compute_reference(str(tmp_path), network, real, 64, "toy_test", num_features=16,
                                             batch_size=10)
    features, _ = network(real)
    mu, sigma = metrics.mean_and_covariance(features)
    np.testing.assert_allclose(first["mu"], mu, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(first["sigma"], sigma, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(first["features"], features[:16])

    def exhausted():
        raise AssertionError("the cache should have been used")
        yield

    cached = runner.load_or_compute_reference(str(tmp_path), network, exhausted(), 64, "toy_test", num_features=16)
    np.testing.assert_array_equal(cached["features"], first["features"])
    np.testing.assert_allclose(cached["sigma"], first["sigma"])
    other = StandInNetwork()
    other.fingerprint = "standin-v2"
    with pytest.raises(ReferenceStatsMismatchError, match="fingerprint"):
        runner.load_or_compute_reference(str(tmp_path), other, exhausted(), 64, "toy_test", num_features=16)


def test_real_sample_fn_answers_each_label_with_an_unused_real_image_of_that_class():
    labels = np.array([0, 1, 0, 2, 1, 0])
    images = np.arange(6, dtype=np.float32).reshape(6, 1, 1, 1)  # image i holds the value i
    sample = real_images.real_sample_fn(images, labels, seed=3)
    first = sample(None, np.array([0, 0, 0, 1, 2]))[:, 0, 0, 0].astype(int)
    assert list(labels[first]) == [0, 0, 0, 1, 2]
    assert sorted(first[:3]) == [0, 2, 5]  # the three class-0 images, each once
    again = sample(None, np.array([0, 0, 0, 1]))[:, 0, 0, 0].astype(int)
    assert sorted(again[:3]) == [0, 2, 5]  # reshuffled once used up
    assert set(again[3:]) | {first[3]} == {1, 4}  # class 1 gives its other image before repeating
    with pytest.raises(ValueError, match="label 7"):
        sample(None, np.array([7]))


def test_real_images_score_like_a_generator_of_them():
    network = StandInNetwork()
    real = np.tanh(np.random.default_rng(1).standard_normal((200, 8, 8, 1))).astype(np.float32)
    labels = np.random.default_rng(2).integers(0, K, 200)
    real[:, 0, 0, 0] = labels / 10.0 - 1  # the stand-in network's logits read the class from pixel (0, 0)
    results = runner.evaluate_generator(real_images.real_sample_fn(real, labels), network, real_reference(network),
                                        num_samples=200, batch_size=50, num_classes=K, z_dim=2)
    assert results["conditional_accuracy/standin_net"] == 1.0
    mislabelled = runner.evaluate_generator(real_images.real_sample_fn(real, (labels + 1) % K), network,
                                            real_reference(network), num_samples=200, batch_size=50,
                                            num_classes=K, z_dim=2)
    assert mislabelled["conditional_accuracy/standin_net"] == 0.0


def test_real_split_sample_fn_answers_with_real_images_of_the_requested_class(tmp_path):
    from PIL import Image
    for name, value in (("a", 255), ("b", 0)):  # folder order: a is class 0 (white), b class 1 (black)
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.new("L", (8, 8), value).save(tmp_path / name / f"{i}.png")
    config = tiny_config(dataset="image_folder", num_classes=2)
    said = []
    sample = real_images.real_split_sample_fn(config, "train", 4, 2, str(tmp_path), log_fn=said.append)
    assert said == [f"scoring 4 real images of image_folder_{tmp_path.name}_train in place of a generator"]
    images = sample(None, np.array([0, 1, 1, 0]))
    assert images.shape == (4, 32, 32, 1)
    np.testing.assert_array_equal(images[:, 0, 0, 0], [1.0, -1.0, -1.0, 1.0])
    with pytest.raises(real_images.ReferenceSplitError, match=r"split 'test': .*no splits"):
        real_images.real_split_sample_fn(config, "test", 4, 2, str(tmp_path))


def test_format_table_lists_metric_value_network():
    table = runner.format_table({"recall/net_a": 0.5, "fid/net_a": 12.25})
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "value", "network"]
    assert lines[1].split() == ["fid", "12.25", "net_a"] and lines[2].split() == ["recall", "0.5", "net_a"]
    canonical = real_images.canonical_dataset_name
    assert canonical("fashion_mnist_idx") == canonical("tfds:fashion_mnist")


# ----------------------------------------------------------------------------------------------
# PeriodicEvaluation
# ----------------------------------------------------------------------------------------------

class FakeRun:
    """What the callback reads from the SAGAN model: `step` and `ema_generator`."""

    def __init__(self):
        self.step = tf.Variable(0, dtype=tf.int64)
        self.ema_generator = object()


def drive(callback, run, steps):
    callback.set_model(run)
    for _ in range(steps):
        run.step.assign_add(1)
        callback.on_train_batch_end(0, {})


def test_best_is_saved_exactly_at_the_improving_steps(tmp_path):
    fids = iter([5.0, 4.0, 6.0, 3.0, 3.0, 2.5, 7.0])
    seen_generators, saved = [], []
    run = FakeRun()

    def evaluate_fn(generator):
        seen_generators.append(generator)
        return {"fid/net": next(fids), "is/net": 1.0}

    writer = tf.summary.create_file_writer(str(tmp_path))
    callback = PeriodicEvaluation(2, evaluate_fn, writer, lambda step, m: saved.append((step, m["fid/net"])),
                                  log_fn=None)
    drive(callback, run, 14)
    assert [step for step, _ in callback.history] == [2, 4, 6, 8, 10, 12, 14]
    assert saved == [(2, 5.0), (4, 4.0), (8, 3.0), (12, 2.5)]  # not 10: equal is no improvement
    assert callback.best == 2.5 and callback.best_step == 12
    assert all(g is run.ema_generator for g in seen_generators)
    writer.flush()
    tags = {(value.tag, event.step) for path in glob.glob(str(tmp_path / "events*"))
            for event in tf.compat.v1.train.summary_iterator(path) for value in event.summary.value}
    assert ("eval/fid/net", 8) in tags and ("eval/is/net", 14) in tags


def test_resumed_callback_keeps_the_recorded_best(tmp_path):
    saved = []
    fids = iter([4.0, 2.0])
    callback = PeriodicEvaluation(5, lambda g: {"fid/net": next(fids)}, None, lambda s, m: saved.append(s),
                                  best=3.0, log_fn=None)
    drive(callback, FakeRun(), 10)
    assert saved == [10]


def test_best_checkpoint_saver_keeps_one_checkpoint_and_the_record(tmp_path):
    value = tf.Variable(0.0)
    saver = BestCheckpointSaver(tf.train.Checkpoint(v=value), str(tmp_path / "best"))
    assert saver.best_value() is None
    for step, fid in ((2, 5.0), (4, 4.0)):
        value.assign(float(step))
        saver(step, {"fid/net": fid, "is/net": 1.5})
    assert saver.best_value() == 4.0
    record = json.loads((tmp_path / "best" / "best.json").read_text())
    assert record["step"] == 4 and record["metric"] == "fid/net" and record["checkpoint"] == "ckpt-4"
    assert sorted(p.name for p in (tmp_path / "best").glob("*.index")) == ["ckpt-4.index"]
    restored = tf.Variable(0.0)
    tf.train.Checkpoint(v=restored).restore(tf.train.latest_checkpoint(str(tmp_path / "best")))
    assert float(restored.numpy()) == 4.0


def periodic_setup(tmp_path):
    from sagan_tf.training import build_model
    from sagan_tf.training.checkpointing import make_checkpoint
    config = tiny_config(num_classes=K, ema_start=0)
    model = build_model(config, tf.distribute.get_strategy())
    network = StandInNetwork(num_classes=K)
    real = np.tanh(np.random.default_rng(1).standard_normal((40, 32, 32, 1))).astype(np.float32)
    reference = runner.load_or_compute_reference(None, network, real, 40, "toy", num_features=40)
    evaluate_fn = make_evaluate_fn(config, network, reference, num_samples=12, batch_size=6)
    saver = BestCheckpointSaver(make_checkpoint(model), str(tmp_path / "best"))
    return model, real, evaluate_fn, saver


def test_periodic_evaluation_scores_the_sagan_models_ema_generator(tmp_path):
    """make_evaluate_fn + BestCheckpointSaver on a real SAGAN model: step from model.step, EMA weights copied."""
    model, _, evaluate_fn, saver = periodic_setup(tmp_path)
    callback = PeriodicEvaluation(2, evaluate_fn, None, saver, log_fn=None)
    callback.set_model(model)
    for _ in range(4):
        model.g_optimizer.iterations.assign_add(1)
        callback.on_train_batch_end(0, {})
    assert [step for step, _ in callback.history] == [2, 4]
    assert all(np.isfinite(m["fid/standin_net"]) for _, m in callback.history)
    assert json.loads((tmp_path / "best" / "best.json").read_text())["step"] == callback.best_step == 2
    # The evaluation follows the EMA weights: perturbing them changes the numbers.
    before = evaluate_fn(model.ema_generator)
    assert before == callback.history[-1][1]
    for weight in model.ema_generator.trainable_weights:
        weight.assign(weight * 1.5)
    assert evaluate_fn(model.ema_generator)["fid/standin_net"] != before["fid/standin_net"]


@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST), reason="dataset-fashion-mnist is not installed")
def test_build_periodic_evaluation_from_config_and_resume(tmp_path):
    from sagan_tf.training import build_model
    from sagan_tf.training.checkpointing import make_checkpoint
    config = tiny_config(num_classes=10, eval_every=2, eval_samples=16)
    model = build_model(config, tf.distribute.get_strategy())
    checkpoint = make_checkpoint(model)
    network = StandInNetwork(num_classes=10)
    callback = build_periodic_evaluation(config, checkpoint, str(tmp_path), None, feature_network=network, log_fn=None)
    assert callback.every == 2 and callback.best is None
    assert os.listdir(tmp_path / "reference_stats")  # fashion_mnist_test statistics cached in model_dir
    callback.set_model(model)
    for _ in range(2):
        model.g_optimizer.iterations.assign_add(1)
        callback.on_train_batch_end(0, {})
    record = json.loads((tmp_path / "best" / "best.json").read_text())
    assert record["step"] == 2 and record["metric"] == "fid/standin_net"
    assert tf.train.latest_checkpoint(str(tmp_path / "best")).endswith("ckpt-2")
    history = [json.loads(line) for line in (tmp_path / "eval_history.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in history] == [2]
    assert history[0]["metrics"]["fid/standin_net"] == record["value"]
    # A resumed run starts from the recorded best, and only with the same feature network.
    resumed = build_periodic_evaluation(config, checkpoint, str(tmp_path), None, feature_network=network, log_fn=None)
    assert resumed.best == record["value"]
    other = StandInNetwork(num_classes=10)
    other.name = "another_net"
    assert build_periodic_evaluation(config, checkpoint, str(tmp_path), None, feature_network=other,
                                     log_fn=None).best is None
    with pytest.raises(ValueError, match="eval_feature_network"):
        build_periodic_evaluation(config, checkpoint, str(tmp_path), None)


@pytest.mark.slow
def test_periodic_evaluation_inside_fit(tmp_path):
    model, real, evaluate_fn, saver = periodic_setup(tmp_path)
    callback = PeriodicEvaluation(1, evaluate_fn, None, saver, log_fn=None)
    labels = np.arange(8, dtype=np.int32) % K
    data = tf.data.Dataset.from_tensor_slices((real[:8], labels)).repeat().batch(4, drop_remainder=True)
    model.fit(data, epochs=1, steps_per_epoch=2, callbacks=[callback], verbose=0)
    assert [step for step, _ in callback.history] == [1, 2]
    assert json.loads((tmp_path / "best" / "best.json").read_text())["step"] == callback.best_step
    assert evaluate_fn(model.ema_generator) == callback.history[-1][1]


# ----------------------------------------------------------------------------------------------
# CLIs on real Fashion-MNIST
# ----------------------------------------------------------------------------------------------

@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST), reason="dataset-fashion-mnist is not installed")
@pytest.mark.slow  # ~60 s: three CLI processes (classifier training, evaluation, real split)
def test_classifier_then_evaluate_cli(tmp_path_factory, tmp_path):
    classifier_dir = tmp_path / "classifier"
    result = run_cli("trainers.classifier", "--dataset=fashion_mnist", f"--model_dir={classifier_dir}", "--steps=20",
                     "--batch_size=32", "--width=8", "--feature_dim=16")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test accuracy:" in result.stdout
    assert (classifier_dir / "classifier.keras").exists()
    metadata = json.loads((classifier_dir / "classifier.json").read_text())
    assert metadata["name"] == "fashion_mnist_classifier" and 0 <= metadata["test_accuracy"] <= 1

    model_dir = tiny_run(tmp_path_factory)
    out = tmp_path / "eval.json"
    result = run_cli("trainers.evaluate", f"--model_dir={model_dir}", "--num_samples=24", "--batch_size=12",
                     f"--feature_network=classifier:{classifier_dir}", f"--reference_cache={tmp_path / 'refs'}",
                     f"--json={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split() == ["metric", "value", "network"])
    rows = {line.split()[0]: line.split() for line in lines[header + 1:] if len(line.split()) == 3}
    assert {"fid", "is", "kid", "precision", "recall", "conditional_accuracy"} <= set(rows)
    assert all(row[2] == "fashion_mnist_classifier" for row in rows.values())
    record = json.loads(out.read_text())
    assert record["network"] == "fashion_mnist_classifier" and record["step"] == 1
    assert record["reference"]["dataset"] == "fashion_mnist_test"
    assert float(rows["fid"][1]) == pytest.approx(record["metrics"]["fid/fashion_mnist_classifier"], rel=1e-4)
    assert os.listdir(tmp_path / "refs")  # reference statistics cached

    result = run_cli("trainers.evaluate", f"--model_dir={model_dir}", "--num_samples=60", "--batch_size=12",
                     f"--feature_network=classifier:{classifier_dir}", f"--reference_cache={tmp_path / 'refs'}",
                     "--real_split=train", f"--json={out}")  # 60 train images hold all 3 classes of the tiny run
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["checkpoint"] == "real:train" and record["reference"]["dataset"] == "fashion_mnist_test"
    assert "scoring 60 real images of fashion_mnist_train" in result.stdout


@pytest.mark.slow  # trains or runs CLIs for tens of seconds (docs/testing.md)
def test_evaluate_cli_names_bad_values(tmp_path_factory, tmp_path):
    model_dir = tiny_run(tmp_path_factory)
    result = run_cli("trainers.evaluate", f"--model_dir={model_dir}", "--feature_network=inception:/nowhere")
    assert result.returncode != 0 and "--feature_network=inception:/nowhere" in result.stderr
    result = run_cli("trainers.classifier", "--dataset=cifar10", f"--model_dir={tmp_path}")
    assert result.returncode != 0 and "cifar10" in result.stderr


CLASSIFIER = "pretrained/fashion_mnist_classifier"


@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST), reason="dataset-fashion-mnist is not installed")
@pytest.mark.slow  # ~60 s: an export and two evaluation processes
def test_an_export_scores_as_the_run_it_was_exported_from(tmp_path_factory, tmp_path):
    """`--saved_model` rebuilds the exported EMA generator: the same samples, so every metric equals the
    `--model_dir` evaluation of the checkpoint it was exported from (how a shipped model's row is reproduced)."""
    model_dir = tiny_run(tmp_path_factory)
    result = run_cli("export.saved_model", f"--model_dir={model_dir}", f"--export_base={tmp_path / 'export'}")
    assert result.returncode == 0, result.stderr[-3000:]
    [export] = [os.path.dirname(path) for path in glob.glob(str(tmp_path / "export" / "*" / "saved_model.pb"))]
    common = ["--num_samples=40", "--batch_size=20", f"--feature_network=classifier:{CLASSIFIER}",
              f"--reference_cache={tmp_path / 'refs'}"]
    records = {}
    for source in (f"--model_dir={model_dir}", f"--saved_model={export}"):
        out = tmp_path / f"{source.split('=')[0][2:]}.json"
        result = run_cli("trainers.evaluate", source, *common, f"--json={out}")
        assert result.returncode == 0, result.stderr[-3000:]
        records[source.split("=")[0]] = json.loads(out.read_text())
    run, exported = records["--model_dir"], records["--saved_model"]
    assert exported["step"] == run["step"] == 1 and exported["checkpoint"] == export
    assert exported["reference"] == run["reference"] and set(exported["metrics"]) == set(run["metrics"])
    for name, value in run["metrics"].items():
        assert exported["metrics"][name] == pytest.approx(value, rel=1e-5, abs=1e-6), name


@pytest.mark.slow  # CLI processes
@pytest.mark.parametrize("flags, message", [
    ([], "exactly one of --model_dir"),
    (["--model_dir=x", "--saved_model=y"], "exactly one of --model_dir"),
    (["--saved_model=tests"], "--saved_model=tests holds no saved_model.pb"),
    (["--saved_model=pretrained/fashion_mnist/1", "--preset=nope"], "--preset=nope: no preset 'nope'"),
])
def test_evaluate_cli_names_a_bad_source(flags, message):
    result = run_cli("trainers.evaluate", *flags, f"--feature_network=classifier:{CLASSIFIER}", "--num_samples=2")
    assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
