"""The real reference is capped at the real split's size for every kind of data (issue 42, point 2).

The pipelines repeat forever: a reference of 400 images drawn from a 40-image folder holds each image 10
times, so every real point's k-th nearest neighbour is one of its own copies (k-NN radius 0) and precision
collapses to 0 while KID is biased up. `sagan_tf.data.split_size` gives the size of a split of an image
folder (as scanned with the config's class selection) and of a TFDS split or slice; `runner.run_reference`
caps the request at it and says so.
"""
import numpy as np
import pytest
from PIL import Image

from sagan_tf.data import real_images, split_size
from sagan_tf.evaluation import metrics, runner
from tests import tiny_tfds
from tests.helpers import tiny_config

PER_CLASS = 20
ASKED = 400


class BlockMeanNetwork:
    """Features: the image's 4x4 grid of block means per channel (distinct images, distinct rows)."""
    name = "block_mean_net"
    fingerprint = "block-mean-v1"

    def __call__(self, images):
        x = np.asarray(images, np.float32)
        b, h, w, c = x.shape
        features = x.reshape(b, 4, h // 4, 4, w // 4, c).mean(axis=(2, 4)).reshape(b, -1)
        return features, np.zeros((b, 2), np.float32)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Class folders a/ and b/, 20 PNGs of distinct random noise each (40 images)."""
    root = tmp_path_factory.mktemp("folder40")
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (root / name).mkdir()
        for i in range(PER_CLASS):
            Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(root / name / f"{i:02d}.png")
    return str(root)


@pytest.fixture(scope="module")
def tiny_tfds_dir(tmp_path_factory):
    """The tiny TFDS dataset (10 examples) prepared in 4 record files by its real builder."""
    return tiny_tfds.prepare(tmp_path_factory.mktemp("tfds"), num_shards=4)


def _reference(config, data_dir, tmp_path, split=None):
    said = []
    reference, name, count = runner.run_reference(config, BlockMeanNetwork(), str(tmp_path), ASKED, ASKED, 16,
                                                  split=split, cache=str(tmp_path / "refs"), data_dir=data_dir,
                                                  log_fn=said.append)
    return reference, name, count, said


def _assert_each_real_image_once(reference, count):
    assert reference["num"] == count
    features = reference["features"]
    assert features.shape[0] == count
    assert np.unique(features, axis=0).shape[0] == count  # no image counted twice


def _precision_of_nearby_real_points(features):
    """Precision of real points a hair away from the reference's own (the same images, measured again
    with a tiny error): ~1 when the k-NN balls are real neighbourhoods, 0 when each point's k-th
    neighbour is its own copy (radius 0). The features against themselves exactly would read 1 either
    way (distance 0 <= radius 0)."""
    spread = np.sqrt(((features[:, None] - features[None]) ** 2).sum(-1))
    jitter = np.random.default_rng(1).standard_normal(features.shape) * 1e-3 * np.median(spread)
    precision, _ = metrics.precision_recall(features, features + jitter, k=3)
    return precision


@pytest.mark.parametrize("num_classes, class_names, expected", [
    (2, (), 2 * PER_CLASS),       # one class per folder
    (0, (), 2 * PER_CLASS),       # unconditional: every image, one pool
    (1, ("b",), PER_CLASS),       # the run's recorded classes: only b/
])
def test_image_folder_split_size_follows_the_pipelines_selection(folder, num_classes, class_names, expected):
    config = tiny_config(dataset="image_folder", num_classes=num_classes, class_names=class_names)
    assert split_size(config, "train", folder) == expected


def test_image_folder_reference_is_capped_at_the_folder(folder, tmp_path):
    config = tiny_config(dataset="image_folder", num_classes=2, eval_samples=ASKED)
    reference, name, count, said = _reference(config, folder, tmp_path)
    total = 2 * PER_CLASS
    assert count == total
    assert said == [f"{ASKED} real images asked for, but {name} has {total}; using {total}"]
    _assert_each_real_image_once(reference, total)
    assert _precision_of_nearby_real_points(reference["features"]) >= 0.95


def test_image_folder_real_split_sample_fn_takes_each_image_once(folder):
    config = tiny_config(dataset="image_folder", num_classes=2)
    said = []
    real_images.real_split_sample_fn(config, "train", ASKED, 16, folder, log_fn=said.append)
    name = f"image_folder_{folder.rstrip('/').rsplit('/', 1)[-1]}_train"
    assert said == [f"scoring {2 * PER_CLASS} real images of {name} in place of a generator"]


@pytest.mark.parametrize("split, expected", [("train", tiny_tfds.NUM_EXAMPLES),
                                             ("train[:50%]", tiny_tfds.NUM_EXAMPLES // 2),
                                             ("train[3:]", tiny_tfds.NUM_EXAMPLES - 3)])
def test_tfds_split_size_is_the_splits_example_count(tiny_tfds_dir, split, expected):
    config = tiny_config(dataset=f"tfds:{tiny_tfds.NAME}")
    assert split_size(config, split, tiny_tfds_dir) == expected


@pytest.mark.parametrize("split, expected", [("train", tiny_tfds.NUM_EXAMPLES),
                                             ("train[:50%]", tiny_tfds.NUM_EXAMPLES // 2)])
def test_tfds_reference_is_capped_at_the_split(tiny_tfds_dir, tmp_path, split, expected):
    config = tiny_config(dataset=f"tfds:{tiny_tfds.NAME}", eval_samples=ASKED)
    reference, name, count, said = _reference(config, tiny_tfds_dir, tmp_path, split=split)
    assert name == f"{tiny_tfds.NAME}_{split}"
    assert count == expected
    assert said == [f"{ASKED} real images asked for, but {name} has {expected}; using {expected}"]
    _assert_each_real_image_once(reference, expected)


def test_unknown_tfds_split_is_a_reference_split_error(tiny_tfds_dir):
    config = tiny_config(dataset=f"tfds:{tiny_tfds.NAME}")
    with pytest.raises(real_images.ReferenceSplitError, match="split 'test'"):
        real_images.real_image_source(config, "test", 4, tiny_tfds_dir)


def test_fashion_mnist_keeps_its_held_out_test_split_and_sizes():
    assert real_images.default_reference_split("fashion_mnist_idx") == "test"
    assert real_images.default_reference_split("tfds:fashion_mnist") == "test"
    assert real_images.default_reference_split("image_folder") == "train"
    config = tiny_config(dataset="fashion_mnist_idx")
    assert split_size(config, "test") == 10000 and split_size(config, "train") == 60000
