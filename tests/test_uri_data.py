"""Data, image folders, classifiers, caches and class maps at URI paths that only `tf.io.gfile` understands.

Python's `open()` and `os.path` take ``ram://x`` or ``file:///x`` for relative local paths (a directory
named ``ram:`` or ``file:`` in the working directory), so every test runs with the working directory set
to its own tmp_path and checks afterwards that no such directory appeared there. ``ram://`` is
TensorFlow's in-memory filesystem: it lives in this process only. ``file:///`` paths go through
TensorFlow's local filesystem; TFDS gets them as local paths (`tfds_pipeline.tfds_path`).
"""
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import uuid

import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.data import fashion_mnist as fm
from sagan_tf.data import image_folder as imf
from sagan_tf.data.image_folder import report as imf_report
from sagan_tf.data import tfds_pipeline
from sagan_tf.evaluation import classifier as classifier_lib
from sagan_tf.evaluation import features as features_lib
from sagan_tf.evaluation import reference_stats as ref
from sagan_tf.run import class_map, files
from tests import miniature_ilsvrc, tiny_tfds
from tests.helpers import CLI_ENV

#: Directory names a URI becomes when `open()`/`os.makedirs` take it for a relative local path.
URI_LOOKALIKES = ("file:", "ram:", "gs:")


def _lookalikes(root):
    """Paths under `root` whose name is a URI scheme taken for a directory (or file) name."""
    return [os.path.join(parent, name) for parent, dirs, names in os.walk(root)
            for name in dirs + names if name in URI_LOOKALIKES]


@pytest.fixture(autouse=True)
def _cwd_is_tmp_path(tmp_path, monkeypatch):
    """Every test runs in its own tmp_path and must leave no `file:`/`ram:`/`gs:` entry there."""
    monkeypatch.chdir(tmp_path)
    yield
    assert _lookalikes(tmp_path) == []


def _ram(name):
    """A fresh ram:// directory (the filesystem is shared by the whole test process)."""
    return f"ram://{uuid.uuid4().hex}/{name}"


def _file_uri(path):
    return "file://" + os.path.abspath(path)


