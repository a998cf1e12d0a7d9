"""One call that scores a generator: FID, IS, KID, precision/recall and conditional accuracy.

    reference = load_or_compute_reference(cache, network, real_images, num_real, "fashion_mnist_test")
    metrics = evaluate_generator(G, network, reference, num_samples=10000, batch_size=100, num_classes=10)
    # {"fid/fashion_mnist_classifier": 12.3, "is/fashion_mnist_classifier": 7.9, ...}

Every key is ``"<metric>/<network.name>"`` (see :func:`metric_key`): an FID under one feature network
is not comparable with another's, so a number never travels without the name of what measured it.

The reference (real data) side is a dict with ``mu`` and ``sigma`` (Gaussian statistics, for FID)
and optionally ``features`` (a sample of real features [M, D], for KID and precision/recall, which
need points rather than moments) and ``network_name`` (checked against the network).
:func:`load_or_compute_reference` builds one, cached on disk: the statistics in the format of
:mod:`.reference_stats` and the feature sample in a second .npz beside it.
"""
from __future__ import annotations

import logging

import numpy as np

from sagan_tf.data.real_images import default_reference_split, real_image_source
from sagan_tf.evaluation import metrics as metrics_lib
from sagan_tf.evaluation.features import iterate_features
from sagan_tf.evaluation.reference_stats import (ReferenceStatsMismatchError, load_or_compute_reference_stats,
                                                 reference_stats_filename, save_reference_stats)
from sagan_tf.run import files, run_dir
from sagan_tf.run.files import atomic_save_npz
from sagan_tf.sampling.noise import sample_noise
from sagan_tf.sampling.sheets import truncated_sample_fn

__all__ = [
    "METRICS",
    "LOWER_IS_BETTER",
    "metric_key",
    "split_metric_key",
    "network_classes_match",
    "evaluate_generator",
    "load_or_compute_reference",
    "format_table",
    "run_reference",
]

#: Metric names, in the order tables list them.
METRICS = ("fid", "is", "is_std", "kid", "kid_std", "precision", "recall", "conditional_accuracy")
LOWER_IS_BETTER = ("fid", "kid")


def metric_key(metric: str, network_name: str) -> str:
    """The dict key / TensorBoard tag of `metric` measured with `network_name`: ``"fid/<name>"``."""
    return f"{metric}/{network_name}"


def split_metric_key(key: str) -> tuple[str, str]:
    """Inverse of :func:`metric_key`: ``"fid/inception_v3_pool3"`` -> ("fid", "inception_v3_pool3")."""
    metric, sep, network = key.partition("/")
    if not sep:
        raise ValueError(f"{key!r} is not a '<metric>/<network name>' key")
    return metric, network


def _network_dataset(network):
    return getattr(network, "dataset_name", None) or (getattr(network, "metadata", None) or {}).get("dataset_name")


def network_classes_match(network, num_logits: int, num_classes: int, dataset_name: str | None = None) -> bool:
    """Whether the network's logits can be read as the generator's classes.

    They must be as many (and the generator conditional), and if both the network and the caller
    name a data set (a classifier's metadata does), the names must agree: a 10-way Fashion-MNIST
    classifier says nothing about CIFAR-10 labels.
    """
    if num_classes < 1 or num_logits != num_classes:
        return False
    trained_on = _network_dataset(network)
    return not (trained_on and dataset_name and trained_on != dataset_name)


