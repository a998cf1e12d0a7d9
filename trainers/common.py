"""What every trainer CLI shares: flags → config → strategy → `sagan_tf.training.train`.

Common flags: --config (a preset file, with --config.<field>= overrides), --model_dir, --strategy,
--tpu, --num_cpu_devices, --train_steps (the TOTAL step count; a rerun resumes from the latest
checkpoint and continues to it), --data_dir. Everything is validated before any work starts, and
nothing in model_dir is left changed when a flag or config value is bad.

The chief takes the run lock first, before TensorFlow is imported (sagan_tf.runtime.lock_holding): a
second trainer on a model_dir that another one holds is refused within about a second, naming the
holder, and exits 1. A bad flag or config value found after it was taken releases it and removes the
model_dir it created, if that is still empty.
"""
import contextlib
import pathlib
import sys

from absl import app, flags
from ml_collections import config_flags

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"
FLAGS = flags.FLAGS


@contextlib.contextmanager
def usage_errors(prefix):
    """A ValueError inside (a bad value; a path that is no run or export) is a usage error naming `prefix`."""
    try:
        yield
    except ValueError as error:
        raise app.UsageError(f"{prefix}: {error}") from error


def define_flags(default_config):
    """Defines the common flags; `default_config` is a preset file name in configs/."""
    config_flags.DEFINE_config_file("config", str(CONFIG_DIR / default_config),
                                    "Preset file; override fields with --config.<field>=<value>.")
    flags.DEFINE_string("model_dir", None, "Directory for checkpoints, TensorBoard events and samples.")
    flags.DEFINE_string("strategy", "default", "tf.distribute strategy: default, one_device, mirrored, "
                        "multi_worker_mirrored or tpu (sagan_tf.runtime.strategy.STRATEGIES).")
    flags.DEFINE_string("tpu", None, "TPU name or grpc:// address for --strategy=tpu.")
    flags.DEFINE_integer("num_cpu_devices", 0, "Split the CPU into this many logical devices (CPU-only machines).",
                         lower_bound=0)
    flags.DEFINE_integer("train_steps", None, "Total G steps (overrides config.train_steps).", lower_bound=1)
    flags.DEFINE_string("data_dir", None, "Dataset location (idx files, image folder or TFDS data_dir).")
    flags.mark_flag_as_required("model_dir")


def resolved_config(overrides=None):
    """The config from flags, with --train_steps and per-trainer `overrides` applied, validated for
    the replica count once the strategy exists."""
    from sagan_tf.config import validate_config
    config = FLAGS.config
    if FLAGS.train_steps:
        config.train_steps = FLAGS.train_steps
    config.update(overrides or {})
    validate_config(config)  # everything but the replica count, before TF starts
    return config


def check_data_dir(path, dataset):
    """An image folder or idx directory must exist; a TFDS data_dir is created and filled by TFDS."""
    from sagan_tf.data import is_tfds
    from sagan_tf.run import files
    if path is None or is_tfds(dataset):
        return
    if not files.exists(path):
        raise app.UsageError(f"--data_dir={path} does not exist.")


def refuse(error):
    """A run refused before any work (another run holds model_dir, another config): exit 1, no traceback."""
    print(f"error: {error}", file=sys.stderr, flush=True)
    sys.exit(1)


def run(overrides_fn=None):
    """Runs the trainer: `overrides_fn()` may return extra config values derived from flags."""
    from sagan_tf.runtime import stop_signals
    stop_signals.install()  # from here a SIGTERM/SIGINT stops cleanly (exit 0), a second one at once
    from sagan_tf.run.run_lock import RunLockedError
    from sagan_tf.runtime.lock_holding import holding_as_chief
    with contextlib.ExitStack() as lock:
        try:
            lock.enter_context(holding_as_chief(FLAGS.model_dir, FLAGS.strategy))
        except RunLockedError as error:
            refuse(error)
        _configure_and_train(overrides_fn, release_lock=lock.close)


def _configure_and_train(overrides_fn, release_lock):
    try:
        config = resolved_config(overrides_fn() if overrides_fn else None)
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    check_data_dir(FLAGS.data_dir, config.dataset)
    from sagan_tf.config import validate_config
    from sagan_tf.runtime.strategy import get_strategy  # imports TF: after the cheap checks
    from sagan_tf.training import train
    from sagan_tf.training.loop import is_chief
    try:
        strategy = get_strategy(FLAGS.strategy, tpu=FLAGS.tpu, num_cpu_devices=FLAGS.num_cpu_devices)
        validate_config(config, strategy.num_replicas_in_sync)
    except (ValueError, RuntimeError) as error:  # RuntimeError: no TPU at --tpu, --num_cpu_devices too late
        raise app.UsageError(str(error)) from error
    if not is_chief(strategy):
        release_lock()  # held only if TF_CONFIG was read otherwise than TensorFlow reads it: a worker holds none
    from sagan_tf.run.run_dir import ConfigMismatchError
    from sagan_tf.run.run_lock import RunLockedError
    try:
        train(config, FLAGS.model_dir, strategy=strategy, data_dir=FLAGS.data_dir)
    except (RunLockedError, ConfigMismatchError) as error:  # refused before any work: no traceback
        refuse(error)


def main(argv):
    """absl entry point of the trainers that need no extra config overrides."""
    del argv
    run()
