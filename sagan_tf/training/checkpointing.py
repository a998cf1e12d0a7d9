"""Checkpoints of a SAGAN run: everything needed for an exact resume, never non-finite weights.

What is saved: G, D, the EMA G (weights, BN statistics, spectral-norm u vectors) and both Adam
optimizers (slots and iteration counters: G's counter is the run's step). The data position needs no
state: the pipelines are a deterministic function of (seed, step). TF writes checkpoint data to
temporary files and updates the `checkpoint` index file atomically, so a killed save leaves the
previous checkpoint as the latest one.
"""
import numpy as np
import tensorflow as tf


class NonFiniteError(RuntimeError):
    """Raised when losses or weights stop being finite; nothing is saved from that state."""


def make_checkpoint(model):
    return tf.train.Checkpoint(generator=model.generator, discriminator=model.discriminator,
                               ema_generator=model.ema_generator, g_optimizer=model.g_optimizer,
                               d_optimizer=model.d_optimizer)


def non_finite_weights(model):
    """Names of G/D/EMA weights holding NaN or Inf (empty when all are finite)."""
    bad = []
    for network in (model.generator, model.discriminator, model.ema_generator):
        for weight in network.weights:
            if not np.all(np.isfinite(weight.numpy())):
                bad.append(weight.path)
    return bad


class CheckpointManager:
    """Saves and restores a SAGAN's checkpoint under `directory`, keeping the last `keep`."""

    def __init__(self, model, directory, keep=3):
        self.model = model
        self.directory = directory
        self._checkpoint = make_checkpoint(model)
        self._manager = tf.train.CheckpointManager(self._checkpoint, directory, max_to_keep=keep)

    @property
    def latest(self):
        return self._manager.latest_checkpoint

    def restore_latest(self):
        """Restores the newest checkpoint if there is one; returns the step it holds (0 if none)."""
        if self.latest is None:
            return 0
        self._checkpoint.restore(self.latest).assert_existing_objects_matched()
        return int(self.model.step.numpy())

    def save(self):
        """Saves at the current step; refuses non-finite weights and explains a failed write."""
        step = int(self.model.step.numpy())
        bad = non_finite_weights(self.model)
        if bad:
            raise NonFiniteError(f"step {step}: non-finite weights in {bad[:5]}; not saving over the last good "
                                 f"checkpoint ({self.latest}).")
        try:
            return self._manager.save(checkpoint_number=step)
        except (OSError, tf.errors.OpError) as error:
            raise OSError(f"could not write the step-{step} checkpoint to {self.directory} ({error}); the "
                          f"previous checkpoint {self.latest} is unchanged.") from error
