"""sagan_tf.data.build_dataset: dispatch on config.dataset and the config fields it reads."""
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from sagan_tf import data
from sagan_tf.config import default_config
from tests import tiny_tfds


def _config(**fields):
    """The project's config (every field build_dataset reads exists there) with these values."""
    config = default_config()
    config.update(dict(dict(batch_size=2, resolution=8, seed=0, image_channels=3, num_classes=0), **fields))
    return config


def test_image_folder_reads_resolution_channels_and_data_dir(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.new("RGB", (10, 10), (255, 255, 255)).save(tmp_path / "a" / "white.png")
    Image.new("RGB", (10, 10), (0, 0, 0)).save(tmp_path / "b" / "black.png")
    config = _config(dataset="image_folder", image_channels=1, num_classes=2)
    images, labels = next(iter(data.build_dataset(config, data_dir=str(tmp_path))))
    assert images.shape == (2, 8, 8, 1)
    # white (1.0) is class 0, black (-1.0) class 1, whatever the order
    np.testing.assert_array_equal(images.numpy()[:, 0, 0, 0], np.where(labels.numpy() == 0, 1.0, -1.0))
    with pytest.raises(ValueError, match="no splits"):
        data.build_dataset(config, data_dir=str(tmp_path), split="test")
    with pytest.raises(ValueError, match="data_dir"):
        data.build_dataset(_config(dataset="image_folder"))


@pytest.fixture(scope="module")
def tiny_tfds_dir(tmp_path_factory):
    return tiny_tfds.prepare(tmp_path_factory.mktemp("tfds"))


def test_tfds_prefix_dispatches_with_the_config_fields(tiny_tfds_dir):
    config = _config(dataset=f"tfds:{tiny_tfds.NAME}", resolution=16, batch_size=4, image_channels=1)
    images, labels = next(iter(data.build_dataset(config, data_dir=tiny_tfds_dir)))
    assert images.shape == (4, 16, 16, 1)
    np.testing.assert_array_equal(labels.numpy(), tiny_tfds.example_index(images.numpy()) % 3)


def test_start_step_is_passed_through(tiny_tfds_dir):
    config = _config(dataset=f"tfds:{tiny_tfds.NAME}", random_flip=True, image_channels=1)
    full = [x.numpy() for x, _ in data.build_dataset(config, data_dir=tiny_tfds_dir).take(3)]
    resumed = next(iter(data.build_dataset(config, data_dir=tiny_tfds_dir, start_step=2)))[0].numpy()
    np.testing.assert_array_equal(resumed, full[2])


def test_input_context_is_for_tfds_only(tmp_path):
    context = tf.distribute.InputContext(2, 0, 2)
    with pytest.raises(ValueError, match=r"'image_folder' has no per-worker input pipelines"):
        data.build_dataset(_config(dataset="image_folder"), data_dir=str(tmp_path), input_context=context)


def test_fashion_mnist_needs_resolution_32(tmp_path):
    with pytest.raises(ValueError, match="32x32.*tfds:fashion_mnist"):
        data.build_dataset(_config(dataset="fashion_mnist_idx", resolution=64), data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):  # right builder, missing files
        data.build_dataset(_config(dataset="fashion_mnist_idx", resolution=32, image_channels=1),
                           data_dir=str(tmp_path))


@pytest.mark.parametrize("name", ["mnist", "tfds:", "imagefolder"])
def test_unknown_dataset_lists_allowed_forms(name):
    with pytest.raises(ValueError, match=f"{name!r}.*fashion_mnist_idx.*image_folder.*tfds:<name>"):
        data.build_dataset(_config(dataset=name))
