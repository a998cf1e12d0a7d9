"""Keras callbacks that monitor and persist a SAGAN run. Each does one thing; all count in G steps.

The train step itself stays free of logging and I/O: everything here runs between steps.
"""
import math
import os
import signal
import time

import keras
import numpy as np
import tensorflow as tf

from sagan_tf.training.checkpointing import NonFiniteError
from sagan_tf.training.ema import noise_batches, standing_statistics
from sagan_tf.visualization import image_grid, save_png, to_uint8


def _step(model):
    return int(model.step.numpy())


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops the run with an error naming the step and the losses as soon as a loss is not finite."""

    def on_train_batch_end(self, batch, logs=None):
        losses = {k: float(v) for k, v in (logs or {}).items() if k.endswith("_loss")}
        if not all(math.isfinite(v) for v in losses.values()):
            raise NonFiniteError(f"non-finite loss at step {_step(self.model)}: {losses}. The last good checkpoint "
                                 f"is kept; lower the learning rates or use float32 to investigate.")


class Throughput(keras.callbacks.Callback):
    """Adds `img_per_s` (real images consumed by D per second, over the last step) to the logs."""

    def __init__(self, images_per_step):
        super().__init__()
        self.images_per_step = images_per_step

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if logs is not None:
            logs["img_per_s"] = self.images_per_step / max(time.perf_counter() - self._start, 1e-9)


class ScalarSummaries(keras.callbacks.Callback):
    """Writes every log value (losses, D outputs, γ, img/s) to TensorBoard every `every` steps."""

    def __init__(self, writer, every):
        super().__init__()
        self.writer, self.every = writer, every

    def on_train_batch_end(self, batch, logs=None):
        step = _step(self.model)
        if step % self.every == 0:
            with self.writer.as_default(step=step):
                for name, value in (logs or {}).items():
                    tf.summary.scalar(name, float(value))
            self.writer.flush()


class EMAStatistics(keras.callbacks.Callback):
    """Recomputes the EMA generator's batch-norm statistics (standing statistics) on every step where
    something reads it in inference mode (`periods`: sample, checkpoint, evaluation cadences) and at the
    end; place it before those callbacks. The noise is fixed, so a resumed run stays exact."""

    def __init__(self, periods, z_dim, num_classes, num_batches=16, batch_size=64, seed=0):
        super().__init__()
        self.periods = [p for p in periods if p]
        self.batches = noise_batches(z_dim, num_classes, num_batches, batch_size, seed)
        self.last_refreshed = None
        self._forward = None

    def refresh(self):
        step = _step(self.model)
        if step != self.last_refreshed:  # once per step: what was saved is what stays in memory
            if self._forward is None:  # compiled once; standing_statistics traces it at momentum 0
                ema = self.model.ema_generator
                self._forward = tf.function(lambda z, labels: ema((z, labels), training=True))
            standing_statistics(self.model.ema_generator, self.batches, self._forward)
            self.last_refreshed = step

    def on_train_batch_end(self, batch, logs=None):
        if any(_step(self.model) % period == 0 for period in self.periods):
            self.refresh()

    def on_train_end(self, logs=None):
        self.refresh()


class SampleGrid(keras.callbacks.Callback):
    """Every `every` steps: a grid from the EMA generator on a fixed noise/label set, logged to
    TensorBoard and written as `<directory>/step_<step>.png` (one row per shown class), and the
    attention maps of G's first attention layer as overlays (`attention_<step>.png`)."""

    def __init__(self, writer, directory, every, z_dim, num_classes, per_class=8, max_rows=10, seed=0):
        super().__init__()
        self.writer, self.directory, self.every = writer, directory, every
        rows = min(max(num_classes, 1), max_rows)
        classes = np.linspace(0, max(num_classes - 1, 0), rows).round().astype(np.int32)
        self.rows = rows
        self.labels = np.repeat(classes, per_class)
        self.z = np.random.default_rng(seed).standard_normal((rows * per_class, z_dim)).astype(np.float32)

    def grid(self):
        images = self.model.ema_generator((self.z, self.labels), training=False)
        return image_grid(to_uint8(images), self.rows)

    def on_train_batch_end(self, batch, logs=None):
        step = _step(self.model)
        if step % self.every == 0:
            self.write(step)

    def on_train_end(self, logs=None):
        self.write(_step(self.model))

    def attention_figure(self):
        """Paper figure-1 overlays of G's first attention layer for 4 of the fixed samples, or None."""
        from sagan_tf.evaluation.attention_maps import attention_figure
        if not self.model.ema_generator.attention_layers:
            return None
        pick = np.linspace(0, len(self.labels) - 1, 4).astype(int)
        return attention_figure(self.model.ema_generator, self.z[pick], self.labels[pick])

    def write(self, step):
        images = {"ema_samples": self.grid(), "ema_attention": self.attention_figure()}
        with self.writer.as_default(step=step):
            for name, image in images.items():
                if image is None:
                    continue
                if self.directory:
                    prefix = "step" if name == "ema_samples" else "attention"
                    save_png(os.path.join(self.directory, f"{prefix}_{step:08d}.png"), image)
                tf.summary.image(name, image[None], max_outputs=1)
        self.writer.flush()


class Checkpointing(keras.callbacks.Callback):
    """Saves every `every` steps and when training ends (including a stop after a signal)."""

    def __init__(self, manager, every):
        super().__init__()
        self.manager, self.every = manager, every
        self.last_saved = None

    def save(self):
        step = _step(self.model)
        if step != self.last_saved:
            self.manager.save()
            self.last_saved = step

    def on_train_batch_end(self, batch, logs=None):
        if _step(self.model) % self.every == 0:
            self.save()

    def on_train_end(self, logs=None):
        self.save()


class StopOnSignal(keras.callbacks.Callback):
    """Turns SIGTERM/SIGINT (a preemption notice, Ctrl-C) into a clean stop after the current step;
    `Checkpointing.on_train_end` then saves, and the process can exit 0."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        super().__init__()
        self.received = None
        self._previous = {}

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name

    def on_train_begin(self, logs=None):
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def on_train_batch_end(self, batch, logs=None):
        if self.received:
            print(f"\n{self.received} received at step {_step(self.model)}: checkpointing and stopping.", flush=True)
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