# --------------------------------------------------------------------------------------------------
# Fashion-MNIST idx files
# --------------------------------------------------------------------------------------------------
def _idx_gz(array, ndim_code):
    header = bytes([0, 0, 0x08, ndim_code]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def _tiny_fashion_mnist(n=6, seed=0):
    """{file name: gz bytes} of a tiny train and test split, and the (images, labels) they hold."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    blobs = {}
    for split in ("train", "test"):
        images_name, labels_name = fm._FILES[split]
        blobs[images_name] = _idx_gz(images, 3)
        blobs[labels_name] = _idx_gz(labels, 1)
    return blobs, images, labels


def _write_all(root, blobs):
    for name, data in blobs.items():
        files.atomic_write_bytes(files.join(root, name), data)


def test_fashion_mnist_under_ram_reads_the_same_images_and_labels_as_a_local_copy(tmp_path):
    blobs, images, labels = _tiny_fashion_mnist()
    local, ram = str(tmp_path / "fmnist"), _ram("fmnist")
    _write_all(local, blobs)
    _write_all(ram, blobs)
    for split in ("train", "test"):
        for root in (local, ram):
            got_images, got_labels = fm.load_fashion_mnist(root, split)
            np.testing.assert_array_equal(got_images, images)
            np.testing.assert_array_equal(got_labels, labels)
    from_local = next(iter(fm.fashion_mnist_dataset(4, local, seed=3)))
    from_ram = next(iter(fm.fashion_mnist_dataset(4, ram, seed=3)))
    np.testing.assert_array_equal(from_ram[0].numpy(), from_local[0].numpy())
    np.testing.assert_array_equal(from_ram[1].numpy(), from_local[1].numpy())


def test_fashion_mnist_errors_under_ram_name_the_uri():
    blobs, _, _ = _tiny_fashion_mnist()
    ram = _ram("broken")
    with pytest.raises(FileNotFoundError, match=f"{ram}/train-images-idx3-ubyte.gz"):
        fm.load_fashion_mnist(ram)
    _write_all(ram, blobs)
    files.atomic_write_bytes(files.join(ram, "train-labels-idx1-ubyte.gz"), b"not gzip at all")
    with pytest.raises(fm.IdxFormatError, match=f"{ram}/train-labels-idx1-ubyte.gz: not a valid gzip"):
        fm.load_fashion_mnist(ram)


# --------------------------------------------------------------------------------------------------
# Image folders
# --------------------------------------------------------------------------------------------------
def _png(colour, size=(9, 6)):
    return tf.io.encode_png(np.full((size[1], size[0], 3), colour, np.uint8)).numpy()


def _jpeg(colour, size=(8, 8)):
    return tf.io.encode_jpeg(np.full((size[1], size[0], 3), colour, np.uint8), quality=100).numpy()


#: relative path -> bytes: two classes (one with a nested folder), a corrupt JPEG, a text file, a hidden file.
FOLDER = {
    "cats/a.png": _png((250, 10, 10)),
    "cats/b.jpg": _jpeg((10, 250, 10), (12, 8)),
    "dogs/deep/c.png": _png((10, 10, 250), (6, 9)),
    "dogs/d.png": _png((128, 128, 128)),
    "dogs/corrupt.jpg": _jpeg((0, 0, 0))[:40],
    "dogs/notes.txt": b"not an image",
    "dogs/.hidden.png": _png((1, 2, 3)),
}


def _write_folder(root, layout=FOLDER):
    for relative, data in layout.items():
        files.atomic_write_bytes(files.join(root, *relative.split("/")), data)
    return root


def _relative_index(index):
    """The index with paths relative to its folder, so folders at different places compare equal."""
    def rel(path):
        return imf_report._relative_path(path, index.data_dir)
    return ([rel(p) for p in index.paths], list(index.labels), list(index.class_names),
            {reason: [rel(p) for p in paths] for reason, paths in index.skipped.items()})


def _batches(data_dir, n=3):
    ds = imf.image_folder_dataset(data_dir, 8, 2, image_channels=3, seed=1, random_flip=True)
    return [(x.numpy(), y.numpy()) for x, y in ds.take(n)]


def test_image_folder_under_ram_gives_the_local_dataset_and_skip_report(tmp_path):
    local, ram = _write_folder(str(tmp_path / "images")), _write_folder(_ram("images"))
    expected = (["cats/a.png", "cats/b.jpg", "dogs/d.png", "dogs/deep/c.png"], [0, 0, 1, 1], ["cats", "dogs"],
                {imf.UNREADABLE: ["dogs/corrupt.jpg"], imf.NOT_AN_IMAGE: ["dogs/notes.txt"]})
    local_index, ram_index = imf.scan_image_folder(local), imf.scan_image_folder(ram)
    assert _relative_index(local_index) == expected
    assert _relative_index(ram_index) == expected
    assert all(path.startswith(ram + "/") for path in ram_index.paths)
    assert imf.format_summary(ram_index) == imf.format_summary(local_index).replace(local, ram)
    assert imf.image_folder_class_names(ram) == ["cats", "dogs"] and imf.has_class_folders(ram)
    for (x_ram, y_ram), (x_local, y_local) in zip(_batches(ram), _batches(local)):
        np.testing.assert_array_equal(x_ram, x_local)
        np.testing.assert_array_equal(y_ram, y_local)
    # A solid image keeps its colour: the bytes really were decoded (not, e.g., an all-zero fallback).
    image = imf.load_image(files.join(ram, "cats", "a.png"), 3, 1)
    np.testing.assert_array_equal(image, np.full((6, 9, 3), (250, 10, 10)))


def test_image_folder_under_ram_reports_what_a_local_folder_reports(tmp_path):
    empty = _ram("empty")
    files.makedirs(files.join(empty, "hats"))
    _write_folder(empty, {"shoes/s.png": _png((5, 5, 5)), "hats/broken.png": b"nope"})
    with pytest.raises(ValueError, match=rf"\['hats'\] hold no readable image: {empty}/hats \(1 unreadable"):
        imf.scan_image_folder(empty)
    with pytest.raises(FileNotFoundError, match="ram://nowhere/at-all"):
        imf.scan_image_folder("ram://nowhere/at-all")
    flat = _write_folder(_ram("flat"), {"x.png": _png((0, 0, 0)), "y.png": _png((255, 255, 255))})
    assert not imf.has_class_folders(flat)
    index = imf.scan_image_folder(flat, unconditional=True)
    assert _relative_index(index)[:2] == (["x.png", "y.png"], [0, 0])
    # A run recorded under ram:// with other classes is refused on resume, like a local run.
    run = _ram("run")
    files.atomic_write_json(files.join(run, "config.json"),
                            {"dataset": "image_folder", "num_classes": 1, "class_names": ["hats"]})
    with pytest.raises(ValueError, match=r"trained on 1 classes \['hats'\].*new: \['cats', 'dogs'\]"):
        imf.check_same_classes_as_run(run, imf.scan_image_folder(_write_folder(_ram("now"))))


def test_image_folder_as_file_uri_follows_the_same_link_rules_as_the_local_path(tmp_path):
    data = tmp_path / "data"
    _write_folder(str(data), {"cats/c.png": _png((1, 1, 1)), "dogs/d.png": _png((2, 2, 2)),
                              "../outside/o.png": _png((3, 3, 3))})
    os.symlink("..", data / "cats" / "up")                    # a cycle: a duplicate
    os.symlink(tmp_path / "outside", data / "dogs" / "more")  # leads out of the folder
    os.symlink("../cats/c.png", data / "dogs" / "same.png")   # the same file twice
    uri = _file_uri(data)
    expected = (["cats/c.png", "dogs/d.png"], [0, 1], ["cats", "dogs"],
                {imf.LINK_OUTSIDE: ["dogs/more"], imf.DUPLICATE: ["cats/up", "dogs/same.png"]})
    assert _relative_index(imf.scan_image_folder(str(data))) == expected
    uri_index = imf.scan_image_folder(uri)
    assert _relative_index(uri_index) == expected
    assert uri_index.paths[0] == uri + "/cats/c.png"


# --------------------------------------------------------------------------------------------------
# Classifier directories, reference-statistic caches, class maps
# --------------------------------------------------------------------------------------------------
def test_classifier_saved_to_ram_reloads_with_equal_outputs():
    model = classifier_lib.build_classifier(image_size=8, image_channels=1, num_classes=3, width=2, feature_dim=4)
    images = np.random.default_rng(0).uniform(-1, 1, (5, 8, 8, 1)).astype(np.float32)
    expected = model(images, training=False)
    directory = _ram("classifier")
    model_path, metadata_path = classifier_lib.save_classifier(model, directory, test_accuracy=0.25,
                                                               dataset_name="toy")
    assert (model_path, metadata_path) == (f"{directory}/classifier.keras", f"{directory}/classifier.json")
    assert files.listdir(directory) == ["classifier.json", "classifier.keras"]  # no temporary file left
    loaded, metadata = classifier_lib.load_classifier(directory)
    assert metadata["name"] == "toy_classifier" and metadata["test_accuracy"] == 0.25
    got = loaded(images, training=False)
    for key in ("features", "logits"):
        np.testing.assert_allclose(got[key].numpy(), expected[key].numpy(), rtol=1e-6, atol=1e-6)
    network = features_lib.load_feature_network(f"classifier:{directory}")
    assert network.name == "toy_classifier"
    assert network.fingerprint == hashlib.sha256(files.read_bytes(model_path)).hexdigest()[:16]
    features, logits = network(images)
    np.testing.assert_allclose(logits, expected["logits"].numpy(), rtol=1e-6, atol=1e-6)
    missing = _ram("no_classifier")
    with pytest.raises(FileNotFoundError, match=f"{missing}/classifier.keras"):
        classifier_lib.load_classifier(missing)


class _SumNetwork:
    """Features: per-image channel sums and means of squares (numpy, so the reference is easy)."""
    name = "sum_network"
    fingerprint = "abc"

    def __init__(self, fail=False):
        self.fail = fail

    def __call__(self, images):
        if self.fail:
            raise AssertionError("the cache should have been used")
        x = np.asarray(images, np.float32)
        features = np.concatenate([x.sum(axis=(1, 2)), (x ** 2).mean(axis=(1, 2))], axis=1)
        return features, features[:, :2]


def test_reference_stats_cache_written_to_ram_reloads_equal():
    images = np.random.default_rng(1).uniform(-1, 1, (12, 4, 4, 2)).astype(np.float32)
    cache = _ram("refs")
    files.makedirs(cache)
    stats = ref.load_or_compute_reference_stats(cache, _SumNetwork(), images, 12, "toy", batch_size=5)
    path = files.join(cache, ref.reference_stats_filename("sum_network", "toy", 12))
    assert files.listdir(cache) == [os.path.basename(path)]
    features, _ = _SumNetwork()(images)
    np.testing.assert_allclose(stats["mu"], features.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(stats["sigma"], np.cov(features, rowvar=False), rtol=1e-5, atol=1e-6)
    again = ref.load_or_compute_reference_stats(cache, _SumNetwork(fail=True), images, 12, "toy")
    np.testing.assert_array_equal(again["mu"], stats["mu"])
    np.testing.assert_array_equal(again["sigma"], stats["sigma"])
    assert (again["num"], again["dataset_name"], again["network_fingerprint"]) == (12, "toy", "abc")
    with pytest.raises(ref.ReferenceStatsMismatchError, match="num=12"):
        ref.load_or_compute_reference_stats(path, _SumNetwork(fail=True), images, 6, "toy")


def test_class_map_under_ram_is_found_read_and_used_by_name():
    run = _ram("run")
    written = class_map.write_class_map(run, ["zebra", "ant", "émeu"])
    assert written == f"{run}/classes.json" and class_map.find_class_map(run) == written
    assert class_map.run_class_names(run) == ["zebra", "ant", "émeu"]
    export = _ram("export/1")
    files.atomic_write_bytes(files.join(export, class_map.EXPORT_CLASS_MAP), class_map.class_map_json(["a", "b"]))
    assert class_map.read_class_map(class_map.find_class_map(export)) == ["a", "b"]
    files.atomic_write_text(files.join(run, "bad.json"), "{not json")
    with pytest.raises(ValueError, match=f"cannot read the class map {run}/bad.json"):
        class_map.read_class_map(files.join(run, "bad.json"))


# --------------------------------------------------------------------------------------------------
# TFDS: file:// data_dir and manual_dir with TFDS's real builders; archives checked through gfile
# --------------------------------------------------------------------------------------------------
def test_tfds_path_gives_tfds_file_uris_as_local_paths_and_leaves_other_uris_alone():
    assert tfds_pipeline.tfds_path("file:///data/tfds") == "/data/tfds"
    assert tfds_pipeline.tfds_path("gs://bucket/tfds") == "gs://bucket/tfds"
    assert tfds_pipeline.tfds_path("relative/dir") == "relative/dir"
    assert tfds_pipeline.tfds_path(None) is None


def test_tfds_data_dir_as_file_uri_reads_what_the_local_path_reads(tmp_path):
    data_dir = tiny_tfds.prepare(tmp_path / "tfds")
    def first_batches(root):
        ds = tfds_pipeline.tfds_dataset(tiny_tfds.NAME, 8, 4, data_dir=root, seed=2)
        return [(x.numpy(), y.numpy()) for x, y in ds.take(3)]
    from_uri, from_local = first_batches(_file_uri(data_dir)), first_batches(data_dir)
    for (x_uri, y_uri), (x_local, y_local) in zip(from_uri, from_local):
        np.testing.assert_array_equal(x_uri, x_local)
        np.testing.assert_array_equal(y_uri, y_local)
    index = tiny_tfds.example_index(np.concatenate([x for x, _ in from_uri]))
    assert sorted(index[:tiny_tfds.NUM_EXAMPLES]) == list(range(tiny_tfds.NUM_EXAMPLES))  # one epoch, each once


def test_imagenet2012_prepared_from_file_uris_by_tfds_builder(tmp_path):
    manual_dir = miniature_ilsvrc.write(tmp_path / "manual")
    data_dir = _file_uri(tmp_path / "data")
    builder = tfds_pipeline.prepare_tfds("imagenet2012", data_dir=data_dir, manual_dir=_file_uri(manual_dir))
    assert builder.info.splits["train"].num_examples == len(miniature_ilsvrc.train_file_names())
    assert str(builder.data_dir).startswith(str(tmp_path / "data" / "imagenet2012"))
    images, labels = next(iter(tfds_pipeline.tfds_dataset("imagenet2012", 8, 15, data_dir=data_dir)))
    label_of = builder.info.features["label"].str2int
    assert images.shape == (15, 8, 8, 3)  # one epoch: every training image once, with its synset's label
    assert sorted(labels.numpy()) == sorted(label_of(name.split("_")[0]) for name in miniature_ilsvrc.train_file_names())
    # A file:// manual_dir lacking an archive is named as given, before TFDS runs.
    os.remove(manual_dir / "ILSVRC2012_img_val.tar")
    with pytest.raises(FileNotFoundError, match=f"{_file_uri(manual_dir)} lacks ILSVRC2012_img_val.tar"):
        tfds_pipeline.prepare_tfds("imagenet2012", data_dir=_file_uri(tmp_path / "other"),
                                      manual_dir=_file_uri(manual_dir))


def test_tar_archives_under_ram_are_checked_through_gfile():
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, size in (("a.JPEG", 3000), ("b.JPEG", 700)):
            info = tarfile.TarInfo(name)
            info.size = size
            archive.addfile(info, io.BytesIO(b"x" * size))
    whole = buffer.getvalue()
    root = _ram("manual")
    files.atomic_write_bytes(files.join(root, "whole.tar"), whole)
    tfds_pipeline.check_tar(files.join(root, "whole.tar"))
    files.atomic_write_bytes(files.join(root, "cut.tar"), whole[:2048])
    with pytest.raises(ValueError, match=f"{root}/cut.tar is truncated: member 'a.JPEG'"):
        tfds_pipeline.check_tar(files.join(root, "cut.tar"))
    files.atomic_write_bytes(files.join(root, "text.tar"), b"plain text, no tar header" * 40)
    with pytest.raises(ValueError, match=f"{root}/text.tar is not a readable tar"):
        tfds_pipeline.check_tar(files.join(root, "text.tar"))


# --------------------------------------------------------------------------------------------------
# The classifier CLI with file:// directories
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow  # trains or runs CLIs for tens of seconds (docs/testing.md)
def test_classifier_cli_trains_from_and_saves_to_file_uris(tmp_path):
    blobs, _, _ = _tiny_fashion_mnist(n=8)
    _write_all(str(tmp_path / "fmnist"), blobs)
    model_dir = _file_uri(tmp_path / "classifier")
    result = subprocess.run(
        [sys.executable, "-m", "trainers.classifier", f"--model_dir={model_dir}",
         f"--data_dir={_file_uri(tmp_path / 'fmnist')}", "--steps=2", "--batch_size=4", "--width=2",
         "--feature_dim=4"],
        cwd=tmp_path, env=CLI_ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"saved {model_dir}/classifier.keras and {model_dir}/classifier.json" in result.stdout
    metadata = json.loads((tmp_path / "classifier" / "classifier.json").read_text())
    assert metadata["name"] == "fashion_mnist_classifier" and metadata["feature_dim"] == 4
    model, _ = classifier_lib.load_classifier(str(tmp_path / "classifier"))
    assert model.output["features"].shape[-1] == 4
