"""A small domain classifier used as the feature network where Inception-v3 does not fit.

FID/IS with an ImageNet Inception network are meaningless for 32x32 grey-scale Fashion-MNIST
(the images are upsampled 9x and are far from ImageNet), so for such data sets the project trains
its own small CNN and reports e.g. "FID (fashion_mnist_classifier)". Its penultimate `features`
layer plays the role of Inception's pool3 and its `logits` the role of Inception's logits.

Contract of the model built here (relied on by :class:`~sagan_tf.evaluation.features.ClassifierFeatureNetwork`):

* input: float32 images [N, image_size, image_size, channels] in [-1, 1] (the GAN's output range);
* output: one call returns a dict ``{"features": [N, feature_dim], "logits": [N, num_classes]}``.

On disk a classifier is two files side by side, ``<stem>.keras`` (Keras 3 native format, no
SavedModel) and ``<stem>.json`` with metadata (image_size, channels, num_classes, feature_dim,
test_accuracy, name, dataset_name). The metadata's ``name`` labels every metric computed with it.
Both are written atomically and read through `tf.io.gfile`, so a classifier may live in any filesystem
TensorFlow knows (a local directory, ``file:///...``, ``gs://...``, ``ram://...``); Keras itself saves to
and loads from a local scratch copy.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import time
from typing import Iterator

import keras
import numpy as np
import tensorflow as tf

from sagan_tf.run import files

__all__ = [
    "build_classifier",
    "train_classifier",
    "evaluate_classifier",
    "save_classifier",
    "load_classifier",
    "classifier_paths",
    "float32_policy",
]

METADATA_FORMAT_VERSION = 1
DEFAULT_STEM = "classifier"


@contextlib.contextmanager
def float32_policy() -> Iterator[None]:
    """Build Keras layers in float32 whatever the global (e.g. mixed_float16) training policy.

    Feature networks are measuring instruments: float16 activations would shift FID by more
    than the differences being measured. The previous global policy is restored on exit.
    """
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def build_classifier(image_size: int = 32, image_channels: int = 1, num_classes: int = 10,
                     width: int = 32, feature_dim: int = 128, dropout: float = 0.3,
                     name: str = "domain_classifier") -> keras.Model:
    """Build a VGG-style CNN: 3 stages of two conv3x3-BN-ReLU (width, 2x, 4x channels), max-pool
    between stages, global average pool, a ReLU `features` dense layer and a `logits` layer.

    For 32x32 inputs the last stage runs at 8x8. Dropout sits between features and logits only,
    so the features used for FID are deterministic at inference. Always built in float32 (see
    :func:`float32_policy`).
    """
    with float32_policy():
        return _build_classifier(image_size, image_channels, num_classes, width, feature_dim,
                                 dropout, name)


def _build_classifier(image_size, image_channels, num_classes, width, feature_dim, dropout, name):
    images = keras.Input(shape=(image_size, image_size, image_channels), name="images")
    x = images
    for stage, multiplier in enumerate((1, 2, 4)):
        if stage > 0:
            x = keras.layers.MaxPooling2D(2, name=f"pool{stage}")(x)
        for conv in range(2):
            prefix = f"stage{stage + 1}_conv{conv + 1}"
            x = keras.layers.Conv2D(width * multiplier, 3, padding="same", use_bias=False,
                                    name=prefix)(x)
            x = keras.layers.BatchNormalization(name=f"{prefix}_bn")(x)
            x = keras.layers.ReLU(name=f"{prefix}_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    features = keras.layers.Dense(feature_dim, activation="relu", name="features")(x)
    dropped = keras.layers.Dropout(dropout, name="dropout")(features)
    logits = keras.layers.Dense(num_classes, name="logits")(dropped)
    return keras.Model(images, {"features": features, "logits": logits}, name=name)


def _accuracy_counts(model, dataset) -> tuple[int, int]:
    @tf.function(reduce_retracing=True)
    def predict(images):
        return tf.argmax(model(images, training=False)["logits"], axis=-1, output_type=tf.int32)

    correct = total = 0
    for images, labels in dataset:
        predicted = predict(images).numpy()
        labels = np.asarray(labels).reshape(-1).astype(np.int32)
        correct += int(np.sum(predicted == labels))
        total += labels.shape[0]
    return correct, total


def evaluate_classifier(model: keras.Model, dataset: tf.data.Dataset) -> float:
    """Top-1 accuracy of `model` over a finite dataset of batched (images, integer labels)."""
    correct, total = _accuracy_counts(model, dataset)
    if total == 0:
        raise ValueError("the evaluation dataset is empty")
    return correct / total


def train_classifier(model: keras.Model, train_ds: tf.data.Dataset, val_ds: tf.data.Dataset,
                     steps: int, learning_rate: float = 1e-3, weight_decay: float = 1e-4,
                     log_every: int = 0, log_fn=print) -> float:
    """Train `model` for `steps` batches of `train_ds` and return its accuracy on `val_ds`.

    Args:
      model: from :func:`build_classifier` (any model with a dict output holding "logits").
      train_ds: batched (images float32 [-1, 1] NHWC, integer labels [B]); repeated as needed.
      val_ds: finite batched dataset of the same kind (the held-out test split).
      steps: number of optimizer steps.
      learning_rate: peak AdamW learning rate, cosine-decayed to 0 over `steps`.
      weight_decay: AdamW decoupled weight decay.
      log_every: if > 0, call `log_fn` with a progress line every that many steps.

    Returns:
      Top-1 accuracy on `val_ds` (stored by :func:`save_classifier` as ``test_accuracy``).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=weight_decay)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def train_step(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)["logits"]
            loss = loss_fn(labels, logits)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    start = time.time()
    for step, (images, labels) in enumerate(train_ds.repeat().take(steps), start=1):
        loss = train_step(images, labels)
        if log_every > 0 and (step % log_every == 0 or step == steps):
            log_fn(f"classifier step {step}/{steps} loss {float(loss):.4f} "
                   f"({time.time() - start:.0f}s)")
    return evaluate_classifier(model, val_ds)


