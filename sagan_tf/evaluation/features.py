"""Pluggable feature networks that turn images into (features, logits) for the metrics.

A feature network is any object with

* ``name`` -- a label carried by every number computed with it ("inception_v3_pool3",
  "fashion_mnist_classifier", ...): an FID under one network is not comparable with another's;
* ``fingerprint`` -- a short digest of the weights, so cached reference statistics computed with
  a different file under the same name are detected;
* ``image_size`` -- the square input size it runs at;
* ``__call__(images)`` -- images float32 [N, H, W, C] in [-1, 1] (the generator's range, any
  H, W and C in {1, 3}) -> (features [N, D] float32 ndarray, logits [N, K] float32 ndarray).
  Inputs are resized (bilinear, antialiased) to ``image_size`` and converted to the channel
  count the network wants (grey tiled to RGB; RGB to grey by the training data's own conversion,
  `sagan_tf.data.common.rgb_to_grey`).

Three implementations, all loaded from files the user provides (nothing is downloaded at run time):
local paths or any URI `tf.io.gfile` reads (``file:///...``, ``gs://...``):

* :class:`SavedModelFeatureNetwork` -- an Inception-v3 SavedModel (signature below);
* :class:`KerasInceptionV3FeatureNetwork` -- ``keras.applications.InceptionV3`` + a local weights file;
* :class:`ClassifierFeatureNetwork` -- the project's own small classifier (:mod:`.classifier`).

:func:`load_feature_network` builds one from a "kind:path" string, and :func:`compute_features`
streams images from an array, a tf.data pipeline or a sampling function through a network.

SavedModel feature-network signature
------------------------------------
The convention is that of the TF-GAN evaluation Inception (TF-Hub
``tensorflow/tfgan/eval/inception/1``, the network behind the usual TF FID/IS numbers):

* a ``serving_default`` signature (``default`` is also accepted, and if neither exists the
  loaded object's ``__call__``, as in TF2 TF-Hub modules);
* exactly one input: float32 images [N, 299, 299, 3] with values in [-1, 1]; the input name
  does not matter, and if the input's spatial size is static it is used as ``image_size``;
* a dict output with ``"pool_3"`` -> [N, 2048] (or [N, 1, 1, 2048]) pool features and
  ``"logits"`` -> [N, K] pre-softmax logits (K = 1008 for the TF-GAN network). Other key names
  can be passed as ``features_key`` / ``logits_key``.
"""
from __future__ import annotations

import hashlib
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from sagan_tf.data.common import rgb_to_grey
from sagan_tf.evaluation import classifier as classifier_lib
from sagan_tf.run import files

__all__ = [
    "SavedModelFeatureNetwork",
    "KerasInceptionV3FeatureNetwork",
    "ClassifierFeatureNetwork",
    "feature_network_spec",
    "load_feature_network",
    "prepare_images",
    "iterate_features",
    "compute_features",
]

# Values further than this outside [-1, 1] mean the caller passed [0, 255] or [0, 1] images by mistake.
_RANGE_TOLERANCE = 1e-2


def prepare_images(images, image_size: int, channels: int = 3) -> tf.Tensor:
    """Check and convert images float32 [N, H, W, C] in [-1, 1] to [N, image_size, image_size, channels].

    Raises ValueError for integer dtypes or values outside [-1, 1] (a [0, 255] batch would
    otherwise give a plausible-looking but meaningless FID).
    """
    images = tf.convert_to_tensor(images)
    if not images.dtype.is_floating:
        raise ValueError(f"images must be float in [-1, 1], got dtype {images.dtype.name}; "
                         "scale uint8 images with x / 127.5 - 1")
    images = tf.cast(images, tf.float32)
    if images.shape.rank != 4:
        raise ValueError(f"images must be [N, H, W, C], got shape {images.shape}")
    lo, hi = float(tf.reduce_min(images)), float(tf.reduce_max(images))
    if lo < -1.0 - _RANGE_TOLERANCE or hi > 1.0 + _RANGE_TOLERANCE:
        raise ValueError(f"images must be in [-1, 1], got values in [{lo:.3g}, {hi:.3g}]")
    in_channels = images.shape[-1]
    if in_channels != channels:
        if in_channels == 1:
            images = tf.tile(images, [1, 1, 1, channels])
        elif channels == 1 and in_channels == 3:
            images = rgb_to_grey(images)
        else:
            raise ValueError(f"cannot convert {in_channels}-channel images to {channels} channels")
    if images.shape[1] != image_size or images.shape[2] != image_size:
        images = tf.image.resize(images, [image_size, image_size], method="bilinear",
                                 antialias=True)
    return images


