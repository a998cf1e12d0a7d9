"""Keras callbacks that monitor and persist a SAGAN run. Each does one thing; all count in G steps.

The train step itself stays free of logging and I/O: everything here runs between steps, or with
`steps_per_execution=k` between executions of k steps (Keras calls `on_train_batch_end` once per
execution, with the logs of its last step). `StepCounter` counts the step on the host, so no callback
reads `model.step` from the device after every execution; the cadences (multiples of k, validated by
sagan_tf.config) then land exactly on their steps. Every network call here goes through the model's
strategy (`replicas.distributed_call`, `standing_statistics.StandingStatistics`), as the train step does.
"""
from __future__ import annotations

import math
import signal
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.util import event_pb2

from sagan_tf.run import run_dir
from sagan_tf.runtime import stop_signals
from sagan_tf.runtime.host_step import HOST_STEP, current_step
from sagan_tf.runtime.replicas import distributed_call
from sagan_tf.sampling.attention_maps import attention_figure
from sagan_tf.sampling.images import image_grid, save_png, to_uint8
from sagan_tf.sampling.noise import noise_batches
from sagan_tf.sampling.standing_statistics import StandingStatistics
from sagan_tf.training.checkpointing import NonFiniteError

__all__ = [
    "StepCounter",
    "NonFiniteGuard",
    "Throughput",
    "describe",
    "ScalarSummaries",
    "write_session_start",
    "ConfigSummary",
    "ProgressBar",
    "EMAStatistics",
    "SampleGrid",
    "Checkpointing",
    "StopOnSignal",
]


def _steps_done(callback, batch: int) -> int:
    """Steps of this fit done after the execution whose last batch index Keras reports as `batch`: the
    last execution may be shorter than steps_per_execution (the data ends at train_steps)."""
    total = (callback.params or {}).get("steps")
    return batch + 1 if total is None else min(batch + 1, total)


