"""A training run's directory: the one place that knows its files and how to restore from it.

    <model_dir>/
        config.json              the run's config (written once the checkpoints are restored; checked on resume)
        classes.json             class name -> label (runs with class names; see sagan_tf.run.class_map)
        checkpoints/ckpt-<step>  tf.train checkpoints numbered by G step, and TF's `checkpoint` index file
        checkpoints/unreadable/  damaged checkpoints moved aside by a resume (never deleted), with REASON.txt
        best/                    the best-FID checkpoint and best.json (periodic evaluation)
        eval_history.jsonl       one line per periodic evaluation
        eval_<step>.json         a `trainers.evaluate` record
        <mode>_step<step>.png    a `trainers.sample` sheet (when no --out is given)
        reference_stats/         cached real-image statistics for FID/KID/precision-recall
        samples/                 sample grids and attention figures (step_<step>.png, attention_<step>.png)
        train/                   TensorBoard events
        .lock                    the writer's pid and host while a run trains

Every name above is defined here and nowhere else; the modules that write the files ask for them.

Every path may be a URI (`gs://`, `file://`, `ram://`): everything goes through `sagan_tf.run.files`.
Sampling, export, evaluation and the trainers restore the EMA generator through :func:`load_ema_generator`.
"""
from __future__ import annotations

import dataclasses
import re

import ml_collections
import tensorflow as tf

from sagan_tf.models import Generator
from sagan_tf.models.architecture import model_fields
from sagan_tf.run import files
from sagan_tf.run.run_lock import LOCK_FILE  # defined beside the lock, which imports no TensorFlow

__all__ = [
    "CHECKPOINT_INDEX",
    "UNREADABLE_DIR",
    "EVAL_HISTORY_FILE",
    "LOCK_FILE",
    "EMA_GENERATOR",
    "RunDirError",
    "ConfigMismatchError",
    "RestoredGenerator",
    "CONFIG_FILE",
    "CLASS_MAP_FILE",
    "BEST_FILE",
    "UNREADABLE_REASON_FILE",
    "config_file",
    "class_map_file",
    "checkpoint_dir",
    "best_dir",
    "best_file",
    "eval_history_file",
    "reference_cache",
    "samples_dir",
    "tensorboard_dir",
    "eval_record_file",
    "sheet_file",
    "sample_grid_file",
    "is_run_dir",
    "read_config",
    "write_config",
    "step_of",
    "checkpoint_files",
    "unreadable_reason",
    "find_checkpoint",
    "recorded_config",
    "restore_ema_generator",
    "load_ema_generator",
]

CONFIG_FILE = "config.json"
CLASS_MAP_FILE = "classes.json"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_PREFIX = "ckpt"
CHECKPOINT_INDEX = "checkpoint"
UNREADABLE_DIR = "unreadable"
UNREADABLE_REASON_FILE = "REASON.txt"
BEST_DIR = "best"
BEST_FILE = "best.json"
EVAL_HISTORY_FILE = "eval_history.jsonl"
REFERENCE_CACHE = "reference_stats"
SAMPLES_DIR = "samples"
TENSORBOARD_DIR = "train"

# The names a training checkpoint gives its objects (sagan_tf.training.checkpointing.make_checkpoint).
EMA_GENERATOR = "ema_generator"


class RunDirError(ValueError):
    """A run directory, or a checkpoint in it, lacks what was asked for; the message names the path."""


def config_file(model_dir: str) -> str:
    return files.join(model_dir, CONFIG_FILE)


def checkpoint_dir(model_dir: str) -> str:
    return files.join(model_dir, CHECKPOINT_DIR)


def class_map_file(model_dir: str) -> str:
    return files.join(model_dir, CLASS_MAP_FILE)


def best_dir(model_dir: str) -> str:
    return files.join(model_dir, BEST_DIR)