def classifier_paths(path: str) -> tuple[str, str]:
    """(model .keras path, metadata .json path) for a classifier stored at `path`.

    `path` may be the .keras file, its .json file, or a directory holding
    ``classifier.keras`` and ``classifier.json``.
    """
    path = os.fspath(path)
    if path.endswith(".keras"):
        return path, path[: -len(".keras")] + ".json"
    if path.endswith(".json"):
        return path[: -len(".json")] + ".keras", path
    return files.join(path, DEFAULT_STEM + ".keras"), files.join(path, DEFAULT_STEM + ".json")


def _output_dims(model: keras.Model) -> tuple[int, int]:
    outputs = model.output
    if not isinstance(outputs, dict) or not {"features", "logits"} <= set(outputs):
        raise ValueError("the classifier must output a dict with 'features' and 'logits'")
    return int(outputs["features"].shape[-1]), int(outputs["logits"].shape[-1])


def save_classifier(model: keras.Model, path: str, test_accuracy: float | None = None,
                    dataset_name: str | None = None, name: str | None = None) -> tuple[str, str]:
    """Write `model` as a .keras file plus a .json of metadata; return both paths.

    The network's reported name defaults to ``"<dataset_name>_classifier"`` (e.g.
    "fashion_mnist_classifier"). `path` may be a URI (see the module docstring); its directory is
    created. Each file is written to a temporary name and renamed into place, so a crash never leaves
    a truncated model that later loads as garbage.
    """
    model_path, metadata_path = classifier_paths(path)
    _, height, width, channels = model.input.shape
    if height != width:
        raise ValueError(f"expected square inputs, got {height}x{width}")
    feature_dim, num_classes = _output_dims(model)
    metadata = {
        "format_version": METADATA_FORMAT_VERSION,
        "name": name or (f"{dataset_name}_classifier" if dataset_name else "domain_classifier"),
        "dataset_name": dataset_name,
        "image_size": int(height),
        "channels": int(channels),
        "num_classes": num_classes,
        "feature_dim": feature_dim,
        "test_accuracy": None if test_accuracy is None else float(test_accuracy),
        "input_range": [-1.0, 1.0],
        "keras_version": keras.__version__,
    }
    with tempfile.TemporaryDirectory(prefix="sagan-classifier-") as scratch:  # Keras writes local files only
        local_model = os.path.join(scratch, DEFAULT_STEM + ".keras")
        model.save(local_model)
        with open(local_model, "rb") as f:
            files.atomic_write_bytes(model_path, f.read())
    files.atomic_write_json(metadata_path, metadata, indent=2)
    return model_path, metadata_path


def load_classifier(path: str) -> tuple[keras.Model, dict]:
    """Load a classifier written by :func:`save_classifier`: returns (model, metadata)."""
    model_path, metadata_path = classifier_paths(path)
    missing = [p for p in (model_path, metadata_path) if not files.exists(p) or files.isdir(p)]
    if missing:
        raise FileNotFoundError(
            f"No trained classifier at {path!r} (missing {', '.join(missing)}). Nothing is "
            "downloaded at run time: train one with trainers/classifier.py (which calls "
            "sagan_tf.evaluation.classifier.train_classifier and save_classifier) and pass "
            "classifier:<the .keras file or its directory>.")
    metadata = files.read_json(metadata_path)
    local_model = files.local_path(model_path)
    if local_model is not None:
        model = keras.saving.load_model(local_model, compile=False)
    else:  # Keras opens local files only: load a scratch copy of the bytes
        with tempfile.TemporaryDirectory(prefix="sagan-classifier-") as scratch:
            local_model = os.path.join(scratch, DEFAULT_STEM + ".keras")
            with open(local_model, "wb") as f:
                f.write(files.read_bytes(model_path))
            model = keras.saving.load_model(local_model, compile=False)
    feature_dim, num_classes = _output_dims(model)
    if num_classes != metadata["num_classes"] or model.input.shape[-1] != metadata["channels"]:
        raise ValueError(f"{model_path} does not match its metadata {metadata_path}")
    return model, metadata