def evaluate_generator(generator, feature_network, reference: dict, num_samples: int, batch_size: int,
                       num_classes: int, *, z_dim: int | None = None, truncation=None, seed: int = 0,
                       dataset_name: str | None = None, is_splits: int = 10, kid_subsets: int = 100,
                       kid_subset_size: int = 1000, pr_k: int = 3) -> dict:
    """Score `num_samples` generated images against the real-data `reference`.

    Args:
      generator: a Keras Generator (called with training=False) or a callable ``fn(z, labels)``
        returning float images in [-1, 1]; then `z_dim` must be given.
      feature_network: see :mod:`.features` (``name``, ``__call__(images) -> (features, logits)``).
      reference: dict with ``mu``, ``sigma`` and optionally ``features`` and ``network_name``.
      num_samples, batch_size: how many images, generated and measured how many at a time.
      num_classes: the generator's classes; labels are drawn uniformly from them (0 = unconditional).
      truncation: optional truncation of z (see :mod:`sagan_tf.sampling`); None = plain N(0, 1). A Keras
        generator is sampled with batch-norm statistics recomputed for it (`sampling.truncated_sample_fn`);
        pass ``sampling.as_sample_fn(generator)`` to keep the stored ones.
      seed: seeds noise and labels, so two evaluations of the same weights agree exactly.
      dataset_name: the generator's data set, compared with the network's (see
        :func:`network_classes_match`) before reporting conditional accuracy.

    Returns:
      ``{metric_key(m, feature_network.name): float}`` for m in :data:`METRICS`: ``fid``;
      ``is``/``is_std`` (from the logits, 10 splits or fewer if num_samples is small); ``kid``/
      ``kid_std`` and ``precision``/``recall`` when the reference has ``features``;
      ``conditional_accuracy`` (share of samples whose argmax logit is the label they were
      generated for) when the network's classes match the generator's.
    """
    name = feature_network.name
    if reference.get("network_name") and reference["network_name"] != name:
        raise ReferenceStatsMismatchError(
            f"the reference was computed with feature network {reference['network_name']!r} but the samples "
            f"are measured with {name!r}")
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2, got {num_samples}")
    if z_dim is None:
        spec = getattr(generator, "spec", None)
        if spec is None:
            raise ValueError("z_dim is required when the generator is not a Keras Generator")
        z_dim = spec["z_dim"]
    rng = np.random.default_rng(seed)

    features, logits, labels = [], [], []
    accumulator = metrics_lib.GaussianStatsAccumulator()
    with truncated_sample_fn(generator, truncation) as sample_fn:
        for start in range(0, num_samples, batch_size):
            n = min(batch_size, num_samples - start)
            batch_labels = rng.integers(0, max(num_classes, 1), n).astype(np.int32)
            images = sample_fn(sample_noise(n, z_dim, truncation, rng), batch_labels)
            batch_features, batch_logits = feature_network(images)
            accumulator.update(batch_features)
            features.append(batch_features)
            logits.append(batch_logits)
            labels.append(batch_labels)
    features, logits, labels = np.concatenate(features), np.concatenate(logits), np.concatenate(labels)

    results = {"fid": metrics_lib.frechet_distance_from_stats(accumulator.mean, accumulator.covariance,
                                                              reference["mu"], reference["sigma"])}
    results["is"], results["is_std"] = metrics_lib.inception_score(logits, splits=min(is_splits, num_samples))
    real = reference.get("features")
    if real is not None:
        results["kid"], results["kid_std"] = metrics_lib.kernel_inception_distance(
            features, real, num_subsets=kid_subsets, subset_size=kid_subset_size, seed=seed)
        k = min(pr_k, len(real) - 1, num_samples - 1)
        results["precision"], results["recall"] = metrics_lib.precision_recall(real, features, k=k)
    if network_classes_match(feature_network, logits.shape[1], num_classes, dataset_name):
        results["conditional_accuracy"] = float(np.mean(np.argmax(logits, axis=1) == labels))
    return {metric_key(metric, name): float(value) for metric, value in results.items()}


# ----------------------------------------------------------------------------------------------
# Reference (real data) side, cached
# ----------------------------------------------------------------------------------------------

def _features_path(stats_path: str, num_features: int) -> str:
    stem = stats_path[:-len(".npz")] if stats_path.endswith(".npz") else stats_path
    return f"{stem}.features{int(num_features)}.npz"


def _load_features(path: str, network, dataset_name: str, num_features: int) -> np.ndarray:
    data = files.load_npz(path)
    cached = {key: str(data[key]) for key in ("network_name", "network_fingerprint", "dataset_name")}
    features = data["features"]
    expected = {"network_name": network.name, "network_fingerprint": getattr(network, "fingerprint", ""),
                "dataset_name": dataset_name}
    for key, value in expected.items():
        if key == "network_fingerprint" and not (value and cached[key]):
            continue
        if cached[key] != value:
            raise ReferenceStatsMismatchError(
                f"{path} holds features for {key}={cached[key]!r}, but {key}={value!r} was requested; use "
                "another cache path or delete the file to recompute")
    if features.shape[0] != num_features:
        raise ReferenceStatsMismatchError(f"{path} holds {features.shape[0]} features, expected {num_features}")
    return features


