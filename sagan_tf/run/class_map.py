"""The class-name → label map of a run (``classes.json``), so a class can be asked for by name.

A run trained on an image folder records its class names in ``config.json`` (``class_names``: label
``i`` is ``class_names[i]``) and writes ``<model_dir>/classes.json``; an export of such a run carries
the same file in ``<version>/assets.extra/classes.json``. The file is one JSON object from name to
label::

    {"ankle_boot": 0, "bag": 1, "coat": 2}

Unconditional runs (``num_classes=0``) and datasets without names have no such file.
This module only reads and writes JSON, through `tf.io.gfile` (`sagan_tf.run.files`), so the run or export
may be local, ``file:///...`` or ``gs://...``; it imports no training code.
"""
from __future__ import annotations

import json
from typing import Sequence

import tensorflow as tf

from sagan_tf.run import files
from sagan_tf.run.run_dir import CLASS_MAP_FILE, class_map_file

#: Where an export keeps it, relative to the SavedModel version directory.
EXPORT_CLASS_MAP = "assets.extra/" + CLASS_MAP_FILE


def class_map_json(class_names: Sequence[str]) -> bytes:
    """The ``classes.json`` bytes for `class_names` (label i = class_names[i])."""
    return (json.dumps({str(name): label for label, name in enumerate(class_names)}, indent=2,
                       ensure_ascii=False) + "\n").encode("utf-8")


def write_class_map(directory: str, class_names: Sequence[str]) -> str:
    """Writes ``<directory>/classes.json`` atomically; returns its path."""
    path = files.join(directory, CLASS_MAP_FILE)
    files.atomic_write_bytes(path, class_map_json(class_names))
    return path


def find_class_map(location: str) -> str | None:
    """The ``classes.json`` that `location` names or holds: the file itself, ``<dir>/classes.json`` (a run
    directory) or ``<dir>/assets.extra/classes.json`` (an exported SavedModel version); None if none."""
    if _is_file(location):
        return location
    for candidate in (files.join(location, CLASS_MAP_FILE), files.join(location, EXPORT_CLASS_MAP)):
        if _is_file(candidate):
            return candidate
    return None


def _is_file(path: str) -> bool:
    return files.exists(path) and not files.isdir(path)


def read_class_map(path: str) -> list[str]:
    """The class names of a ``classes.json``, ordered by label.

    Raises:
      ValueError: the file is not a JSON object whose labels are exactly 0 .. n-1 (the message names it).
    """
    try:
        mapping = files.read_json(path)
    except (OSError, tf.errors.OpError, ValueError) as error:
        raise ValueError(f"cannot read the class map {path}: {error}") from error
    if not isinstance(mapping, dict) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                for v in mapping.values()):
        raise ValueError(f"class map {path} must be a JSON object from class name to integer label, "
                         'e.g. {"cats": 0, "dogs": 1}')
    if sorted(mapping.values()) != list(range(len(mapping))):
        raise ValueError(f"class map {path}: labels must be 0..{len(mapping) - 1}, each once; "
                         f"got {sorted(mapping.values())}")
    return sorted(mapping, key=mapping.get)


def run_class_names(model_dir: str, config=None) -> list[str]:
    """The class names of the training run in `model_dir`: its ``classes.json``, else ``config.class_names``
    (from config.json); [] when the run recorded none."""
    path = class_map_file(model_dir)
    if _is_file(path):
        return read_class_map(path)
    names = config.get("class_names") if config is not None else None
    return [str(name) for name in names or ()]


def describe_labels(labels: Sequence[int] | None, class_names: Sequence[str], limit: int = 20) -> str:
    """``"labels: 0=cats, 1=dogs"`` for `labels` (None: every class), the first `limit` of them."""
    shown = list(labels if labels is not None else range(len(class_names)))
    return ("labels: " + ", ".join(f"{label}={class_names[label]}" for label in shown[:limit])
            + (", ..." if len(shown) > limit else ""))


def labels_for_names(names: Sequence[str], class_names: Sequence[str], source: str = "the class map") -> list[int]:
    """The label of each name in `names`.

    Raises:
      ValueError: a name is not in `class_names`, or there are no class names at all; the message names
        the unknown names and lists the known ones.
    """
    if not class_names:
        raise ValueError(f"{source} has no class names (an unconditional run, or a dataset without names): "
                         "ask for classes by --labels instead")
    index = {name: label for label, name in enumerate(class_names)}
    unknown = [name for name in names if name not in index]
    if unknown:
        shown = ", ".join(class_names[:50]) + (f", ... ({len(class_names)} in all)" if len(class_names) > 50 else "")
        raise ValueError(f"unknown class name(s) {unknown} in {source}; known: {shown}")
    return [index[name] for name in names]
