"""Checkpoints of a SAGAN run: everything needed for an exact resume, never non-finite weights.

What is saved: G, D, the EMA G (weights, BN statistics, spectral-norm u vectors) and both Adam
optimizers (slots and iteration counters: G's counter is the run's step). The data position needs no
state: the pipelines are a deterministic function of (seed, step). TF writes checkpoint data to
temporary files and updates the `checkpoint` index file atomically, so a killed save leaves the
previous checkpoint as the latest one.

Restoring survives a damaged directory (:meth:`CheckpointManager.restore_latest`):

* every candidate (the ones the index lists and every ``ckpt-<N>.index`` on disk, newest first) is
  read in full before anything is restored; one that cannot be read (a data file cut short:
  ``IndexError: Read less bytes than requested``; flipped bytes: a checksum ``DataLossError``; a
  missing data file) is reported and skipped, and the newest readable one is restored;
* the skipped files are moved, never deleted, to ``checkpoints/unreadable/<time>/`` (same names), so
  that neither TF's ``max_to_keep`` garbage collection nor a new save at the same step number (a run
  continuing from ckpt-6 saves ckpt-9 again) touches them, and ``tf.train.latest_checkpoint`` (the
  export, other tools) never picks them;
* a missing or unparsable ``checkpoint`` index file is rebuilt from the ``ckpt-*`` files (listing the
  readable ones), so a run never silently starts again from step 0 over its own checkpoints.
"""
from __future__ import annotations

import os
import time

import keras
import ml_collections
import numpy as np
import tensorflow as tf

from sagan_tf.models.architecture import RESUME_FIXED_FIELDS
from sagan_tf.run import files, run_dir
from sagan_tf.run.run_dir import CHECKPOINT_INDEX, UNREADABLE_DIR, checkpoint_files, unreadable_reason

__all__ = ["NonFiniteError", "CheckpointManager", "make_checkpoint", "non_finite_weights", "check_resume_config"]


class NonFiniteError(RuntimeError):
    """Raised when losses or weights stop being finite; nothing is saved from that state."""


def make_checkpoint(model: keras.Model) -> tf.train.Checkpoint:
    return tf.train.Checkpoint(generator=model.generator, discriminator=model.discriminator,
                               g_optimizer=model.g_optimizer, d_optimizer=model.d_optimizer,
                               **{run_dir.EMA_GENERATOR: model.ema_generator})


def non_finite_weights(model: keras.Model) -> list[str]:
    """Names of G/D/EMA weights holding NaN or Inf (empty when all are finite)."""
    bad = []
    for network in (model.generator, model.discriminator, model.ema_generator):
        for weight in network.weights:
            if not np.all(np.isfinite(weight.numpy())):
                bad.append(weight.path)
    return bad


def _step_of(prefix):
    """The step of a checkpoint prefix, -1 for a name without one (sorts first)."""
    step = run_dir.step_of(prefix)
    return -1 if step is None else step