def _is_file(path: str) -> bool:
    return files.exists(path) and not files.isdir(path)


def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with tf.io.gfile.GFile(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def _to_numpy_pair(features, logits) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, dtype=np.float32)
    return features.reshape(features.shape[0], -1), np.asarray(logits, dtype=np.float32)


# ----------------------------------------------------------------------------------------------
# (a) Inception SavedModel
# ----------------------------------------------------------------------------------------------

class SavedModelFeatureNetwork:
    """A SavedModel with the signature in this module's docstring, loaded from a directory (local or a URI)."""

    def __init__(self, path: str, name: str = "inception_v3_pool3", features_key: str = "pool_3",
                 logits_key: str = "logits", signature: str = "serving_default",
                 image_size: int | None = None):
        path = os.fspath(path)
        if not _is_file(files.join(path, "saved_model.pb")):
            raise FileNotFoundError(
                f"No SavedModel at {path!r} (no saved_model.pb). Nothing is downloaded at run "
                "time: on a machine with internet access, save the TF-GAN eval Inception "
                "(TF-Hub tensorflow/tfgan/eval/inception/1) or any network with the signature "
                "documented in sagan_tf/evaluation/features.py (serving_default: float32 images "
                "[N, 299, 299, 3] in [-1, 1] -> {'pool_3': [N, 2048], 'logits': [N, K]}) to a "
                "directory, copy it here and pass savedmodel:<that directory>.")
        self.name = name
        self.path = path
        self._features_key, self._logits_key = features_key, logits_key
        self._module = tf.saved_model.load(path)
        self._fn, self._input_name, static_size = self._find_callable(signature)
        self.image_size = int(image_size or static_size or 299)
        self.fingerprint = self._read_fingerprint(path)

    def _find_callable(self, signature: str):
        """(function, keyword name of the image input or None, static image size or None)."""
        candidates = [signature] + (["default"] if signature == "serving_default" else [])
        for candidate in candidates:
            if candidate in self._module.signatures:
                fn = self._module.signatures[candidate]
                args, kwargs = fn.structured_input_signature
                if args or len(kwargs) != 1:
                    raise ValueError(f"signature {candidate!r} of {self.path} must take exactly "
                                     f"one image input, takes {args} {kwargs}")
                (input_name, spec), = kwargs.items()
                return fn, input_name, spec.shape[1] if spec.shape.rank == 4 else None
        if callable(self._module):
            return self._module, None, None
        raise ValueError(f"{self.path} has no signature {' or '.join(map(repr, candidates))} and "
                         f"is not callable; its signatures: {list(self._module.signatures)}")

    @staticmethod
    def _read_fingerprint(path: str) -> str:
        try:
            return str(tf.saved_model.experimental.read_fingerprint(path).saved_model_checksum)
        except Exception:  # SavedModels written before TF 2.12 have no fingerprint.pb
            return _file_digest(files.join(path, "saved_model.pb"))

    def __call__(self, images) -> tuple[np.ndarray, np.ndarray]:
        x = prepare_images(images, self.image_size, channels=3)
        outputs = self._fn(**{self._input_name: x}) if self._input_name else self._fn(x)
        if isinstance(outputs, dict):
            missing = [k for k in (self._features_key, self._logits_key) if k not in outputs]
            if missing:
                raise KeyError(f"{self.path} outputs {sorted(outputs)}, missing {missing}")
            return _to_numpy_pair(outputs[self._features_key], outputs[self._logits_key])
        if isinstance(outputs, (tuple, list)) and len(outputs) == 2:
            return _to_numpy_pair(*outputs)
        raise ValueError(f"{self.path} must return a dict with {self._features_key!r} and "
                         f"{self._logits_key!r} (or a (features, logits) pair)")


