"""Feature networks, feature streaming, the domain classifier and cached reference statistics.

Every network here is created and saved inside the test (nothing is downloaded), and then goes
through the same loading code as a real one.
"""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.data import common
from sagan_tf.evaluation import classifier as classifier_lib
from sagan_tf.evaluation import features as features_lib
from sagan_tf.evaluation import reference_stats


# ----------------------------------------------------------------------------------------------
# (a) SavedModel with the documented signature
# ----------------------------------------------------------------------------------------------

class _StandInInception(tf.Module):
    """Tiny module with the documented signature: images [N, 16, 16, 3] in [-1, 1] ->
    {"pool_3": [N, 1, 1, 5] (spatial dims kept, as some Inception exports do), "logits": [N, 4]}."""

    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(0)
        self.w = tf.Variable(rng.normal(size=(3, 5)).astype(np.float32))
        self.v = tf.Variable(rng.normal(size=(5, 4)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 16, 16, 3], tf.float32, name="images")])
    def serve(self, images):
        pooled = tf.tanh(tf.reduce_mean(images, axis=[1, 2]) @ self.w)
        return {"pool_3": pooled[:, None, None, :], "logits": pooled @ self.v}


def _expected_standin_outputs(module, pixel_means_rgb):
    """What the stand-in computes for images whose per-channel means are `pixel_means_rgb` [N, 3]."""
    features = np.tanh(pixel_means_rgb @ module.w.numpy())
    return features, features @ module.v.numpy()


@pytest.fixture(scope="module")
def standin_savedmodel(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("standin_inception"))
    module = _StandInInception()
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return path, module


def test_savedmodel_network_loads_the_documented_signature(standin_savedmodel):
    path, module = standin_savedmodel
    network = features_lib.load_feature_network(f"savedmodel:{path}")
    assert network.name == "inception_v3_pool3"
    assert network.image_size == 16  # read from the signature's static input shape
    assert network.fingerprint

    images = np.random.default_rng(1).uniform(-1, 1, size=(3, 16, 16, 3)).astype(np.float32)
    features, logits = network(images)
    expected_features, expected_logits = _expected_standin_outputs(module, images.mean(axis=(1, 2)))
    assert features.shape == (3, 5) and logits.shape == (3, 4)
    assert features.dtype == np.float32 and logits.dtype == np.float32
    np.testing.assert_allclose(features, expected_features, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-5, atol=1e-5)


def test_savedmodel_network_resizes_and_converts_grey_to_rgb(standin_savedmodel):
    path, module = standin_savedmodel
    network = features_lib.SavedModelFeatureNetwork(path)
    levels = np.array([-0.8, 0.1, 0.9], dtype=np.float32)
    grey = np.ones((3, 8, 8, 1), np.float32) * levels[:, None, None, None]  # constant images
    features, logits = network(grey)
    # A constant 8x8 grey image resized to 16x16 RGB is constant c in all three channels.
    expected_features, expected_logits = _expected_standin_outputs(module, np.repeat(levels[:, None], 3, 1))
    np.testing.assert_allclose(features, expected_features, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-5, atol=1e-5)


def test_one_rgb_to_grey_for_the_training_data_and_the_feature_networks():
    """A grey feature network sees RGB samples as the data pipelines make grey images: one function,
    BT.601 luma (0.299, 0.587, 0.114), not the channel mean the networks used before."""
    assert features_lib.rgb_to_grey is common.rgb_to_grey
    rng = np.random.default_rng(0)
    rgb = rng.uniform(-1, 1, (2, 6, 6, 3)).astype(np.float32)
    luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(common.rgb_to_grey(rgb).numpy()[..., 0], luma, atol=1e-6)
    np.testing.assert_allclose(features_lib.prepare_images(rgb, 6, channels=1).numpy()[..., 0], luma, atol=1e-6)
    grey = rgb[..., :1]  # a grey image replicated to RGB comes back unchanged (the weights sum to 1)
    np.testing.assert_allclose(common.rgb_to_grey(np.repeat(grey, 3, axis=-1)).numpy(), grey, atol=1e-6)
    pixels = rng.integers(0, 256, (1, 500, 3)).astype(np.uint8)  # uint8: rounded to a level, as Pillow's "L"
    converted = common.rgb_to_grey(pixels).numpy()[..., 0]
    assert converted.dtype == np.uint8
    np.testing.assert_array_equal(converted, np.round(pixels.astype(np.float64) @ [0.299, 0.587, 0.114]))
    from PIL import Image
    assert np.abs(converted.astype(int) - np.asarray(Image.fromarray(pixels).convert("L")).astype(int)).max() <= 1


