"""sagan_tf.data.tfds_pipeline: mocked imagenet2012/cifar10, and a tiny dataset really prepared on disk.

In TFDS 4.9, `tfds.testing.mock_data` honours `decoders`: with SkipDecoding it hands over encoded image
bytes, like the real reader. The decoded-pixels branch (builders or mocks that ignore `decoders`) is
exercised with a custom `as_dataset_fn`.
"""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from sagan_tf.data import tfds_pipeline

TINY_NAME = "sagan_data_test_images"
TINY_N = 10


class SaganDataTestImages(tfds.core.GeneratorBasedBuilder):
    """Example i: a solid image of value 20 * i + 10, of varying aspect ratio, label i % 3."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "label": tfds.features.ClassLabel(num_classes=3)}))

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(TINY_N):
            yield i, {"image": np.full((12, 12 + 3 * i, 3), 20 * i + 10, np.uint8), "label": i % 3}


@pytest.fixture(scope="module")
def tiny_data_dir(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    tfds.builder(TINY_NAME, data_dir=data_dir).download_and_prepare()
    return data_dir


def _take(ds, n):
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in ds.take(n)])
    return np.stack(images), np.stack(labels)


def _tiny_index(images):
    """Example index of each solid tiny image (asserting it is solid)."""
    values = np.round((images + 1) * 127.5)
    assert np.all(values == values[:, :1, :1, :1])
    return ((values[:, 0, 0, 0] - 10) / 20).astype(int)


@pytest.mark.parametrize("name, num_classes", [("imagenet2012", 1000), ("cifar10", 10)])
def test_mocked_datasets_shapes_dtypes_range_labels(name, num_classes):
    with tfds.testing.mock_data(num_examples=6):
        ds = tfds_pipeline.tfds_dataset(name, 16, 4, seed=1, random_flip=True)
        images, labels = _take(ds, 3)
    assert ds.element_spec[0].shape == (4, 16, 16, 3) and ds.element_spec[0].dtype == tf.float32
    assert ds.element_spec[1].shape == (4,) and ds.element_spec[1].dtype == tf.int32
    assert images.min() >= -1 and images.max() <= 1 and images.std() > 0.1  # random mock pixels
    assert labels.min() >= 0 and labels.max() < num_classes
    assert ds.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.DATA


def test_mocked_resume_matches_uninterrupted():
    with tfds.testing.mock_data(num_examples=5):
        full = _take(tfds_pipeline.tfds_dataset("cifar10", 8, 4, seed=2, random_flip=True), 4)
        resumed = _take(tfds_pipeline.tfds_dataset("cifar10", 8, 4, seed=2, random_flip=True, start_step=2), 2)
    np.testing.assert_array_equal(resumed[0], full[0][2:])
    np.testing.assert_array_equal(resumed[1], full[1][2:])


def test_already_decoded_images_are_converted_too():
    colours = np.array([[200, 100, 50], [0, 0, 255], [30, 60, 90]], np.uint8)

    def as_dataset(self, *args, **kwargs):  # ignores `decoders`: yields pixels, not bytes
        del self, args, kwargs
        images = np.broadcast_to(colours[:, None, None, :], (3, 20, 30, 3)).copy()
        return tf.data.Dataset.from_tensor_slices({"image": images, "label": np.arange(3, dtype=np.int64)})

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        images, labels = _take(tfds_pipeline.tfds_dataset("cifar10", 8, 3, image_channels=1), 1)
    luma = np.round(colours @ np.array([0.2989, 0.5870, 0.1140]))
    assert images.shape == (1, 3, 8, 8, 1)
    np.testing.assert_allclose(images[0], (luma[labels[0]] / 127.5 - 1)[:, None, None, None]
                               * np.ones((3, 8, 8, 1)), atol=1 / 127.5)


def test_prepared_dataset_values_labels_and_epochs(tiny_data_dir):
    ds = tfds_pipeline.tfds_dataset(TINY_NAME, 8, 5, data_dir=tiny_data_dir, seed=3)
    images, labels = _take(ds, 6)  # 3 epochs
    assert images.shape == (6, 5, 8, 8, 3)
    index = _tiny_index(images.reshape(30, 8, 8, 3))
    np.testing.assert_array_equal(labels.reshape(-1), index % 3)
    epochs = [tuple(index[TINY_N * e:TINY_N * (e + 1)]) for e in range(3)]
    assert all(sorted(epoch) == list(range(TINY_N)) for epoch in epochs)
    assert len(set(epochs)) == 3  # each epoch has its own order


@pytest.mark.parametrize("start_step", [1, 3, 4])  # batches of 3 over 10: steps 3 and 6 straddle epochs
def test_prepared_dataset_resume_with_flips(tiny_data_dir, start_step):
    def take(step, n):
        return _take(tfds_pipeline.tfds_dataset(TINY_NAME, 8, 3, data_dir=tiny_data_dir, seed=4,
                                                random_flip=True, start_step=step), n)
    full_images, full_labels = take(0, start_step + 3)
    images, labels = take(start_step, 3)
    np.testing.assert_array_equal(images, full_images[start_step:])
    np.testing.assert_array_equal(labels, full_labels[start_step:])


def test_seed_changes_the_order(tiny_data_dir):
    def order(seed):
        images, _ = _take(tfds_pipeline.tfds_dataset(TINY_NAME, 4, TINY_N, data_dir=tiny_data_dir, seed=seed), 1)
        return _tiny_index(images[0])
    np.testing.assert_array_equal(order(0), order(0))
    assert not np.array_equal(order(0), order(1))


def test_unprepared_dataset_without_manual_dir_explains(tmp_path):
    with pytest.raises(FileNotFoundError, match="not prepared.*manual_dir"):
        tfds_pipeline.tfds_dataset(TINY_NAME, 8, 2, data_dir=str(tmp_path))


def test_manual_dir_without_the_archives_refuses_to_download(tmp_path):
    manual_dir = tmp_path / "manual"
    manual_dir.mkdir()
    with pytest.raises(FileNotFoundError, match="cifar-10-binary.tar.gz"):
        tfds_pipeline.tfds_dataset("cifar10", 8, 2, data_dir=str(tmp_path / "data"), manual_dir=str(manual_dir))


def test_pipeline_works_with_a_global_tf_seed(tiny_data_dir):
    # Dataset.shuffle(seed=<tensor>) breaks under a global seed; training sets one to seed the weights.
    tf.random.set_seed(1)
    try:
        first = _take(tfds_pipeline.tfds_dataset(TINY_NAME, 8, 5, data_dir=tiny_data_dir, seed=3), 2)
    finally:
        tf.random.set_seed(None)
    again = _take(tfds_pipeline.tfds_dataset(TINY_NAME, 8, 5, data_dir=tiny_data_dir, seed=3), 2)
    np.testing.assert_array_equal(first[0], again[0])
