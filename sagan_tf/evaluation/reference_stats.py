"""Gaussian statistics (mu, sigma) of a real data set's features, cached on disk for FID.

Computing the reference statistics means pushing e.g. 50k training images through Inception,
which is the most expensive part of an FID evaluation and is identical for every checkpoint, so
it is done once and saved as an .npz file. The file records which network (name and weights
fingerprint), which data set and how many examples produced it, because statistics from a
different network silently give a meaningless FID: loading a mismatching cache raises
:class:`ReferenceStatsMismatchError` instead of recomputing over someone else's file.

The cache is read and written through `tf.io.gfile` (atomically), so it may sit beside a run in a
bucket (``gs://...``) as well as on local disk or under ``file:///...``.
"""
from __future__ import annotations

import logging
import re

import numpy as np

from sagan_tf.evaluation.features import iterate_features
from sagan_tf.evaluation.metrics import GaussianStatsAccumulator
from sagan_tf.run import files

__all__ = [
    "ReferenceStatsMismatchError",
    "compute_reference_stats",
    "load_or_compute_reference_stats",
    "reference_stats_filename",
    "save_reference_stats",
    "load_reference_stats",
]

FORMAT_VERSION = 1
_STRING_KEYS = ("network_name", "network_fingerprint", "dataset_name")


class ReferenceStatsMismatchError(ValueError):
    """A cached statistics file was computed with another network, data set or example count."""


def compute_reference_stats(network, dataset_iterable, num_examples: int,
                            batch_size: int = 64) -> dict:
    """Mean and covariance of `network`'s features over `num_examples` images.

    `dataset_iterable` is anything :func:`~sagan_tf.evaluation.features.iterate_features` accepts
    (e.g. a tf.data.Dataset of (images, labels) in [-1, 1]). Features are accumulated batch by
    batch, so memory does not grow with `num_examples`.

    Returns dict(mu [D] float64, sigma [D, D] float64, num, network_name, network_fingerprint).
    """
    accumulator = GaussianStatsAccumulator()
    for features, _ in iterate_features(network, dataset_iterable, num_examples, batch_size):
        accumulator.update(features)
    return {
        "mu": accumulator.mean,
        "sigma": accumulator.covariance,
        "num": int(accumulator.count),
        "network_name": network.name,
        "network_fingerprint": getattr(network, "fingerprint", ""),
    }


def reference_stats_filename(network_name: str, dataset_name: str, num_examples: int) -> str:
    """The cache file name used when `cache_path` is a directory, e.g.
    ``fashion_mnist__fashion_mnist_classifier__10000.npz``."""
    safe = lambda s: re.sub(r"[^A-Za-z0-9_.-]+", "-", str(s))  # noqa: E731
    return f"{safe(dataset_name)}__{safe(network_name)}__{int(num_examples)}.npz"


def save_reference_stats(path: str, stats: dict) -> None:
    """Write `stats` to `path` (local or a URI) atomically: a temporary file beside it, then a rename."""
    arrays = {
        "format_version": np.int64(FORMAT_VERSION),
        "mu": np.asarray(stats["mu"], dtype=np.float64),
        "sigma": np.asarray(stats["sigma"], dtype=np.float64),
        "num": np.int64(stats["num"]),
    }
    for key in _STRING_KEYS:
        arrays[key] = np.str_(stats.get(key) or "")
    files.atomic_save_npz(path, **arrays)


def load_reference_stats(path: str) -> dict:
    """Read a file written by :func:`save_reference_stats` (no pickles are loaded)."""
    data = files.load_npz(path)
    stats = {"mu": data["mu"], "sigma": data["sigma"], "num": int(data["num"])}
    for key in _STRING_KEYS:
        stats[key] = str(data[key])
    return stats


def _check_matches(path: str, cached: dict, expected: dict) -> None:
    if cached["network_name"] != expected["network_name"]:
        raise ReferenceStatsMismatchError(
            f"{path} was computed with feature network {cached['network_name']!r}, but the "
            f"current feature network is {expected['network_name']!r}; use another cache path "
            "or delete the file to recompute")
    fingerprints = cached["network_fingerprint"], expected["network_fingerprint"]
    if all(fingerprints) and fingerprints[0] != fingerprints[1]:
        raise ReferenceStatsMismatchError(
            f"{path} was computed with feature network {cached['network_name']!r} with weights "
            f"fingerprint {fingerprints[0]}, but the current {expected['network_name']!r} has "
            f"fingerprint {fingerprints[1]} (same name, different weights); delete the file to "
            "recompute")
    for key in ("dataset_name", "num"):
        if cached[key] != expected[key]:
            raise ReferenceStatsMismatchError(
                f"{path} holds statistics for {key}={cached[key]!r}, but {key}={expected[key]!r} "
                "was requested; use another cache path or delete the file to recompute")


def load_or_compute_reference_stats(cache_path: str, network, dataset_iterable,
                                    num_examples: int, dataset_name: str,
                                    batch_size: int = 64) -> dict:
    """Reference statistics from `cache_path` if present, else computed and saved there.

    `cache_path` is an .npz file, or an existing directory in which the file is named by
    :func:`reference_stats_filename` (network name + data set name + number of examples).
    Raises :class:`ReferenceStatsMismatchError` if the file was computed with a different network
    (name or weights fingerprint), data set or number of examples.

    Returns the dict of :func:`compute_reference_stats` plus ``dataset_name``.
    """
    if files.isdir(cache_path):
        cache_path = files.join(cache_path,
                                  reference_stats_filename(network.name, dataset_name, num_examples))
    expected = {
        "network_name": network.name,
        "network_fingerprint": getattr(network, "fingerprint", ""),
        "dataset_name": dataset_name,
        "num": int(num_examples),
    }
    if files.exists(cache_path):
        stats = load_reference_stats(cache_path)
        _check_matches(cache_path, stats, expected)
        logging.info("loaded reference statistics from %s", cache_path)
        return stats
    logging.info("computing reference statistics of %s (%d examples) with %s",
                 dataset_name, num_examples, network.name)
    stats = compute_reference_stats(network, dataset_iterable, num_examples, batch_size)
    stats["dataset_name"] = dataset_name
    save_reference_stats(cache_path, stats)
    return stats
