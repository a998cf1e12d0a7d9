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
import os
import re
import shutil
import time

import numpy as np
import tensorflow as tf

from sagan_tf.files import atomic_write_bytes

CHECKPOINT_PREFIX = "ckpt"
INDEX_FILE = "checkpoint"
UNREADABLE_DIR = "unreadable"


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


def checkpoint_files(directory):
    """{step: prefix} of the complete-looking checkpoints (``ckpt-<N>.index`` present) in `directory`."""
    found = {}
    for name in (os.listdir(directory) if os.path.isdir(directory) else []):
        match = re.fullmatch(rf"{CHECKPOINT_PREFIX}-(\d+)\.index", name)
        if match:
            found[int(match.group(1))] = os.path.join(directory, name[:-len(".index")])
    return found


def unreadable_reason(prefix):
    """None if every tensor of checkpoint `prefix` reads back (checksums verified), else why not."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (IndexError, ValueError, OSError, tf.errors.OpError) as error:
        return f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"
    return None


def _step_of(prefix):
    match = re.search(rf"{CHECKPOINT_PREFIX}-(\d+)$", prefix)
    return int(match.group(1)) if match else -1


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
        if os.path.exists(os.path.join(self.directory, INDEX_FILE)):
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
                    path = path if os.path.isabs(path) else os.path.join(self.directory, path)
                    listed[_step_of(path)] = path
        candidates = {**listed, **on_disk}
        return [candidates[step] for step in sorted(candidates, reverse=True)], state, index_broken

    def _move_aside(self, prefix, reason):
        """Moves the files of `prefix` to unreadable/<time>/ (never deletes them); returns the new place."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        target = os.path.join(self.directory, UNREADABLE_DIR, f"{stamp}-{os.getpid()}")
        os.makedirs(target, exist_ok=True)
        base = os.path.basename(prefix)
        moved = []
        for name in os.listdir(self.directory):
            if name == base + ".index" or name.startswith(base + ".data-"):
                os.replace(os.path.join(self.directory, name), os.path.join(target, name))
                moved.append(name)
        with open(os.path.join(target, "REASON.txt"), "w") as f:
            f.write(f"{base}: {reason}\nmoved here at {stamp} by pid {os.getpid()}; files: {moved}\n")
        return os.path.join(target, base)

    def _write_index(self, readable):
        """Writes the `checkpoint` index file listing `readable` (prefixes, oldest first), atomically, with
        paths relative to the directory as tf.train.CheckpointManager writes them."""
        names = [os.path.basename(prefix) for prefix in readable]
        # The save times let max_to_keep garbage-collect them later (without them TF keeps them forever).
        times = [os.path.getmtime(prefix + ".index") for prefix in readable]
        text = (f'model_checkpoint_path: "{names[-1]}"\n'
                + "".join(f'all_model_checkpoint_paths: "{n}"\n' for n in names)
                + "".join(f"all_model_checkpoint_timestamps: {t!r}\n" for t in times)
                + f"last_preserved_timestamp: {min(times) - 1.0!r}\n")
        atomic_write_bytes(os.path.join(self.directory, INDEX_FILE), text.encode())

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
            self.log(f"{self.directory}: the '{INDEX_FILE}' index file is missing or unreadable although "
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
                               f"{os.path.join(self.directory, UNREADABLE_DIR)}) to start again from step 0.")
        listed_latest = state.model_checkpoint_path if state is not None else None
        if self.repair and (index_broken or skipped or (listed_latest and
                                                        _step_of(listed_latest) != _step_of(chosen))):
            readable = [p for p in reversed(candidates) if _step_of(p) <= _step_of(chosen)
                        and p not in dict(skipped) and os.path.exists(p + ".index")]
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
        try:
            return self._manager.save(checkpoint_number=step)
        except (OSError, tf.errors.OpError) as error:
            raise OSError(f"could not write the step-{step} checkpoint to {self.directory} ({error}); the "
                          f"previous checkpoint {self.latest} is unchanged.") from error


# --- resuming with another config ------------------------------------------------------------------------

# The model fields (sagan_tf.models.architecture.MODEL_FIELDS) a resume must keep: they decide the
# variables and what the networks compute. `init` (only used before the first checkpoint) and `sync_bn`
# (how BN statistics are reduced in training) may change.
RESUME_FIXED_FIELDS = ("resolution", "ch", "z_dim", "num_classes", "image_channels", "g_attention", "d_attention",
                       "pooled_attention")


class ConfigMismatchError(ValueError):
    """The config does not match the run whose checkpoints are in model_dir."""


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def check_resume_config(config, model_dir):
    """Raises ConfigMismatchError naming every model field that differs from the run's config.json, when
    `model_dir` holds checkpoints (a run without any may change anything). Reads only."""
    import json
    checkpoints = os.path.join(model_dir, "checkpoints")
    if not (checkpoint_files(checkpoints) or os.path.exists(os.path.join(checkpoints, INDEX_FILE))):
        return
    path = os.path.join(model_dir, "config.json")
    try:
        with open(path) as f:
            stored = json.load(f)
    except FileNotFoundError:
        return  # nothing to compare with; restore still checks the variables
    except (OSError, ValueError) as error:
        raise ConfigMismatchError(f"{path} cannot be read ({error}); it describes the checkpoints in {checkpoints}. "
                                  "Nothing was changed; repair or remove it.") from error
    differing = [f"{name}: the run has {_plain(stored.get(name))!r}, this config {_plain(config[name])!r} "
                 f"(--config.{name})"
                 for name in RESUME_FIXED_FIELDS
                 if name in stored and name in config and _plain(stored[name]) != _plain(config[name])]
    if differing:
        raise ConfigMismatchError(
            f"cannot resume {model_dir} with another model config; differing fields: {'; '.join(differing)}. "
            f"Its checkpoints hold the networks of {path}. Nothing in {model_dir} was changed: drop the override(s) "
            "to resume, or use another --model_dir for the new config.")