# ----------------------------------------------------------------------------------------------
# (b) keras.applications.InceptionV3 with local weights
# ----------------------------------------------------------------------------------------------

class KerasInceptionV3FeatureNetwork:
    """``keras.applications.InceptionV3`` (ImageNet head) with weights from a local file.

    Features are the 2048-d output of the ``avg_pool`` global-average-pool layer, logits the
    pre-softmax output of the final 1000-way Dense (built with ``classifier_activation=None``,
    which changes no weights). Keras' InceptionV3 preprocessing ("tf" mode) maps pixels to
    [-1, 1], so the project's images go in unchanged. Note these weights are not the TF-GAN /
    TTUR FID Inception: numbers are only comparable with others computed with the same file.
    """

    def __init__(self, weights_path: str, name: str = "keras_inception_v3_avg_pool",
                 image_size: int = 299, num_classes: int = 1000):
        weights_path = os.fspath(weights_path)
        if not _is_file(weights_path):
            raise FileNotFoundError(
                f"No InceptionV3 weights file at {weights_path!r}. Nothing is downloaded at run "
                "time: on a machine with internet access run "
                "keras.applications.InceptionV3(weights='imagenet') (it caches "
                "inception_v3_weights_tf_dim_ordering_tf_kernels.h5 in ~/.keras/models/), copy "
                "that file here and pass keras_inception:<path to the .h5>.")
        self.name = name
        self.image_size = int(image_size)
        self.fingerprint = _file_digest(weights_path)
        with classifier_lib.float32_policy():  # never in the training's mixed precision
            base = keras.applications.InceptionV3(
                weights=None, include_top=True, input_shape=(self.image_size, self.image_size, 3),
                classes=num_classes, classifier_activation=None)
            _load_weights(base, weights_path)
            self.model = keras.Model(base.input, [base.get_layer("avg_pool").output, base.output])
        self._predict = tf.function(lambda x: self.model(x, training=False),
                                    reduce_retracing=True)

    def __call__(self, images) -> tuple[np.ndarray, np.ndarray]:
        features, logits = self._predict(prepare_images(images, self.image_size, channels=3))
        return _to_numpy_pair(features, logits)


def _load_weights(model: keras.Model, weights_path: str) -> None:
    """`model.load_weights` of a file anywhere: Keras (h5py) reads local files, so others go through a scratch copy."""
    local = files.local_path(weights_path)
    if local is not None:
        model.load_weights(local)
        return
    suffix = os.path.splitext(weights_path)[1] or ".h5"  # Keras picks the weights format by the extension
    with tempfile.TemporaryDirectory(prefix="sagan-weights-") as scratch:
        copy = os.path.join(scratch, "weights" + suffix)
        with open(copy, "wb") as f:
            f.write(files.read_bytes(weights_path))
        model.load_weights(copy)


# ----------------------------------------------------------------------------------------------
# (c) the project's own domain classifier
# ----------------------------------------------------------------------------------------------

class ClassifierFeatureNetwork:
    """A classifier saved by :func:`sagan_tf.evaluation.classifier.save_classifier`.

    `model_dir_or_path` is the .keras file or the directory holding classifier.keras/.json.
    The name (e.g. "fashion_mnist_classifier"), input size and channels come from the metadata.
    """

    def __init__(self, model_dir_or_path: str):
        self.model, self.metadata = classifier_lib.load_classifier(model_dir_or_path)
        model_path, _ = classifier_lib.classifier_paths(model_dir_or_path)
        self.name = self.metadata["name"]
        self.image_size = int(self.metadata["image_size"])
        self.channels = int(self.metadata["channels"])
        self.test_accuracy = self.metadata.get("test_accuracy")
        self.fingerprint = _file_digest(model_path)
        self._predict = tf.function(lambda x: self.model(x, training=False),
                                    reduce_retracing=True)

    def __call__(self, images) -> tuple[np.ndarray, np.ndarray]:
        outputs = self._predict(prepare_images(images, self.image_size, channels=self.channels))
        return _to_numpy_pair(outputs["features"], outputs["logits"])


