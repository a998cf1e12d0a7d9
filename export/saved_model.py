"""Export the EMA generator of a training run as a TF-Serving SavedModel.

    python -m export.saved_model --model_dir=runs/fmnist --export_base=runs/fmnist/export \
        [--version=N] [--checkpoint=runs/fmnist/checkpoints/ckpt-600] [--model_name=sagan] [--max_batch=256] \
        [--serving_base_path=/models/sagan] [--compute_dtype=bfloat16] [--statistics_truncation=T]

Reads ``<model_dir>/config.json`` and the latest checkpoint in ``<model_dir>/checkpoints/`` (or
``--checkpoint``: a checkpoint prefix or a directory), restores only the EMA generator, built in
float32 whatever precision it was trained in (``--compute_dtype=bfloat16``: bfloat16 compute with
float32 weights, inputs and images, for serving hardware with bfloat16 units), and writes

``--statistics_truncation=t`` exports batch-norm statistics recomputed for z truncated to [-t, t]
(`sagan_tf.sampling.standing_statistics`) instead of the stored ones (those of untruncated z): for a server whose
clients sample with that truncation (`generate` with truncation t); other truncations then sample with
statistics that are not their own. ``sagan_export.json`` records it (``statistics_truncation``), and where
the export came from without the training machine's paths: ``run`` (the run directory's name),
``checkpoint`` (relative to it) and ``step``.

    <export_base>/<version>/                       the SavedModel (signatures: see export.signatures)
    <export_base>/<version>/assets.extra/          tf_serving_warmup_requests, sagan_export.json,
                                                   classes.json (the class name -> label map, when the
                                                   run has class names: see sagan_tf.run.class_map)
    <export_base>/models.config                    TF-Serving model_config_list (see export.serving_config)
    <export_base>/batching_parameters.txt          TF-Serving batching parameters

``version`` defaults to one more than the largest existing numeric version (1 for a new base). The
version directory appears atomically: everything is written into ``<export_base>/.tmp-export-*`` (a
name TF-Serving's version polling ignores, since it is not a number) and renamed into place at the
end, so a polling server never sees a half-written model. A failed export removes its temp dir; one that
cannot be written (a full disk) raises an OSError naming the version directory and leaves the versions
already there, and the serving files, as they were (the CLI prints it and exits 1).

Every path may be a URI TensorFlow's filesystems know (``gs://``, ``file://``): all I/O goes through
``tf.io.gfile``. On an object store the final rename copies objects, so point TF-Serving at the
bucket only after the export returns (or export locally and copy the version directory).
"""
import math
import os
import posixpath
import re
import sys
import time
import uuid

import tensorflow as tf
from absl import app, flags

from export import serving_config
from sagan_tf.sampling.exported import SAVED_MODEL_FILE
from export.signatures import GeneratorServing
from sagan_tf.run import class_map, files, run_dir
from sagan_tf.run.run_dir import RunDirError
from sagan_tf.sampling.standing_statistics import truncation_statistics

INFO_FILE = "sagan_export.json"
TEMP_PREFIX = ".tmp-export-"
# The generator's compute dtype in the graph -> its Keras dtype policy. Inputs and outputs stay float32.
COMPUTE_DTYPES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}


class ExportError(ValueError):
    """A bad export request (an existing version, class names that do not fit); the message names the value.

    Problems with the run directory itself (no config.json, no or a damaged checkpoint) are
    :class:`sagan_tf.run.run_dir.RunDirError`s.
    """


def existing_versions(export_base):
    """Numeric version directories under `export_base`, ascending (what TF-Serving would load)."""
    if not files.isdir(export_base):
        return []
    return sorted(int(name) for name in files.listdir(export_base)
                  if re.fullmatch(r"\d+", name) and files.isdir(files.join(export_base, name)))


def next_version(export_base):
    versions = existing_versions(export_base)
    return versions[-1] + 1 if versions else 1