class CheckpointManager:
    """Saves and restores a SAGAN's checkpoint under `directory`, keeping the last `keep`.

    `repair=False` (non-chief workers) never changes the directory: it only reads, and skips what it
    cannot read.
    """

    def __init__(self, model, directory, keep=3, repair=True, log=print):
        self.model = model
        self.directory = directory
        self.keep = keep
        self.repair = repair
        self.log = log
        self._checkpoint = make_checkpoint(model)
        self._tf_manager = None  # created on first use, from the index as restore_latest left it
        self.restored = None

    @property
    def _manager(self):
        if self._tf_manager is None:
            self._tf_manager = tf.train.CheckpointManager(self._checkpoint, self.directory, max_to_keep=self.keep)
        return self._tf_manager

    @property
    def latest(self):
        return self._manager.latest_checkpoint

    def _candidates(self):
        """(prefixes newest first, the index's state or None, whether the index file is missing/unreadable)."""
        on_disk = checkpoint_files(self.directory)
        state, index_broken = None, False
        if files.exists(files.join(self.directory, CHECKPOINT_INDEX)):
            try:
                state = tf.train.get_checkpoint_state(self.directory)
            except (ValueError, tf.errors.OpError, UnicodeDecodeError):
                state = None
            index_broken = state is None
        else:
            index_broken = bool(on_disk)
        listed = {}
        if state is not None:
            for path in list(state.all_model_checkpoint_paths) + [state.model_checkpoint_path]:
                if path:
                    path = path if files.is_uri(path) or os.path.isabs(path) else files.join(self.directory, path)
                    listed[_step_of(path)] = path
        candidates = {**listed, **on_disk}
        return [candidates[step] for step in sorted(candidates, reverse=True)], state, index_broken

    def _move_aside(self, prefix, reason):
        """Moves the files of `prefix` to unreadable/<time>/ (never deletes them); returns the new place."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        target = files.join(self.directory, UNREADABLE_DIR, f"{stamp}-{os.getpid()}")
        files.makedirs(target)
        base = os.path.basename(prefix)
        moved = []
        for name in files.listdir(self.directory):
            if name == base + ".index" or name.startswith(base + ".data-"):
                tf.io.gfile.rename(files.join(self.directory, name), files.join(target, name), overwrite=True)
                moved.append(name)
        files.atomic_write_text(files.join(target, run_dir.UNREADABLE_REASON_FILE),
                                f"{base}: {reason}\nmoved here at {stamp} by pid {os.getpid()}; files: {moved}\n")
        return files.join(target, base)

    def _write_index(self, readable):
        """Writes the `checkpoint` index file listing `readable` (prefixes, oldest first), atomically, with
        paths relative to the directory as tf.train.CheckpointManager writes them."""
        names = [os.path.basename(prefix) for prefix in readable]
        # The save times let max_to_keep garbage-collect them later (without them TF keeps them forever).
        times = [tf.io.gfile.stat(prefix + ".index").mtime_nsec / 1e9 for prefix in readable]
        text = (f'model_checkpoint_path: "{names[-1]}"\n'
                + "".join(f'all_model_checkpoint_paths: "{n}"\n' for n in names)
                + "".join(f"all_model_checkpoint_timestamps: {t!r}\n" for t in times)
                + f"last_preserved_timestamp: {min(times) - 1.0!r}\n")
        files.atomic_write_text(files.join(self.directory, CHECKPOINT_INDEX), text)

    def restore_latest(self):
        """Restores the newest readable checkpoint if there is one; returns the step it holds (0 if none).

        Unreadable newer checkpoints are reported and moved aside (with `repair`); a missing index is
        rebuilt. Raises RuntimeError if checkpoint files exist but none can be read (never step 0 over
        them), ValueError if the newest readable one does not fit the model (another config).
        """
        candidates, state, index_broken = self._candidates()
        if not candidates:
            self._tf_manager = None
            return 0
        if index_broken:
            self.log(f"{self.directory}: the '{CHECKPOINT_INDEX}' index file is missing or unreadable although "
                     f"{len(candidates)} checkpoint(s) exist ({', '.join(os.path.basename(c) for c in candidates)}); "
                     + ("rebuilding it from them." if self.repair else "using them (not rebuilding: not the chief)."))
        chosen, skipped = None, []
        for prefix in candidates:
            reason = unreadable_reason(prefix)
            if reason is None:
                chosen = prefix
                break
            skipped.append((prefix, reason))
        for prefix, reason in skipped:
            where = self._move_aside(prefix, reason) if self.repair else None
            self.log(f"checkpoint {prefix} is unreadable ({reason}); "
                     + (f"moved it to {where} (kept, not deleted); " if where else "")
                     + (f"falling back to {os.path.basename(chosen)}." if chosen else "no older checkpoint to fall back to."))
        if chosen is None:
            raise RuntimeError(f"{self.directory} holds checkpoints but none can be read: "
                               f"{[(os.path.basename(p), r) for p, r in skipped]}. Nothing was restored or "
                               "overwritten; inspect or remove them (moved to "
                               f"{files.join(self.directory, UNREADABLE_DIR)}) to start again from step 0.")
        listed_latest = state.model_checkpoint_path if state is not None else None
        if self.repair and (index_broken or skipped or (listed_latest and
                                                        _step_of(listed_latest) != _step_of(chosen))):
            readable = [p for p in reversed(candidates) if _step_of(p) <= _step_of(chosen)
                        and p not in dict(skipped) and files.exists(p + ".index")]
            self._write_index(readable)
        try:
            self._checkpoint.restore(chosen).assert_existing_objects_matched()
        except (AssertionError, ValueError) as error:
            raise ValueError(f"checkpoint {chosen} does not fit this model (was the run trained with another "
                             f"config?): {str(error).splitlines()[0][:500]}") from error
        self._tf_manager = None  # re-read the (possibly rebuilt) index before the next save
        self.restored = chosen
        return int(self.model.step.numpy())

    def save(self):
        """Saves at the current step; refuses non-finite weights and explains a failed write."""
        step = int(self.model.step.numpy())
        bad = non_finite_weights(self.model)
        if bad:
            raise NonFiniteError(f"step {step}: non-finite weights in {bad[:5]}; not saving over the last good "
                                 f"checkpoint ({self.latest}).")
        before = set(files.listdir(self.directory)) if files.isdir(self.directory) else set()
        try:
            return self._manager.save(checkpoint_number=step)
        except (OSError, tf.errors.OpError) as error:
            removed = self._remove_partial_save(step, before)
            raise OSError(f"could not write the step-{step} checkpoint to {self.directory} ({error}); the "
                          f"previous checkpoint {self.latest} is unchanged"
                          + (f"; removed the failed save's partial files {removed}." if removed else ".")) from error

    def _remove_partial_save(self, step, before):
        """Removes what a failed save of `step` wrote (TF leaves its ``ckpt-<step>_temp/`` shards behind, on a
        full disk the space that is needed most); names that existed before the save are never touched."""
        base = f"{run_dir.CHECKPOINT_PREFIX}-{step}"
        removed = []
        for name in sorted(set(files.listdir(self.directory)) - before):
            if name.startswith(base + "_temp") or name == base + ".index" or name.startswith(base + ".data-"):
                path = files.join(self.directory, name)
                try:
                    if files.isdir(path):
                        tf.io.gfile.rmtree(path)
                    else:
                        files.remove(path)
                    removed.append(name)
                except (OSError, tf.errors.OpError):
                    pass
        return removed


# --- resuming with another config ------------------------------------------------------------------------



def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def check_resume_config(config: ml_collections.ConfigDict, model_dir: str) -> None:
    """Raises ConfigMismatchError naming every model field that differs from the run's config.json, when
    `model_dir` holds checkpoints. Reads only."""
    stored = run_dir.recorded_config(model_dir)
    if stored is None:
        return
    path = run_dir.config_file(model_dir)
    differing = [f"{name}: the run has {_plain(stored.get(name))!r}, this config {_plain(config[name])!r} "
                 f"(--config.{name})"
                 for name in RESUME_FIXED_FIELDS
                 if name in stored and name in config and _plain(stored[name]) != _plain(config[name])]
    if differing:
        raise run_dir.ConfigMismatchError(
            f"cannot resume {model_dir} with another model config; differing fields: {'; '.join(differing)}. "
            f"Its checkpoints hold the networks of {path}. Nothing in {model_dir} was changed: drop the override(s) "
            "to resume, or use another --model_dir for the new config.")