_KINDS = {
    "savedmodel": SavedModelFeatureNetwork,
    "keras_inception": KerasInceptionV3FeatureNetwork,
    "classifier": ClassifierFeatureNetwork,
}


def feature_network_spec(spec: str) -> tuple[str, str]:
    """(kind, path) of a "KIND:PATH" spec (a local path with ~ expanded); a ValueError names a spec that is not
    one. Loads nothing, so a caller can check a spec before its slow work."""
    kind, sep, path = str(spec).partition(":")
    if not sep or kind not in _KINDS or not path:
        raise ValueError(f"feature network spec must be KIND:PATH with KIND one of "
                         f"{sorted(_KINDS)}, got {spec!r}")
    return kind, path if files.is_uri(path) else os.path.expanduser(path)


def load_feature_network(spec: str):
    """Build a feature network from "savedmodel:/dir", "keras_inception:/file.h5" or "classifier:/path".

    A missing path raises FileNotFoundError explaining how to provide the network locally.
    """
    kind, path = feature_network_spec(spec)
    return _KINDS[kind](path)


# ----------------------------------------------------------------------------------------------
# Streaming images through a network
# ----------------------------------------------------------------------------------------------

def _images_of(element):
    """The image part of a dataset element: images, (images, labels, ...) or {"image(s)": ...}."""
    if isinstance(element, dict):
        for key in ("image", "images"):
            if key in element:
                return element[key]
        raise ValueError(f"dataset elements are dicts without an 'image' key: {sorted(element)}")
    if isinstance(element, (tuple, list)):
        return element[0]
    return element


def _image_batches(source, num: int, batch_size: int):
    """Yield image batches (rank 4) from an array/tensor, a tf.data.Dataset, a callable or an iterable."""
    if isinstance(source, tf.data.Dataset):
        dataset = source.map(lambda *e: _images_of(e[0] if len(e) == 1 else e))
        if dataset.element_spec.shape.rank == 3:
            dataset = dataset.batch(batch_size)
        yield from dataset.take(num)  # at most num batches are ever needed
    elif isinstance(source, (np.ndarray, tf.Tensor)):
        for start in range(0, min(num, source.shape[0]), batch_size):
            yield source[start:start + batch_size]
    elif callable(source):
        produced = 0
        while produced < num:
            batch = source(min(batch_size, num - produced))
            produced += int(batch.shape[0])
            yield batch
    else:
        for element in source:
            images = _images_of(element)
            yield images[None] if len(images.shape) == 3 else images


def iterate_features(network, source, num: int, batch_size: int = 64):
    """Yield (features, logits) numpy batches for exactly `num` images from `source`.

    `source` is an array or tensor [N, H, W, C]; a tf.data.Dataset of images or of
    (images, labels) / {"image": ...} elements, batched or not; any iterable of such batches;
    or a callable ``fn(n) -> n images`` (e.g. ``lambda n: generator(sample_noise(n))``).
    Images are float in [-1, 1]. Batches larger than `batch_size` are split. Raises ValueError
    if `source` runs out before `num` images.
    """
    if num < 1 or batch_size < 1:
        raise ValueError(f"num and batch_size must be >= 1, got {num} and {batch_size}")
    remaining = num
    for batch in _image_batches(source, num, batch_size):
        for start in range(0, int(batch.shape[0]), batch_size):
            if remaining == 0:
                return
            chunk = batch[start:start + min(batch_size, remaining)]
            features, logits = network(chunk)
            remaining -= features.shape[0]
            yield features, logits
        if remaining == 0:
            return
    if remaining:
        raise ValueError(f"the image source ran out after {num - remaining} of {num} images")


def compute_features(network, source, num: int, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Features [num, D] and logits [num, K] (float32) of `num` images from `source`.

    See :func:`iterate_features` for the accepted sources.
    """
    features, logits = zip(*iterate_features(network, source, num, batch_size))
    return np.concatenate(features), np.concatenate(logits)
