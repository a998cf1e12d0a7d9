"""Reading an export back: which version a path names, what it recorded, and its generator as a sample function.

The consumers of an export (the gRPC server, `trainers.sample --saved_model`, `sampling.load_generator`,
tests) read it here, so its layout is known in two places only: `export.saved_model` writes it, this
module reads it. Any path may be a URI (all reads go through `sagan_tf.run.files`).
"""
from __future__ import annotations

import re

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from sagan_tf.models import Generator
from sagan_tf.run import class_map, files

SAVED_MODEL_FILE = "saved_model.pb"
#: The SavedModel's extra assets (export.serving_config writes its warmup requests there too).
ASSETS_EXTRA = "assets.extra"
INFO_FILE = "sagan_export.json"
DEFAULT_SIGNATURE = "serving_default"


class NotAnExportError(ValueError):
    """A path that holds no usable export; the message names it."""


def is_saved_model(path: str) -> bool:
    return files.exists(files.join(path, SAVED_MODEL_FILE))


def resolve_saved_model(path: str) -> tuple[str, int | None]:
    """(version directory, version or None) for a SavedModel directory or an export base (its highest
    numeric version, as TF-Serving's default version policy serves)."""
    path = files.absolute(path)
    if is_saved_model(path):
        name = path.rstrip("/").rsplit("/", 1)[-1]
        return path, int(name) if re.fullmatch(r"\d+", name) else None
    versions = sorted(int(name) for name in (files.listdir(path) if files.isdir(path) else [])
                      if re.fullmatch(r"\d+", name) and is_saved_model(files.join(path, name)))
    if not versions:
        raise NotAnExportError(f"{path!r} is neither a SavedModel directory nor an export base with numeric "
                               f"version directories holding {SAVED_MODEL_FILE}.")
    return files.join(path, str(versions[-1])), versions[-1]


def info_file(saved_model_dir: str) -> str:
    return files.join(saved_model_dir, ASSETS_EXTRA, INFO_FILE)


def read_info(saved_model_dir: str) -> dict:
    """What `export.saved_model` recorded in ``assets.extra/sagan_export.json``; {} for another SavedModel."""
    path = info_file(saved_model_dir)
    if not files.exists(path):
        return {}
    try:
        info = files.read_json(path)
    except (ValueError, tf.errors.OpError) as error:
        raise NotAnExportError(f"cannot read {path!r}: {error}") from error
    return info if isinstance(info, dict) else {}


def read_max_batch(saved_model_dir: str, default: int) -> int:
    """The export's max_batch (its recorded limits), or `default` if it records none."""
    try:
        return int(read_info(saved_model_dir)["limits"]["max_batch"])
    except (NotAnExportError, KeyError, TypeError, ValueError):
        return default


def read_num_classes(saved_model_dir: str) -> int | None:
    """The generator's class count as the export recorded it (the model fields), or None."""
    model = read_info(saved_model_dir).get("model") or {}
    return int(model["num_classes"]) if "num_classes" in model else None


def read_class_names(saved_model_dir: str) -> list[str]:
    """The class names of ``assets.extra/classes.json``; [] when the export has none."""
    path = class_map.find_class_map(files.join(saved_model_dir, class_map.EXPORT_CLASS_MAP))
    return class_map.read_class_map(path) if path else []


def read_signature_defs(saved_model_dir: str) -> dict:
    """{name: SignatureDef} of the 'serve' MetaGraph, read from saved_model.pb as TF-Serving does."""
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString(files.read_bytes(files.join(saved_model_dir, SAVED_MODEL_FILE)))
    for meta_graph in saved_model.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            return {name: meta_graph.signature_def[name] for name in meta_graph.signature_def
                    if not name.startswith("__")}
    raise NotAnExportError(f"{saved_model_dir!r} has no MetaGraph tagged 'serve'")


class ExportedGenerator:
    """``fn(z, labels) -> images`` over a SavedModel's serving_default signature, with its z_dim and num_classes.

    Any SavedModel whose ``serving_default`` takes ``z`` float32 [-1, z_dim] and ``label`` int32 [-1] and
    returns ``images`` float32 [-1, H, W, C] works; its class count comes from `num_classes`, else from
    what `export.saved_model` recorded, else None.
    """

    def __init__(self, path: str, num_classes: int | None = None):
        if not is_saved_model(path):
            raise NotAnExportError(f"{path!r} holds no {SAVED_MODEL_FILE}")
        self._loaded = tf.saved_model.load(path)
        if DEFAULT_SIGNATURE not in self._loaded.signatures:
            raise NotAnExportError(f"{path!r} has no {DEFAULT_SIGNATURE} signature (it has "
                                   f"{list(self._loaded.signatures)})")
        self._fn = self._loaded.signatures[DEFAULT_SIGNATURE]
        _, inputs = self._fn.structured_input_signature
        if set(inputs) != {"z", "label"}:
            raise NotAnExportError(f"{path!r}: {DEFAULT_SIGNATURE} takes {sorted(inputs)}, expected z and label")
        self.z_dim = int(inputs["z"].shape[-1])
        self.num_classes = num_classes if num_classes is not None else read_num_classes(path)

    def __call__(self, z, labels) -> np.ndarray:
        return self._fn(z=tf.constant(z, tf.float32), label=tf.constant(labels, tf.int32))["images"].numpy()


def keras_generator(path: str) -> Generator:
    """The Keras Generator of an export written by `export.saved_model`: built from the model fields it
    recorded, holding the exported variables (weights, batch-norm statistics, spectral-norm u vectors).

    For what the serving graph cannot do, such as recomputing the batch-norm statistics for a truncation
    (`sagan_tf.sampling.standing_statistics`); `ExportedGenerator` is the graph as served.
    """
    if not is_saved_model(path):
        raise NotAnExportError(f"{path!r} holds no {SAVED_MODEL_FILE}")
    model = read_info(path).get("model")
    if not isinstance(model, dict):
        raise NotAnExportError(f"{path!r} records no model fields in {INFO_FILE}: it was not written by "
                               f"export.saved_model, so its generator cannot be rebuilt")
    generator = Generator(model, dtype="float32")
    generator.build()
    loaded = tf.saved_model.load(path)
    # The exported names start with the exported model's name (ema_generator/...), the rebuilt ones with
    # this one's; the rest of the path is the layer structure.
    exported = {variable.name.split("/", 1)[-1].rsplit(":", 1)[0]: variable
                for variable in loaded.signatures[DEFAULT_SIGNATURE].variables}
    for variable in generator.variables:
        name = variable.path.split("/", 1)[-1]
        source = exported.pop(name, None)
        if source is None or tuple(source.shape) != tuple(variable.shape):
            raise NotAnExportError(f"{path!r}: the exported variables do not fit the generator its {INFO_FILE} "
                                   f"describes ({name}: {None if source is None else tuple(source.shape)} exported, "
                                   f"{tuple(variable.shape)} expected)")
        variable.assign(source)
    if exported:
        raise NotAnExportError(f"{path!r}: exported variables the described generator lacks: {sorted(exported)[:5]}")
    return generator