def best_file(best_directory: str) -> str:
    """The record of the best checkpoint in `best_directory` (a run's :func:`best_dir`)."""
    return files.join(best_directory, BEST_FILE)


def eval_history_file(model_dir: str) -> str:
    return files.join(model_dir, EVAL_HISTORY_FILE)


def reference_cache(model_dir: str) -> str:
    return files.join(model_dir, REFERENCE_CACHE)


def samples_dir(model_dir: str) -> str:
    return files.join(model_dir, SAMPLES_DIR)


def tensorboard_dir(model_dir: str) -> str:
    return files.join(model_dir, TENSORBOARD_DIR)


def eval_record_file(model_dir: str, name) -> str:
    return files.join(model_dir, f"eval_{name}.json")


def sheet_file(model_dir: str, mode: str, step) -> str:
    """Where `trainers.sample` writes a sheet of `mode` from the checkpoint of `step` by default."""
    return files.join(model_dir, f"{mode}_step{step}.png")


def sample_grid_file(samples_directory: str, kind: str, step: int) -> str:
    """A training run's picture at `step` in `samples_directory` (a run's :func:`samples_dir`): `kind`
    "step" for the sample grid, "attention" for the attention figure."""
    return files.join(samples_directory, f"{kind}_{step:08d}.png")


def is_run_dir(model_dir: str) -> bool:
    return files.exists(config_file(model_dir))


def read_config(model_dir: str) -> ml_collections.ConfigDict:
    """The config the run recorded in ``<model_dir>/config.json``."""
    path = config_file(model_dir)
    if not files.isdir(model_dir):
        raise RunDirError(f"model_dir {model_dir!r} does not exist or is not a directory.")
    if not files.exists(path):
        raise RunDirError(f"{path!r} does not exist: {model_dir!r} is not a training run directory "
                          f"(training writes {CONFIG_FILE} there).")
    try:
        return ml_collections.ConfigDict(files.read_json(path))
    except (OSError, ValueError, tf.errors.OpError) as error:
        raise RunDirError(f"could not read the run config {path!r}: {error}") from error


def write_config(model_dir: str, config) -> None:
    files.atomic_write_text(config_file(model_dir), config.to_json_best_effort(indent=2))


def step_of(prefix: str | None) -> int | None:
    """The G step in a checkpoint prefix's ``ckpt-<step>`` name; None for another name."""
    match = re.search(rf"{CHECKPOINT_PREFIX}-(\d+)$", prefix or "")
    return int(match.group(1)) if match else None


def checkpoint_files(directory: str) -> dict[int, str]:
    """{step: prefix} of the complete-looking checkpoints (``ckpt-<N>.index`` present) in `directory`."""
    found = {}
    for name in files.listdir(directory) if files.isdir(directory) else []:
        match = re.fullmatch(rf"{CHECKPOINT_PREFIX}-(\d+)\.index", name)
        if match:
            found[int(match.group(1))] = files.join(directory, name[:-len(".index")])
    return found


