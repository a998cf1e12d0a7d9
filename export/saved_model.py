"""Export the EMA generator of a training run as a TF-Serving SavedModel.

    python -m export.saved_model --model_dir=runs/fmnist --export_base=runs/fmnist/export \
        [--version=N] [--checkpoint=runs/fmnist/checkpoints/ckpt-600] [--model_name=sagan] [--max_batch=256] \
        [--serving_base_path=/models/sagan]

Reads ``<model_dir>/config.json`` and the latest checkpoint in ``<model_dir>/checkpoints/`` (or
``--checkpoint``: a checkpoint prefix or a directory), restores only the EMA generator, built in
float32 whatever precision it was trained in, and writes

    <export_base>/<version>/                       the SavedModel (signatures: see export.signatures)
    <export_base>/<version>/assets.extra/          tf_serving_warmup_requests, sagan_export.json,
                                                   classes.json (the class name -> label map, when the
                                                   run has class names: see sagan_tf.class_map)
    <export_base>/models.config                    TF-Serving model_config_list (see export.serving_config)
    <export_base>/batching_parameters.txt          TF-Serving batching parameters

``version`` defaults to one more than the largest existing numeric version (1 for a new base). The
version directory appears atomically: everything is written into ``<export_base>/.tmp-export-*`` (a
name TF-Serving's version polling ignores, since it is not a number) and renamed into place at the
end, so a polling server never sees a half-written model. A failed export removes its temp dir.

This module imports TensorFlow only once the paths are checked, so usage errors are immediate.
"""
import json
import os
import re
import shutil
import sys
import tempfile
import time

from export import serving_config
from sagan_tf import class_map

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
INFO_FILE = "sagan_export.json"
TEMP_PREFIX = ".tmp-export-"


class ExportError(ValueError):
    """A bad export request (missing run files, no checkpoint, existing version); the message names the value."""


def load_model_config(model_dir):
    """The run's config (a plain dict) from ``<model_dir>/config.json``."""
    if not os.path.isdir(model_dir):
        raise ExportError(f"model_dir {model_dir!r} does not exist or is not a directory.")
    path = os.path.join(model_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise ExportError(f"{path!r} does not exist: --model_dir={model_dir!r} is not a training run directory "
                          f"(training writes {CONFIG_FILE} there).")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as error:
        raise ExportError(f"could not read the run config {path!r}: {error}") from error


def find_checkpoint(model_dir, checkpoint=None):
    """The checkpoint prefix to export: `checkpoint` (a prefix or a directory) or the latest of the run."""
    import tensorflow as tf
    if checkpoint:
        if os.path.isdir(checkpoint):
            found = tf.train.latest_checkpoint(checkpoint)
            if found is None:
                raise ExportError(f"--checkpoint={checkpoint!r} is a directory without a checkpoint "
                                  "(no 'checkpoint' index file naming one).")
            return found
        if not os.path.exists(checkpoint + ".index"):
            raise ExportError(f"--checkpoint={checkpoint!r} is not a checkpoint: {checkpoint + '.index'!r} does not "
                              "exist (pass a prefix like <model_dir>/checkpoints/ckpt-1000).")
        return checkpoint
    directory = os.path.join(model_dir, CHECKPOINT_DIR)
    found = tf.train.latest_checkpoint(directory) if os.path.isdir(directory) else None
    if found is None:
        raise ExportError(f"no checkpoint in {directory!r}: train first, or pass --checkpoint.")
    return found


def restore_ema_generator(config, checkpoint):
    """A float32 Generator holding the EMA weights of `checkpoint` (a checkpoint prefix).

    Fails if any generator variable is missing from the checkpoint (a config that does not match the
    run), instead of exporting freshly initialised weights.
    """
    import tensorflow as tf

    from sagan_tf.models import Generator
    from sagan_tf.models.architecture import model_fields

    spec = model_fields(config)
    # Cross-replica BN only differs in training; the exported graph needs no distribution context.
    spec["sync_bn"] = False
    generator = Generator(spec, dtype="float32", name="ema_generator")
    generator.build()
    from sagan_tf.training.checkpointing import unreadable_reason
    reason = unreadable_reason(checkpoint)
    if reason:
        raise ExportError(f"checkpoint {checkpoint!r} cannot be read ({reason}); export an older one with "
                          "--checkpoint=<model_dir>/checkpoints/ckpt-<N> (resuming the run falls back by itself).")
    try:
        status = tf.train.Checkpoint(ema_generator=generator).restore(checkpoint)
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError) as error:  # missing variables, or shapes of another config
        raise ExportError(f"checkpoint {checkpoint!r} does not hold this run's EMA generator as config.json "
                          f"describes it (model fields {spec}): {str(error).splitlines()[0][:400]}") from error
    status.expect_partial()  # D, G and the optimizers are in the checkpoint too
    return generator


def existing_versions(export_base):
    """Numeric version directories under `export_base`, ascending (what TF-Serving would load)."""
    if not os.path.isdir(export_base):
        return []
    return sorted(int(name) for name in os.listdir(export_base)
                  if re.fullmatch(r"\d+", name) and os.path.isdir(os.path.join(export_base, name)))


def next_version(export_base):
    versions = existing_versions(export_base)
    return versions[-1] + 1 if versions else 1


def _step_of(checkpoint):
    match = re.search(r"ckpt-(\d+)$", checkpoint or "")
    return int(match.group(1)) if match else None