class StepCounter(keras.callbacks.Callback):
    """Counts the step on the host: reads `model.step` once when fit starts, then adds the steps of each
    execution; the other callbacks read it with `current_step`. Put it first. (A skipped mixed_float16
    update still counts: the train step's optimizers advance `step` then too.)"""

    def on_train_begin(self, logs=None):
        self._start = int(self.model.step.numpy())
        setattr(self.model, HOST_STEP, self._start)

    def on_train_batch_end(self, batch, logs=None):
        setattr(self.model, HOST_STEP, self._start + _steps_done(self, batch))

    def on_train_end(self, logs=None):
        setattr(self.model, HOST_STEP, None)  # outside fit, current_step reads the model again


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops the run with an error naming the step and the losses as soon as a loss is not finite (with
    steps_per_execution=k: the loss of an execution's last step; NaN weights keep every later loss NaN)."""

    def on_train_batch_end(self, batch, logs=None):
        losses = {k: float(v) for k, v in (logs or {}).items() if k.endswith("_loss")}
        if not all(math.isfinite(v) for v in losses.values()):
            raise NonFiniteError(f"non-finite loss at step {current_step(self.model)}: {losses}. The last good "
                                 "checkpoint is kept; lower the learning rates or use float32 to investigate.")


class Throughput(keras.callbacks.Callback):
    """Adds `img_per_s` to the logs: real images consumed by D per second in THIS step (the train step
    alone, from the start of the batch to its logs), what the progress bar shows. `pop_window()`
    gives the same rate over all steps since its previous call (the TensorBoard scalar)."""

    def __init__(self, images_per_step):
        super().__init__()
        self.images_per_step = images_per_step
        self._window_steps, self._window_seconds = 0, 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self._start, self._first_batch = time.perf_counter(), batch

    def on_train_batch_end(self, batch, logs=None):
        seconds = max(time.perf_counter() - self._start, 1e-9)
        steps = _steps_done(self, batch) - self._first_batch  # the steps of this execution
        self._window_steps += steps
        self._window_seconds += seconds
        if logs is not None:
            logs["img_per_s"] = self.images_per_step * steps / seconds

    def pop_window(self):
        """Images per second over the steps since the last call (None if there were none); resets."""
        if not self._window_steps:
            return None
        rate = self.images_per_step * self._window_steps / self._window_seconds
        self._window_steps, self._window_seconds = 0, 0.0
        return rate


# What every train/ scalar is: TensorBoard shows these descriptions beside the charts.
_THIS_STEP = " The value of the logged step itself (not a running mean)."
DESCRIPTIONS = {
    "d_loss": "Discriminator loss of the step's last D update, mean over the global batch (hinge: "
              "mean relu(1 − D(x)) + mean relu(1 + D(G(z))))." + _THIS_STEP,
    "g_loss": "Generator loss of the step's G update, mean over the global batch (hinge: −mean D(G(z)))."
              + _THIS_STEP,
    "d_real": "Mean D logit on the real images of the step's last D update." + _THIS_STEP,
    "d_fake": "Mean D logit on the generated images of the step's last D update." + _THIS_STEP,
    "d_real_active": "Fraction of the real images with D(x) < 1: the hinge term still pushes them up. "
                     "Near 0: D separates the real data with margin." + _THIS_STEP,
    "d_fake_active": "Fraction of the generated images with D(G(z)) > −1: the hinge term still pushes "
                     "them down. Near 0: D rejects every fake with margin (G gets no help)." + _THIS_STEP,
    "d_grad_norm": "Global L2 norm of D's gradient in the step's last D update (on N replicas: the mean "
                   "over replicas of each replica's own-batch gradient norm, ≥ the global one)." + _THIS_STEP,
    "g_grad_norm": "Global L2 norm of G's gradient in the step's G update (on N replicas: the mean over "
                   "replicas of each replica's own-batch gradient norm, ≥ the global one)." + _THIS_STEP,
    "g_sigma_max": "Largest σ = ‖W u‖ (spectral norm estimate of the raw kernel, from the stored power-"
                   "iteration vector) among G's spectrally normalised layers, after the step.",
    "g_sigma_mean": "Mean σ = ‖W u‖ over G's spectrally normalised layers, after the step.",
    "d_sigma_max": "Largest σ = ‖W u‖ among D's spectrally normalised layers (its projection embedding "
                   "included), after the step.",
    "d_sigma_mean": "Mean σ = ‖W u‖ over D's spectrally normalised layers, after the step.",
    "g_lr": "G's learning rate at the step.",
    "d_lr": "D's learning rate at the step.",
    "img_per_s": "Real images consumed by D per second of train step (callbacks, sampling and evaluation "
                 "excluded), the mean over the steps since the previous point (log_every steps; the "
                 "first point after a (re)start includes tracing the step).",
}


def describe(tag: str) -> str:
    """The description of a train/ tag (γ tags are named `<g|d>_gamma_<size>`)."""
    if tag in DESCRIPTIONS:
        return DESCRIPTIONS[tag]
    network, _, size = tag.partition("_gamma_")
    if size and network in ("g", "d"):
        return (f"γ of the {'generator' if network == 'g' else 'discriminator'}'s self-attention at "
                f"{size}×{size} (0 at init: how much of the attention branch the block adds), after the step.")
    return ""


class ScalarSummaries(keras.callbacks.Callback):
    """Every `every` steps writes to TensorBoard, each tag with its description (`DESCRIPTIONS`):
    the step's own train-step values (losses, D outputs, hinge active fractions, gradient norms),
    `model.health_scalars()` (attention γ, σ summaries, learning rates; read from the weights only
    here, not in the train step), and the train step's img/s over the window from `throughput`."""

    def __init__(self, writer, every, throughput=None):
        super().__init__()
        self.writer, self.every, self.throughput = writer, every, throughput
        self._health = None

    def values(self, logs):
        """{tag: float} written for a step whose fit logs are `logs`."""
        values = {name: float(value) for name, value in (logs or {}).items() if name != "img_per_s"}
        if self._health is None:  # traced once; reads the variables, no collective under tf.distribute
            self._health = tf.function(self.model.health_scalars)
        values.update({name: float(value) for name, value in self._health().items()})
        rate = self.throughput.pop_window() if self.throughput else (logs or {}).get("img_per_s")
        if rate is not None:
            values["img_per_s"] = float(rate)
        return values

    def on_train_batch_end(self, batch, logs=None):
        step = current_step(self.model)
        if step % self.every == 0:
            with self.writer.as_default(step=step):
                for name, value in self.values(logs).items():
                    tf.summary.scalar(name, value, description=describe(name))
            self.writer.flush()


def write_session_start(step: int) -> None:
    """Writes a SessionLog START event at `step` to the default summary writer.

    TensorBoard reads it as a restart (every START after a run's first one) and drops the events of the
    earlier files from `step` on: the steps a killed process logged after its last checkpoint, which the
    resumed process logs again, are then shown once, the resumed values, in order. (TF2's summary API
    has no public call for a raw Event; `import_event` is what `tf.summary` itself is built on.)"""
    from tensorflow.python.ops import summary_ops_v2

    event = event_pb2.Event(step=int(step), wall_time=time.time(),
                            session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START))
    summary_ops_v2.import_event(tf.constant(event.SerializeToString()))