def unreadable_reason(prefix: str) -> str | None:
    """None if every tensor of checkpoint `prefix` reads back (checksums verified), else why not."""
    try:
        # Not tf.train.load_checkpoint: it asks isdir(prefix) first, which some filesystems (ram://) answer
        # True for any prefix of a file name.
        reader = tf.compat.v1.train.NewCheckpointReader(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (IndexError, ValueError, OSError, tf.errors.OpError) as error:
        return f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"
    return None


def find_checkpoint(model_dir: str, checkpoint: str | None = None) -> str:
    """The checkpoint prefix to restore: `checkpoint` (a prefix, or a directory whose latest is taken),
    else the latest of ``<model_dir>/checkpoints``."""
    if checkpoint:
        if files.exists(checkpoint + ".index"):
            return checkpoint
        if files.isdir(checkpoint):
            found = tf.train.latest_checkpoint(checkpoint)
            if found is None:
                raise RunDirError(f"--checkpoint={checkpoint!r} is a directory without a checkpoint "
                                  f"(no '{CHECKPOINT_INDEX}' index file naming one).")
            return found
        raise RunDirError(f"--checkpoint={checkpoint!r} is not a checkpoint: {checkpoint + '.index'!r} does not "
                          f"exist (pass a prefix like <model_dir>/{CHECKPOINT_DIR}/{CHECKPOINT_PREFIX}-1000).")
    directory = checkpoint_dir(model_dir)
    found = tf.train.latest_checkpoint(directory) if files.isdir(directory) else None
    if found is None:
        raise RunDirError(f"no checkpoint in {directory!r}: train first, or pass --checkpoint.")
    return found


class ConfigMismatchError(ValueError):
    """The config does not match the run whose checkpoints are in model_dir."""


def recorded_config(model_dir: str) -> dict | None:
    """The config.json (a dict) of the run whose checkpoints are in `model_dir`, what a resume must keep to;
    None when it has no checkpoints (a run without any may change anything) or no config.json (restore
    still checks the variables). Raises ConfigMismatchError when config.json cannot be read."""
    checkpoints = checkpoint_dir(model_dir)
    if not (checkpoint_files(checkpoints) or files.exists(files.join(checkpoints, CHECKPOINT_INDEX))):
        return None
    path = config_file(model_dir)
    if not files.exists(path):
        return None
    try:
        return files.read_json(path)
    except (OSError, ValueError, tf.errors.OpError) as error:
        raise ConfigMismatchError(f"{path} cannot be read ({error}); it describes the checkpoints in {checkpoints}. "
                                  "Nothing was changed; repair or remove it.") from error


def restore_ema_generator(config, checkpoint: str, dtype: str = "float32") -> Generator:
    """A Generator holding the EMA weights of `checkpoint` (a prefix), for sampling, evaluation and export,
    whatever precision and strategy the run trained with. `dtype` is its Keras dtype policy: float32, or
    mixed_bfloat16 (bfloat16 compute, float32 weights, float32 images out) for hardware with bfloat16.

    Fails if the checkpoint cannot be read, or if any generator variable is missing from it (a config that
    does not match the run), instead of returning freshly initialised weights.
    """
    spec = model_fields(config)
    spec["sync_bn"] = False  # cross-replica BN only differs in training; inference needs no distribution context
    generator = Generator(spec, dtype=dtype, name=EMA_GENERATOR)
    generator.build()
    reason = unreadable_reason(checkpoint)
    if reason:
        raise RunDirError(f"checkpoint {checkpoint!r} cannot be read ({reason}); use an older one with "
                          f"--checkpoint=<model_dir>/{CHECKPOINT_DIR}/{CHECKPOINT_PREFIX}-<N> (resuming the run "
                          "falls back by itself).")
    try:
        status = tf.train.Checkpoint(**{EMA_GENERATOR: generator}).restore(checkpoint)
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError) as error:  # missing variables, or the shapes of another config
        raise RunDirError(f"checkpoint {checkpoint!r} does not hold this run's EMA generator as config.json "
                          f"describes it (model fields {spec}): {str(error).splitlines()[0][:400]}") from error
    status.expect_partial()  # G, D and the optimizers are in the checkpoint too
    return generator


@dataclasses.dataclass(frozen=True)
class RestoredGenerator:
    """What :func:`load_ema_generator` gives: the network and where it came from."""
    generator: Generator
    config: ml_collections.ConfigDict
    checkpoint: str
    step: int | None


def load_ema_generator(model_dir: str, checkpoint: str | None = None) -> RestoredGenerator:
    """The EMA generator of the run in `model_dir` (float32), from `checkpoint` or the latest one."""
    config = read_config(model_dir)
    prefix = find_checkpoint(model_dir, checkpoint)
    return RestoredGenerator(restore_ema_generator(config, prefix), config, prefix, step_of(prefix))