def export_generator(generator, export_base, version=None, model_name="sagan", max_batch=256,
                     serving_base_path=None, info=None, batching=None, class_names=None):
    """Writes `generator` (a built Keras Generator) as ``<export_base>/<version>`` atomically.

    Returns the version directory. `info` is merged into ``assets.extra/sagan_export.json``;
    `batching` overrides entries of ``serving_config.DEFAULT_BATCHING``; `class_names` (label i =
    class_names[i]) are written to ``assets.extra/classes.json`` for clients that ask by name.
    """
    export_base = files.absolute(export_base)
    files.makedirs(export_base)
    if version is None:
        version = next_version(export_base)
    elif int(version) < 0:
        raise ExportError(f"--version={version} must be a non-negative integer.")
    version = int(version)
    target = files.join(export_base, str(version))
    if files.exists(target):
        raise ExportError(f"export version directory {target!r} already exists; pass another --version "
                          f"(next free: {next_version(export_base)}) or remove it.")
    serving = GeneratorServing(generator, max_batch=max_batch)
    if class_names and len(class_names) != serving.num_classes:
        raise ExportError(f"{len(class_names)} class names for a generator with num_classes={serving.num_classes}: "
                          f"{list(class_names)[:10]}")
    tmp = files.join(export_base, TEMP_PREFIX + uuid.uuid4().hex)
    try:
        files.makedirs(tmp)
        tf.saved_model.save(serving, tmp, signatures=serving.signatures())
        serving_config.write_warmup(tmp, model_name, serving.z_dim)
        details = {"version": version, "model_name": model_name, "model": dict(generator.spec),
                   "limits": serving.limits(), "signatures": ["serving_default", "generate", "attention"],
                   "dtype": "float32", "compute_dtype": _compute_dtype(generator), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                   "tensorflow": tf.__version__, **(info or {})}
        extra = files.join(tmp, serving_config.WARMUP_DIR)
        files.atomic_write_json(files.join(extra, INFO_FILE), details, indent=2, default=str)
        if class_names:
            files.atomic_write_bytes(files.join(extra, class_map.CLASS_MAP_FILE), class_map.class_map_json(class_names))
        _fsync_tree(tmp)
        try:
            _publish(tmp, target)
        except (OSError, tf.errors.OpError) as error:
            if files.exists(target):
                raise ExportError(f"export version directory {target!r} appeared while exporting (a concurrent "
                                  f"export?); nothing was replaced. Retry (next free: {next_version(export_base)}).") \
                    from error
            raise
    except (OSError, tf.errors.OpError) as error:  # a full disk, a quota, a permission: nothing was published
        _remove_tree(tmp)
        raise OSError(f"could not write export version {version} to {target} ({_reason(error)}); nothing was "
                      f"published and its temporary directory {tmp} was removed; the versions already in "
                      f"{export_base} ({_versions_text(export_base)}) are unchanged.") from error
    except BaseException:
        _remove_tree(tmp)
        raise
    _fsync_dir(export_base)
    try:
        serving_config.write_serving_files(export_base, model_name, serving_base_path or export_base, max_batch,
                                           **(batching or {}))
    except (OSError, tf.errors.OpError) as error:  # each file is written atomically: old or new, never half
        raise OSError(f"exported {target}, but could not write the TF-Serving files {serving_config.MODELS_CONFIG} "
                      f"and {serving_config.BATCHING_PARAMETERS} in {export_base} ({_reason(error)}); each is "
                      "written atomically, so each is the previous or the new one, whole (a server polling the "
                      "base path loads the new version either way).") from error
    return target


def _reason(error):
    """`error` in one line: its class and its message (TF's lines joined, without its op-name prefix)."""
    message = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", " ".join(str(error).split()))
    return f"{type(error).__name__}: {message[:400]}"


def _versions_text(export_base):
    try:
        return ", ".join(map(str, existing_versions(export_base))) or "none"
    except (OSError, tf.errors.OpError):
        return "unknown"