def export_generator(generator, export_base, version=None, model_name="sagan", max_batch=256,
                     serving_base_path=None, info=None, batching=None, class_names=None):
    """Writes `generator` (a built Keras Generator) as ``<export_base>/<version>`` atomically.

    Returns the version directory. `info` is merged into ``assets.extra/sagan_export.json``;
    `batching` overrides entries of ``serving_config.DEFAULT_BATCHING``; `class_names` (label i =
    class_names[i]) are written to ``assets.extra/classes.json`` for clients that ask by name.
    """
    import tensorflow as tf

    from export.signatures import GeneratorServing

    export_base = os.path.abspath(export_base)
    os.makedirs(export_base, exist_ok=True)
    if version is None:
        version = next_version(export_base)
    elif int(version) < 0:
        raise ExportError(f"--version={version} must be a non-negative integer.")
    version = int(version)
    target = os.path.join(export_base, str(version))
    if os.path.exists(target):
        raise ExportError(f"export version directory {target!r} already exists; pass another --version "
                          f"(next free: {next_version(export_base)}) or remove it.")
    serving = GeneratorServing(generator, max_batch=max_batch)
    if class_names and len(class_names) != serving.num_classes:
        raise ExportError(f"{len(class_names)} class names for a generator with num_classes={serving.num_classes}: "
                          f"{list(class_names)[:10]}")
    tmp = tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=export_base)
    try:
        tf.saved_model.save(serving, tmp, signatures=serving.signatures())
        serving_config.write_warmup(tmp, model_name, serving.z_dim)
        details = {"version": version, "model_name": model_name, "model": dict(generator.spec),
                   "limits": serving.limits(), "signatures": ["serving_default", "generate", "attention"],
                   "dtype": "float32", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                   "tensorflow": tf.__version__, **(info or {})}
        with open(os.path.join(tmp, serving_config.WARMUP_DIR, INFO_FILE), "w") as f:
            json.dump(details, f, indent=2, default=str)
        if class_names:
            with open(os.path.join(tmp, serving_config.WARMUP_DIR, class_map.CLASS_MAP_FILE), "wb") as f:
                f.write(class_map.class_map_json(class_names))
        _fsync_tree(tmp)
        try:
            os.rename(tmp, target)  # never replaces a non-empty directory
        except OSError as error:
            if os.path.exists(target):
                raise ExportError(f"export version directory {target!r} appeared while exporting (a concurrent "
                                  f"export?); nothing was replaced. Retry (next free: {next_version(export_base)}).") \
                    from error
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(export_base)
    serving_config.write_serving_files(export_base, model_name, serving_base_path or export_base, max_batch,
                                       **(batching or {}))
    return target


def _fsync_dir(path):
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
    """Flushes every file under `root` so the renamed directory is complete after a crash too."""
    for directory, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(directory, name), "rb+") as f:
                os.fsync(f.fileno())
        _fsync_dir(directory)


def export_run(model_dir, export_base, version=None, checkpoint=None, **kwargs):
    """Exports the EMA generator of the run in `model_dir`; returns the version directory."""
    config = load_model_config(model_dir)
    if export_base is None:
        raise ExportError("--export_base is required.")
    if version is not None:  # fail on an existing version before the slow part
        target = os.path.join(export_base, str(int(version)))
        if os.path.exists(target):
            raise ExportError(f"export version directory {os.path.abspath(target)!r} already exists; pass another "
                              f"--version (next free: {next_version(export_base)}) or remove it.")
    path = find_checkpoint(model_dir, checkpoint)
    generator = restore_ema_generator(config, path)
    info = {"model_dir": os.path.abspath(model_dir), "checkpoint": os.path.abspath(path), "step": _step_of(path),
            "training_precision": config.get("mixed_precision")}
    return export_generator(generator, export_base, version, info=info,
                            class_names=list(config.get("class_names") or ()), **kwargs)


def main(argv=None):
    from absl import app, flags

    flags.DEFINE_string("model_dir", None, "Training run directory (config.json, checkpoints/).")
    flags.DEFINE_string("export_base", None, "Directory of numbered SavedModel versions (TF-Serving base path).")
    flags.DEFINE_integer("version", None, "Version number; default: one more than the largest existing one.",
                         lower_bound=0)
    flags.DEFINE_string("checkpoint", None, "Checkpoint prefix (or directory) to export; default: the latest.")
    flags.DEFINE_string("model_name", "sagan", "Model name in models.config and the warmup requests.")
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
                              model_name=FLAGS.model_name, max_batch=FLAGS.max_batch,
                              serving_base_path=FLAGS.serving_base_path,
                              batching=dict(num_batch_threads=FLAGS.num_batch_threads,
                                            batch_timeout_micros=FLAGS.batch_timeout_micros))
        except ExportError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        base = os.path.dirname(path)
        print(f"Exported SavedModel: {path}")
        print(f"TF-Serving config:   {os.path.join(base, serving_config.MODELS_CONFIG)}")
        print(f"Batching parameters: {os.path.join(base, serving_config.BATCHING_PARAMETERS)}")
        if os.path.isfile(os.path.join(path, class_map.EXPORT_CLASS_MAP)):
            print(f"Class name -> label: {os.path.join(path, class_map.EXPORT_CLASS_MAP)} (export.client --classes)")
        return 0

    app.run(run, argv=argv)


if __name__ == "__main__":
    main()