@pytest.mark.parametrize("kind,advice", [("savedmodel", "savedmodel:"),
                                         ("keras_inception", "keras_inception:"),
                                         ("classifier", "classifier:")])
def test_missing_network_path_says_how_to_provide_it(tmp_path, kind, advice):
    missing = str(tmp_path / "not_there")
    with pytest.raises(FileNotFoundError) as error:
        features_lib.load_feature_network(f"{kind}:{missing}")
    message = str(error.value)
    assert missing in message and "Nothing is downloaded" in message and advice in message


def test_bad_spec_is_rejected():
    with pytest.raises(ValueError, match="KIND:PATH"):
        features_lib.load_feature_network("tfhub:/some/dir")


def test_images_outside_minus_one_one_are_rejected():
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        features_lib.prepare_images(np.full((1, 4, 4, 3), 255.0, np.float32), 4)
    with pytest.raises(ValueError, match="uint8"):
        features_lib.prepare_images(np.zeros((1, 4, 4, 3), np.uint8), 4)


# ----------------------------------------------------------------------------------------------
# (b) keras.applications.InceptionV3 + a local weights file
# ----------------------------------------------------------------------------------------------

def test_keras_inception_network_loads_local_h5_weights(tmp_path):
    # Written in the legacy HDF5 layout of Keras' published inception_v3_weights_..._kernels.h5.
    h5py = pytest.importorskip("h5py")
    from keras.src.legacy.saving import legacy_h5_format

    reference = keras.applications.InceptionV3(weights=None, input_shape=(75, 75, 3),
                                               classifier_activation=None)
    weights_path = str(tmp_path / "inception_v3_weights.h5")
    with h5py.File(weights_path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, reference)

    network = features_lib.load_feature_network(f"keras_inception:{weights_path}")
    assert network.image_size == 299
    small = features_lib.KerasInceptionV3FeatureNetwork(weights_path, image_size=75)
    images = np.random.default_rng(2).uniform(-1, 1, size=(2, 75, 75, 3)).astype(np.float32)
    features, logits = small(images)
    pool = keras.Model(reference.input, reference.get_layer("avg_pool").output)
    assert features.shape == (2, 2048) and logits.shape == (2, 1000)
    np.testing.assert_allclose(features, pool(images), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(logits, reference(images), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# (c) the project's domain classifier
# ----------------------------------------------------------------------------------------------

def test_classifier_outputs_features_and_logits_and_round_trips(tmp_path):
    model = classifier_lib.build_classifier(image_size=16, image_channels=1, num_classes=10,
                                            width=4, feature_dim=24)
    images = np.random.default_rng(3).uniform(-1, 1, size=(5, 16, 16, 1)).astype(np.float32)
    outputs = model(images, training=False)
    assert outputs["features"].shape == (5, 24) and outputs["logits"].shape == (5, 10)

    classifier_lib.save_classifier(model, str(tmp_path), test_accuracy=0.5,
                                   dataset_name="fashion_mnist")
    assert sorted(os.listdir(tmp_path)) == ["classifier.json", "classifier.keras"]
    network = features_lib.load_feature_network(f"classifier:{tmp_path}")
    assert network.name == "fashion_mnist_classifier"
    assert (network.image_size, network.channels, network.test_accuracy) == (16, 1, 0.5)
    features, logits = network(images)
    np.testing.assert_array_equal(features, outputs["features"].numpy())
    np.testing.assert_array_equal(logits, outputs["logits"].numpy())
    # RGB input at another size is converted to what the classifier expects.
    assert network(np.zeros((2, 32, 32, 3), np.float32))[0].shape == (2, 24)


def test_classifier_is_float32_under_a_mixed_precision_training_policy():
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = classifier_lib.build_classifier(image_size=8, width=2, feature_dim=4)
    assert keras.mixed_precision.global_policy().name == "mixed_float16"  # restored
    assert all(layer.dtype_policy.name == "float32" for layer in model.layers)
    assert model(np.zeros((1, 8, 8, 1), np.float32))["features"].dtype == tf.float32


def test_train_classifier_learns_a_separable_toy_task():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, size=256)
    images = ((labels[:, None, None, None] - 0.5) + 0.3 * rng.normal(size=(256, 8, 8, 1)))
    images = np.clip(images, -1, 1).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(32)
    model = classifier_lib.build_classifier(image_size=8, num_classes=2, width=4, feature_dim=8)
    accuracy = classifier_lib.train_classifier(model, ds, ds, steps=80, learning_rate=1e-2)
    assert accuracy > 0.95


# ----------------------------------------------------------------------------------------------
# Streaming and reference statistics (with a cheap fake network)
# ----------------------------------------------------------------------------------------------

class _PixelNetwork:
    """Features = the first 3 pixels, logits = pixel means; counts the images it sees."""
    image_size = 4

    def __init__(self, name="pixels", fingerprint="abc"):
        self.name, self.fingerprint, self.seen = name, fingerprint, 0

    def __call__(self, images):
        x = np.asarray(images, dtype=np.float32).reshape(len(images), -1)
        self.seen += len(x)
        return x[:, :3], x.mean(axis=1, keepdims=True)


def _pixel_images(n=23):
    return np.random.default_rng(5).uniform(-1, 1, size=(n, 4, 4, 1)).astype(np.float32)


def _sampling_fn(images):
    """A sampling function fn(n) -> next n images, like a generator wrapped over its noise."""
    position = [0]

    def sample(n):
        batch = images[position[0]:position[0] + n]
        position[0] += n
        return batch
    return sample


def test_compute_features_gives_the_same_rows_from_every_kind_of_source():
    images = _pixel_images()
    labels = np.arange(len(images))
    expected = images.reshape(len(images), -1)[:20, :3]
    sources = {
        "array": images,
        "unbatched dataset of (image, label)": tf.data.Dataset.from_tensor_slices((images, labels)),
        "batched dataset of dicts": tf.data.Dataset.from_tensor_slices({"image": images}).batch(9),
        "callable": _sampling_fn(images),
        "list of batches": [images[:11], images[11:]],
    }
    for kind, source in sources.items():
        network = _PixelNetwork()
        features, logits = features_lib.compute_features(network, source, num=20, batch_size=6)
        np.testing.assert_array_equal(features, expected, err_msg=kind)
        assert logits.shape == (20, 1) and network.seen == 20, kind


def test_compute_features_fails_when_the_source_runs_out():
    with pytest.raises(ValueError, match="ran out after 23 of 30"):
        features_lib.compute_features(_PixelNetwork(), _pixel_images(), num=30)


def test_reference_stats_are_cached_and_reloaded(tmp_path):
    images = _pixel_images()
    network = _PixelNetwork()
    stats = reference_stats.load_or_compute_reference_stats(
        str(tmp_path), network, images, num_examples=20, dataset_name="toy", batch_size=8)
    features = images.reshape(len(images), -1)[:20, :3].astype(np.float64)
    np.testing.assert_allclose(stats["mu"], features.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats["sigma"], np.cov(features, rowvar=False), rtol=1e-10)
    assert (stats["num"], stats["network_name"]) == (20, "pixels")
    assert os.listdir(tmp_path) == [reference_stats.reference_stats_filename("pixels", "toy", 20)]

    def must_not_be_used(n):
        raise AssertionError("the cache should have been used")

    again = reference_stats.load_or_compute_reference_stats(
        str(tmp_path), network, must_not_be_used, num_examples=20, dataset_name="toy")
    np.testing.assert_array_equal(again["mu"], stats["mu"])
    np.testing.assert_array_equal(again["sigma"], stats["sigma"])
    assert again["network_name"] == "pixels" and again["dataset_name"] == "toy"


def test_cached_reference_stats_from_another_network_are_refused(tmp_path):
    cache = str(tmp_path / "stats.npz")
    reference_stats.load_or_compute_reference_stats(
        cache, _PixelNetwork("inception_v3_pool3"), _pixel_images(), 20, "toy")
    with pytest.raises(reference_stats.ReferenceStatsMismatchError,
                       match="inception_v3_pool3.*fashion_mnist_classifier"):
        reference_stats.load_or_compute_reference_stats(
            cache, _PixelNetwork("fashion_mnist_classifier"), _pixel_images(), 20, "toy")
    with pytest.raises(reference_stats.ReferenceStatsMismatchError, match="fingerprint"):
        reference_stats.load_or_compute_reference_stats(
            cache, _PixelNetwork("inception_v3_pool3", fingerprint="other"), _pixel_images(), 20, "toy")
    with pytest.raises(reference_stats.ReferenceStatsMismatchError, match="num"):
        reference_stats.load_or_compute_reference_stats(
            cache, _PixelNetwork("inception_v3_pool3"), _pixel_images(), 10, "toy")
    assert os.listdir(tmp_path) == ["stats.npz"]  # no temporary files left behind