def _publish(tmp, target):
    """Moves the finished export `tmp` to `target`, never replacing an existing version.

    Locally one rename: the version appears whole. Object stores have no directory rename (TF's rename of
    a gs:// "directory" moves object by object; ram:// moves only the entry), so there the files move one
    by one with saved_model.pb last: a server polling the base finds no loadable version before it is whole.
    """
    if files.local_path(target) is not None:
        tf.io.gfile.rename(tmp, target, overwrite=False)
        return
    if files.exists(target):
        raise OSError(f"{target} exists")
    moves = [(source, files.join(target, relative)) for source, relative in _files_under(tmp)]
    moves.sort(key=lambda move: move[0].endswith("/" + SAVED_MODEL_FILE))
    for source, destination in moves:
        files.makedirs(files.dirname(destination))
        tf.io.gfile.rename(source, destination, overwrite=False)
    _remove_tree(tmp)


def _remove_tree(path):
    """Removes `path` and what is under it, if anything is (ram://'s rmtree fails on a moved-out tree)."""
    try:
        tf.io.gfile.rmtree(path)
    except tf.errors.NotFoundError:
        pass


def _files_under(root, relative=""):
    """(path, path relative to `root`) of every file under `root`, by listdir and stat (gfile.walk on ram://
    lists "assets/.extra" beside "assets.extra"; stat says such a name does not exist)."""
    for name in files.listdir(files.join(root, relative) if relative else root):
        child = f"{relative}/{name}" if relative else name
        try:
            is_directory = tf.io.gfile.stat(files.join(root, child)).is_directory
        except tf.errors.NotFoundError:
            continue
        if is_directory:
            yield from _files_under(root, child)
        else:
            yield files.join(root, child), child


def _fsync_dir(path):
    path = files.local_path(path)
    if path is None:  # object stores have nothing to flush: an object is complete once written
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(root):
    """Flushes every local file under `root` so the renamed directory is complete after a crash too."""
    root = files.local_path(root)
    if root is None:
        return
    for directory, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(directory, name), "rb+") as f:
                os.fsync(f.fileno())
        _fsync_dir(directory)


def provenance(model_dir, checkpoint):
    """Where an export came from, without the training machine's paths: the run directory's name and the
    checkpoint relative to it (just its name when it lies elsewhere). The step names it exactly."""
    uri = files.is_uri(model_dir) or files.is_uri(checkpoint)
    path = posixpath if uri else os.path
    run = os.fspath(model_dir).rstrip("/") if uri else os.path.abspath(model_dir)
    checkpoint = os.fspath(checkpoint) if uri else os.path.abspath(checkpoint)
    inside = checkpoint.startswith(run.rstrip(path.sep) + path.sep)
    return {"run": path.basename(run),
            "checkpoint": path.relpath(checkpoint, run) if inside else path.basename(checkpoint)}


def _compute_dtype(generator):
    return "bfloat16" if generator.dtype_policy.compute_dtype == "bfloat16" else "float32"


def export_run(model_dir, export_base, version=None, checkpoint=None, compute_dtype="float32",
               statistics_truncation=None, **kwargs):
    """Exports the EMA generator of the run in `model_dir`; returns the version directory.
    `statistics_truncation` t: with batch-norm statistics recomputed for z truncated to [-t, t].

    Raises ExportError for a bad request, sagan_tf.run.run_dir.RunDirError for a run directory without a
    readable config or checkpoint that fits it."""
    config = run_dir.read_config(model_dir)
    if export_base is None:
        raise ExportError("--export_base is required.")
    if version is not None:  # fail on an existing version before the slow part
        target = files.join(export_base, str(int(version)))
        if files.exists(target):
            raise ExportError(f"export version directory {files.absolute(target)!r} already exists; pass another "
                              f"--version (next free: {next_version(export_base)}) or remove it.")
    if compute_dtype not in COMPUTE_DTYPES:
        raise ExportError(f"--compute_dtype={compute_dtype!r} is not one of {sorted(COMPUTE_DTYPES)}.")
    if statistics_truncation is not None and not (statistics_truncation > 0 and math.isfinite(statistics_truncation)):
        raise ExportError(f"--statistics_truncation={statistics_truncation} must be a finite threshold > 0 "
                          "(omit it for the stored statistics, those of untruncated z).")
    path = run_dir.find_checkpoint(model_dir, checkpoint)
    generator = run_dir.restore_ema_generator(config, path, dtype=COMPUTE_DTYPES[compute_dtype])
    info = {**provenance(model_dir, path), "step": run_dir.step_of(path),
            "training_precision": config.get("mixed_precision"), "statistics_truncation": statistics_truncation}
    with truncation_statistics(generator, statistics_truncation):
        return export_generator(generator, export_base, version, info=info,
                                class_names=list(config.get("class_names") or ()), **kwargs)