def load_or_compute_reference(cache_path: str | None, network, real_source, num_examples: int, dataset_name: str,
                              num_features: int = 0, batch_size: int = 64) -> dict:
    """Reference statistics of `num_examples` real images and the features of the first `num_features`.

    `cache_path` is an .npz file or a directory (the stats file is then named by
    :func:`~sagan_tf.evaluation.reference_stats.reference_stats_filename`), or None for no cache.
    The statistics file is the one :func:`~sagan_tf.evaluation.reference_stats.load_or_compute_reference_stats`
    reads and checks (network name and fingerprint, data set, count); the features go to
    ``<stats file stem>.features<num_features>.npz``. Whatever is missing is computed in a single
    pass over `real_source` (anything :func:`~sagan_tf.evaluation.features.iterate_features`
    accepts; an infinite pipeline is fine) and saved.

    Returns dict(mu, sigma, num, network_name, network_fingerprint, dataset_name[, features]).
    """
    num_features = min(int(num_features), int(num_examples))
    stats_path = features_path = None
    if cache_path is not None:
        stats_path = cache_path
        if files.isdir(cache_path) or not cache_path.endswith(".npz"):
            files.makedirs(cache_path)
            stats_path = files.join(cache_path, reference_stats_filename(network.name, dataset_name, num_examples))
        features_path = _features_path(stats_path, num_features)

    stats = features = None
    if stats_path and files.exists(stats_path):
        # Loads and checks the cached file; never computes since the file exists.
        stats = load_or_compute_reference_stats(stats_path, network, None, num_examples, dataset_name, batch_size)
    if num_features and features_path and files.exists(features_path):
        features = _load_features(features_path, network, dataset_name, num_features)
    need_stats, need_features = stats is None, bool(num_features) and features is None

    if need_stats or need_features:
        logging.info("computing reference %s of %s with %s", "statistics" if need_stats else "features",
                     dataset_name, network.name)
        accumulator = metrics_lib.GaussianStatsAccumulator()
        kept, have = [], 0
        total = num_examples if need_stats else num_features
        for batch, _ in iterate_features(network, real_source, total, batch_size):
            if need_stats:
                accumulator.update(batch)
            if need_features and have < num_features:
                kept.append(batch[:num_features - have])
                have += kept[-1].shape[0]
        if need_stats:
            stats = {"mu": accumulator.mean, "sigma": accumulator.covariance, "num": int(accumulator.count),
                     "network_name": network.name, "network_fingerprint": getattr(network, "fingerprint", ""),
                     "dataset_name": dataset_name}
            if stats_path:
                save_reference_stats(stats_path, stats)
        if need_features:
            features = np.concatenate(kept).astype(np.float32)
            if features_path:
                atomic_save_npz(features_path, features=features, network_name=np.str_(network.name),
                                 network_fingerprint=np.str_(getattr(network, "fingerprint", "") or ""),
                                 dataset_name=np.str_(dataset_name))
    reference = dict(stats)
    reference["dataset_name"] = dataset_name
    if num_features:
        reference["features"] = features
    return reference


def format_table(metrics: dict) -> str:
    """A plain-text table with columns metric, value, network (rows in :data:`METRICS` order)."""
    order = {metric: i for i, metric in enumerate(METRICS)}
    rows = sorted((split_metric_key(key) + (value,) for key, value in metrics.items()),
                  key=lambda row: (order.get(row[0], len(order)), row[0]))
    lines = [("metric", "value", "network")] + [(metric, f"{value:.6g}", network) for metric, network, value in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(3)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines)


# ----------------------------------------------------------------------------------------------
# The reference of a run's config
# ----------------------------------------------------------------------------------------------

def run_reference(config, network, model_dir: str, num_reference: int, num_features: int, batch_size: int, *,
                  split: str | None = None, cache: str | None = None, data_dir: str | None = None,
                  log_fn=print) -> tuple[dict, str, int]:
    """(reference statistics, reference name, real images used): what a run's samples are scored against,
    for the evaluate CLI and the evaluation during training alike.

    `split` None: :func:`default_reference_split`. `cache` None: ``<model_dir>/reference_stats``.
    `num_reference` is capped at the split's size (:func:`sagan_tf.data.split_size`: the idx files' split,
    the readable images of an image folder, the records of a TFDS split or slice), said through `log_fn`:
    the pipelines repeat forever, so a larger request would count real images several times (each real
    point's nearest neighbours its own copies: precision near 0, KID biased up). `num_features` (real
    features kept for KID and precision/recall) is capped at `num_reference`.

    Raises:
      sagan_tf.data.real_images.ReferenceSplitError: the split cannot be read (unknown split, missing files).
    """
    split = split or default_reference_split(config.dataset)
    real, name, size = real_image_source(config, split, batch_size, data_dir)
    if num_reference > size:
        log_fn(f"{num_reference} real images asked for, but {name} has {size}; using {size}")
        num_reference = size
    reference = load_or_compute_reference(cache or run_dir.reference_cache(model_dir), network, real, num_reference,
                                          name, num_features=min(num_features, num_reference), batch_size=batch_size)
    return reference, name, num_reference


