"""Where a generator to sample from comes from: a training run's EMA checkpoint, or an exported SavedModel.

    loaded = load_generator(model_dir="runs/fmnist")            # the latest checkpoint's EMA generator
    loaded = load_generator(saved_model="export/1")             # the serving graph, as a sample function
    sheet = sampling.class_sheet(loaded.generator, [0, 7], 8, loaded.z_dim, loaded.num_classes)

A run's generator is the Keras Generator restored in float32 (`run_dir.load_ema_generator`). An export is
sampled through its ``serving_default`` signature (`exported.ExportedGenerator`), unless its batch-norm
statistics are to be recomputed for a truncation: then an export written by `export.saved_model` is
rebuilt as its Keras generator (`exported.keras_generator`), which `standing_statistics` can work on.
"""
from __future__ import annotations

import dataclasses

import ml_collections

from sagan_tf.run import class_map, run_dir
from sagan_tf.sampling.exported import ExportedGenerator, keras_generator, read_class_names, read_info
from sagan_tf.sampling.sheets import check_labels

__all__ = ["LoadedGenerator", "load_generator", "class_names"]


@dataclasses.dataclass(frozen=True)
class LoadedGenerator:
    """What :func:`load_generator` gives: the generator (a Keras Generator, or a sample function
    ``fn(z, labels)`` over a SavedModel), its noise width and class count, and where it came from (the
    checkpoint or SavedModel; the run's step and config, both None for an export)."""
    generator: object
    z_dim: int
    num_classes: int
    step: int | None
    config: ml_collections.ConfigDict | None
    source: str


def _one_source(model_dir, saved_model):
    if bool(model_dir) == bool(saved_model):
        raise ValueError(f"pass exactly one of model_dir and saved_model, got {model_dir!r} and {saved_model!r}")


def load_generator(*, model_dir: str | None = None, checkpoint: str | None = None, saved_model: str | None = None,
                   num_classes: int | None = None, labels=None, truncated: bool = False,
                   recompute_statistics: bool = True, log=print) -> LoadedGenerator:
    """The generator of a run (`model_dir`, from `checkpoint` or its latest) or of an export (`saved_model`).

    `truncated` and `recompute_statistics`: the caller samples truncated z with batch-norm statistics
    recomputed for it, so an export written by `export.saved_model` is rebuilt as its Keras generator; an
    export that cannot be (it records no model fields), or with `recompute_statistics` False, is sampled as
    served, and `log` says so. An export that records no class count has `num_classes`, else as many as
    `labels` (the ones asked for) need; `labels` must be classes of the generator.

    Raises:
      ValueError: both sources or none; an export's class count unknown (no `num_classes`, no `labels`); a
        label outside the generator's classes;
        `sagan_tf.run.run_dir.RunDirError` or
        `sagan_tf.sampling.exported.NotAnExportError` (both ValueErrors) naming what is missing.
    """
    loaded = _load(model_dir, checkpoint, saved_model, num_classes, labels, truncated, recompute_statistics, log)
    if labels is not None:
        check_labels(labels, loaded.num_classes)
    return loaded


def _load(model_dir, checkpoint, saved_model, num_classes, labels, truncated, recompute_statistics, log):
    _one_source(model_dir, saved_model)
    if model_dir:
        restored = run_dir.load_ema_generator(model_dir, checkpoint)
        log(f"sampling the EMA generator of {restored.checkpoint}")
        config = restored.config
        return LoadedGenerator(restored.generator, int(config.z_dim), int(config.num_classes), restored.step,
                               config, restored.checkpoint)
    if truncated and recompute_statistics and read_info(saved_model).get("model"):
        generator = keras_generator(saved_model)
        log(f"sampling the generator of {saved_model}, its batch-norm statistics recomputed for the truncation")
        return LoadedGenerator(generator, int(generator.spec["z_dim"]), int(generator.spec["num_classes"]), None,
                               None, saved_model)
    if truncated:
        why = "it records no model fields to rebuild it from" if recompute_statistics else "as asked"
        log(f"note: {saved_model} samples truncated z with the batch-norm statistics it was exported with ({why})")
    generator = ExportedGenerator(saved_model, num_classes)
    classes = generator.num_classes
    if classes is None and not labels:
        raise ValueError(f"{saved_model} does not record its number of classes: pass num_classes or labels")
    classes = max(labels) + 1 if classes is None else classes
    return LoadedGenerator(generator, generator.z_dim, classes, None, None, saved_model)


def class_names(*, model_dir: str | None = None, saved_model: str | None = None) -> list[str]:
    """The class names of a run (its classes.json, else config.json's class_names) or of an export (its
    ``assets.extra/classes.json``); [] when there are none. Reads no network, so a wrong name fails at once.

    Raises:
      ValueError: both sources or none, a run or export that cannot be read, a malformed classes.json.
    """
    _one_source(model_dir, saved_model)
    if model_dir:
        return class_map.run_class_names(model_dir, run_dir.read_config(model_dir))
    return read_class_names(saved_model)