def main(argv=None):

    flags.DEFINE_string("model_dir", None, "Training run directory (config.json, checkpoints/).")
    flags.DEFINE_string("export_base", None, "Directory of numbered SavedModel versions (TF-Serving base path).")
    flags.DEFINE_integer("version", None, "Version number; default: one more than the largest existing one.",
                         lower_bound=0)
    flags.DEFINE_string("checkpoint", None, "Checkpoint prefix (or directory) to export; default: the latest.")
    flags.DEFINE_string("model_name", "sagan", "Model name in models.config and the warmup requests.")
    flags.DEFINE_enum("compute_dtype", "float32", sorted(COMPUTE_DTYPES), "The generator's compute dtype in the "
                      "graph (z, labels and images stay float32): bfloat16 for CPUs with AMX, TPUs and GPUs "
                      "with bfloat16 units.")
    flags.DEFINE_float("statistics_truncation", None, "Export batch-norm statistics recomputed for z truncated to "
                       "[-t, t], for clients that sample with that truncation (default: the stored ones, those of "
                       "untruncated z).")
    flags.DEFINE_integer("max_batch", 256, "Largest batch any signature accepts (also batching max_batch_size).",
                         lower_bound=1)
    flags.DEFINE_string("serving_base_path", None, "base_path written to models.config (e.g. the path inside a "
                        "container); default: the absolute --export_base.")
    flags.DEFINE_integer("num_batch_threads", serving_config.DEFAULT_BATCHING["num_batch_threads"],
                         "num_batch_threads in batching_parameters.txt (the serving machine's cores).", lower_bound=1)
    flags.DEFINE_integer("batch_timeout_micros", serving_config.DEFAULT_BATCHING["batch_timeout_micros"],
                         "batch_timeout_micros in batching_parameters.txt.", lower_bound=0)
    flags.mark_flag_as_required("model_dir")
    flags.mark_flag_as_required("export_base")
    FLAGS = flags.FLAGS

    def run(_):
        try:
            path = export_run(FLAGS.model_dir, FLAGS.export_base, FLAGS.version, FLAGS.checkpoint,
                              compute_dtype=FLAGS.compute_dtype, statistics_truncation=FLAGS.statistics_truncation,
                              model_name=FLAGS.model_name, max_batch=FLAGS.max_batch,
                              serving_base_path=FLAGS.serving_base_path,
                              batching=dict(num_batch_threads=FLAGS.num_batch_threads,
                                            batch_timeout_micros=FLAGS.batch_timeout_micros))
        except (ExportError, RunDirError, OSError) as error:  # OSError: the export could not be written
            print(f"error: {error}", file=sys.stderr)
            return 1
        base = files.dirname(path)
        print(f"Exported SavedModel: {path}")
        print(f"TF-Serving config:   {files.join(base, serving_config.MODELS_CONFIG)}")
        print(f"Batching parameters: {files.join(base, serving_config.BATCHING_PARAMETERS)}")
        if files.exists(files.join(path, class_map.EXPORT_CLASS_MAP)):
            print(f"Class name -> label: {files.join(path, class_map.EXPORT_CLASS_MAP)} (export.client --classes)")
        return 0

    app.run(run, argv=argv)


if __name__ == "__main__":
    main()
