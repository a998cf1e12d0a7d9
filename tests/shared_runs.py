"""Data and runs that several test modules share, each made once per test process (one per pytest-xdist
worker) the first time a test asks for it:

* `IMAGES`, `LABELS`, `in_memory_dataset`: the deterministic in-memory training data.
* `tiny_run`: a 10-class tiny run trained one step (test_sampling, test_evaluate_cli).
* `monitored_run`: a tiny run trained 2 steps and resumed to 4, logging every step (test_monitoring,
  test_tensorboard).
* `exported`: `helpers.trained_run` exported as a SavedModel (test_export, test_serving).
"""
import contextlib
import functools
import io
import os

import keras
import numpy as np
import tensorflow as tf

from export import saved_model as export_lib
from sagan_tf.training import train
from tests.helpers import scratch_dir, tiny_config, trained_run

RNG = np.random.default_rng(0)
IMAGES = RNG.uniform(-1, 1, size=(32, 32, 32, 1)).astype(np.float32)
LABELS = (np.arange(32) % 3).astype(np.int32)


def in_memory_dataset(batch, start_step=0, images=IMAGES):
    """A deterministic pipeline positioned at `start_step`, like the real ones."""
    return (tf.data.Dataset.from_tensor_slices((images, LABELS)).repeat().batch(batch, drop_remainder=True)
            .skip(start_step))


TINY_RUN_CLASSES = 10


def tiny_run(tmp_path_factory):
    """A tiny model_dir trained for one step (config.json + checkpoints/ckpt-1), made once per session.

    Used by test_sampling and test_evaluate_cli.
    """
    model_dir = tmp_path_factory.getbasetemp() / "tiny_sagan_run"
    if not (model_dir / "checkpoints" / "checkpoint").exists():
        config = tiny_config(train_steps=1, num_classes=TINY_RUN_CLASSES)
        rng = np.random.default_rng(0)
        images = rng.uniform(-1, 1, (8, 32, 32, 1)).astype(np.float32)
        labels = (np.arange(8) % TINY_RUN_CLASSES).astype(np.int32)
        train(config, str(model_dir), verbose=0, dataset_fn=lambda start: (
            tf.data.Dataset.from_tensor_slices((images, labels)).repeat().batch(4, drop_remainder=True).skip(start)))
    return str(model_dir)


RESUMED_AT, STEPS, BATCH = 2, 4, 4


def run_config():
    return tiny_config(train_steps=STEPS, checkpoint_every=1, keep_checkpoints=STEPS + 1, log_every=1,
                       sample_every=2, batch_size=BATCH, n_dis=1)


def read_events(directory):
    """({tag: {step: float}}, {tag: {step: encoded PNG}}, {tag: description}) from every events file."""
    scalars, images, descriptions = {}, {}, {}
    for path in sorted(directory.glob("events*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                descriptions.setdefault(value.tag, value.metadata.summary_description)
                plugin = value.metadata.plugin_data.plugin_name
                if plugin == "scalars":
                    scalars.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
                elif plugin == "images":
                    images.setdefault(value.tag, {})[event.step] = value.tensor.string_val[2]
    return scalars, images, descriptions


class StepLogs(keras.callbacks.Callback):
    """Records the logs fit hands the callbacks after every step: what the train step returned."""

    def __init__(self):
        super().__init__()
        self.logs = {}

    def on_train_batch_end(self, batch, logs=None):
        self.logs[int(self.model.step.numpy())] = dict(logs or {})


_RUN = {}


def monitored_run(tmp_path_factory):
    """The monitored run (test_monitoring checks it, test_tensorboard serves it through TensorBoard):
    {model_dir, config, stdout of the resumed leg, step_logs, scalars, images, descriptions}."""
    if not _RUN:
        model_dir = tmp_path_factory.mktemp("monitoring") / "run"
        config, recorder = run_config(), StepLogs()
        config.train_steps = RESUMED_AT
        train(config, str(model_dir), dataset_fn=lambda start: in_memory_dataset(BATCH, start), verbose=0,
              extra_callbacks=[recorder])
        config.train_steps = STEPS
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            train(config, str(model_dir), dataset_fn=lambda start: in_memory_dataset(BATCH, start), verbose=1,
                  extra_callbacks=[recorder])
        scalars, images, descriptions = read_events(model_dir / "train")
        _RUN.update(model_dir=model_dir, config=config, stdout=stdout.getvalue(), step_logs=recorder.logs,
                    scalars=scalars, images=images, descriptions=descriptions)
    return _RUN


Z_DIM, CLASSES, RES = 8, 3, 32
EXPORT_DURING_SAVE = {}


@functools.lru_cache(maxsize=None)
def exported():
    """(export_base, version_dir): the trained run exported in-process (latest checkpoint, version 1).

    Records what export_base held while the SavedModel was being written (for the atomicity test).
    """
    model_dir, _ = trained_run()
    base = os.path.join(scratch_dir(), "export")
    real_save = tf.saved_model.save

    def spying_save(module, path, *args, **kwargs):
        EXPORT_DURING_SAVE.update(path=path, listing=sorted(os.listdir(base)))
        return real_save(module, path, *args, **kwargs)

    tf.saved_model.save = spying_save
    try:
        version_dir = export_lib.export_run(model_dir, base)
    finally:
        tf.saved_model.save = real_save
    assert version_dir == os.path.join(base, "1")
    return base, version_dir


def keras_ema():
    return trained_run()[1].ema_generator


def sample_inputs(n=5, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, Z_DIM)).astype(np.float32), (np.arange(n) % CLASSES).astype(np.int32)