class ConfigSummary(keras.callbacks.Callback):
    """At the step training (re)starts: a session START event for the next step (`write_session_start`: a
    resume after a kill is not shown twice in TensorBoard), and the run's resolved config as the
    `config` text summary."""

    def __init__(self, writer, config_json):
        super().__init__()
        self.writer, self.config_json = writer, config_json

    def on_train_begin(self, logs=None):
        step = current_step(self.model)
        with self.writer.as_default(step=step):
            write_session_start(step + 1)
            tf.summary.text("config", f"```\n{self.config_json}\n```",
                            description="The resolved config of the run (config.json), at each (re)start.")
        self.writer.flush()


class ProgressBar(keras.callbacks.ProgbarLogger):
    """Keras' progress bar showing this step's losses, D outputs and img/s (the health scalars go to
    TensorBoard only, so the line stays short)."""

    SHOWN = ("d_loss", "g_loss", "d_real", "d_fake", "img_per_s")

    def _shown(self, logs):
        return {name: logs[name] for name in self.SHOWN if name in (logs or {})}

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, self._shown(logs))

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, self._shown(logs))


class EMAStatistics(keras.callbacks.Callback):
    """Recomputes the EMA generator's batch-norm statistics (standing statistics) on every step where
    something reads it in inference mode (`periods`: sample, checkpoint, evaluation cadences) and at the
    end; place it before those callbacks. The noise is fixed, so a resumed run stays exact. It runs
    through the model's strategy, one batch per replica: `num_batches` is rounded up to a multiple of the
    replica count (16 on 1, 2, 4, 8 or 16 replicas)."""

    def __init__(self, periods, z_dim, num_classes, num_batches=16, batch_size=64, seed=0):
        super().__init__()
        self.periods = [p for p in periods if p]
        self._noise = dict(z_dim=z_dim, num_classes=num_classes, num_batches=num_batches, batch_size=batch_size,
                           seed=seed)
        self.batches = None
        self.last_refreshed = None
        self._statistics = None

    def refresh(self):
        step = current_step(self.model)
        if step != self.last_refreshed:  # once per step: what was saved is what stays in memory
            if self._statistics is None:  # compiled once, kept
                strategy = self.model.distribute_strategy
                replicas = strategy.num_replicas_in_sync
                noise = dict(self._noise, num_batches=-(-self._noise["num_batches"] // replicas) * replicas)
                self.batches = noise_batches(**noise)
                self._statistics = StandingStatistics(self.model.ema_generator, strategy)
            self._statistics(self.batches)
            self.last_refreshed = step

    def on_train_batch_end(self, batch, logs=None):
        if any(current_step(self.model) % period == 0 for period in self.periods):
            self.refresh()

    def on_train_end(self, logs=None):
        self.refresh()


class SampleGrid(keras.callbacks.Callback):
    """Every `every` steps and at the end: a grid from the EMA generator on a fixed noise/label set,
    logged to TensorBoard (`ema_samples`) and written as `<directory>/step_<step>.png` (one row per
    shown class), and the attention maps of G's first attention layer as overlays (`ema_attention`,
    `attention_<step>.png`). The noise is a function of `seed` alone (drawn once, here): every frame
    of a run, a resumed one included, shows the same z and labels, so frames differ by the weights only.

    A sheet is not worth a run: a PNG that cannot be written (a full disk, a read-only samples/) is a
    warning naming its path, and training goes on. The write is atomic (a temporary name, then a
    rename; the temporary file is removed on failure), so no partial PNG is left, and the frame is still
    in TensorBoard's events when those can be written (if the disk is full, the events file and the next
    checkpoint then fail with errors naming their paths)."""

    DESCRIPTIONS = {
        "ema_samples": "EMA generator on a fixed set of z (one row per shown class); the same z in every frame "
                       "and after a resume, so the frames differ by the weights only.",
        "ema_attention": "Attention maps of the EMA generator's first self-attention layer for 4 of the fixed "
                         "samples: for each marked query position, where it attends.",
    }

    def __init__(self, writer, directory, every, z_dim, num_classes, per_class=8, max_rows=10, seed=0):
        super().__init__()
        self.writer, self.directory, self.every = writer, directory, every
        rows = min(max(num_classes, 1), max_rows)
        classes = np.linspace(0, max(num_classes - 1, 0), rows).round().astype(np.int32)
        self.rows = rows
        self.labels = np.repeat(classes, per_class)
        self.z = np.random.default_rng(seed).standard_normal((rows * per_class, z_dim)).astype(np.float32)
        self.last_written = None
        self._calls = None

    def _forward(self, return_attention=False):
        """The EMA generator in inference mode through the model's strategy (compiled once, kept)."""
        if self._calls is None:
            ema, strategy = self.model.ema_generator, self.model.distribute_strategy
            self._calls = {
                False: distributed_call(lambda z, labels: ema((z, labels), training=False), strategy),
                True: distributed_call(lambda z, labels: ema((z, labels), training=False, return_attention=True),
                                       strategy)}
        return self._calls[return_attention]

    def grid(self):
        images = self._forward()(self.z, self.labels)
        return image_grid(to_uint8(images), self.rows)

    def on_train_batch_end(self, batch, logs=None):
        step = current_step(self.model)
        if step % self.every == 0:
            self.write(step)

    def on_train_end(self, logs=None):
        self.write(current_step(self.model))

    def attention_figure(self):
        """Paper figure-1 overlays of G's first attention layer for 4 of the fixed samples, or None."""
        if not self.model.ema_generator.attention_layers:
            return None
        pick = np.linspace(0, len(self.labels) - 1, 4).astype(int)
        return attention_figure(self.model.ema_generator, self.z[pick], self.labels[pick],
                                forward=self._forward(return_attention=True))

    def write(self, step):
        if step == self.last_written:  # the last step of a run is also a multiple of `every`
            return
        self.last_written = step
        images = {"ema_samples": self.grid(), "ema_attention": self.attention_figure()}
        with self.writer.as_default(step=step):
            for name, image in images.items():
                if image is None:
                    continue
                if self.directory:
                    kind = "step" if name == "ema_samples" else "attention"
                    self.save_sheet(run_dir.sample_grid_file(self.directory, kind, step), image)
                tf.summary.image(name, image[None], max_outputs=1, description=self.DESCRIPTIONS[name])
        self.writer.flush()


    @staticmethod
    def save_sheet(path, image):
        """Writes one sheet; True if it was written, False (after a warning naming `path`) if it could not be."""
        try:
            save_png(path, image)
        except (OSError, tf.errors.OpError) as error:
            reason = " ".join(str(error).split())[:400]
            print(f"WARNING: could not write the sample sheet {path} ({type(error).__name__}: {reason}); "
                  "training continues without it (no partial file is left).", file=sys.stderr, flush=True)
            return False
        return True


class Checkpointing(keras.callbacks.Callback):
    """Saves every `every` steps and when training ends (including a stop after a signal)."""

    def __init__(self, manager, every):
        super().__init__()
        self.manager, self.every = manager, every
        self.last_saved = None

    def save(self):
        step = current_step(self.model)
        if step != self.last_saved:
            self.manager.save()
            self.last_saved = step

    def on_train_batch_end(self, batch, logs=None):
        if current_step(self.model) % self.every == 0:
            self.save()

    def on_train_end(self, logs=None):
        self.save()


class StopOnSignal(keras.callbacks.Callback):
    """Turns SIGTERM/SIGINT (a preemption notice, Ctrl-C) into a clean stop after the current step;
    `Checkpointing.on_train_end` then saves, and the process can exit 0. A second signal exits at once
    (`sagan_tf.runtime.stop_signals`: status 128 + signum, the lock released; the last complete checkpoint stays).
    Before and after `fit`, `sagan_tf.runtime.stop_signals` handles them."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        super().__init__()
        self.received = None
        self._previous = {}

    def _handle(self, signum, frame):
        stop_signals.note_received(signum)  # exits at once if this is the second signal
        self.received = signal.Signals(signum).name

    def on_train_begin(self, logs=None):
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def on_train_batch_end(self, batch, logs=None):
        if self.received:
            print(f"\n{self.received} received at step {current_step(self.model)}: checkpointing and stopping.",
                  flush=True)
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
