"""Evaluation during training: a Keras callback that scores the EMA generator every `every` G steps.

Interface (three small pieces, each replaceable in tests):

* ``evaluate_fn(generator) -> {key: float}`` -- scores a generator. Keys follow
  :func:`sagan_tf.evaluation.runner.metric_key` (``"fid/<network name>"``, ...).
  :func:`make_evaluate_fn` builds the usual one from a feature network and a reference.
  :func:`build_periodic_evaluation` assembles all three from a run's config (what the training
  loop calls).
* ``writer`` -- a ``tf.summary`` writer; every metric is written as ``eval/<key>`` at the step. The
  training loop passes its ``train/`` writer, so FID and conditional accuracy plot against step next
  to the losses in the same TensorBoard run (``train``, tags ``eval/fid/<network>``, ...).
* ``best_dir_fn(step, metrics)`` -- called exactly when the monitored metric (FID by default,
  lower is better) improves on the best seen so far; it must persist the current weights.
  :class:`BestCheckpointSaver` is the usual one: it writes a full checkpoint of the run into its
  own directory (``<model_dir>/best``), keeps only that one, and records step and metrics in
  ``best.json`` (every evaluation also goes to ``<model_dir>/eval_history.jsonl``), from which a
  resumed run reads the best value back (``best=saver.best_value()``)
  so a worse evaluation after a restart does not replace a better checkpoint.

The callback reads the step from ``self.model.step`` and evaluates ``self.model.ema_generator``.
"""
from __future__ import annotations

import contextlib
import json
import math

import keras
import numpy as np
import tensorflow as tf

from sagan_tf.data.real_images import canonical_dataset_name
from sagan_tf.evaluation import runner
from sagan_tf.evaluation.features import load_feature_network
from sagan_tf.evaluation.runner import LOWER_IS_BETTER, evaluate_generator, split_metric_key
from sagan_tf.models import Generator
from sagan_tf.run import files, run_dir
from sagan_tf.runtime.host_step import current_step
from sagan_tf.sampling.sheets import as_sample_fn

__all__ = ["PeriodicEvaluation", "BestCheckpointSaver", "make_evaluate_fn", "build_periodic_evaluation"]

HISTORY_FILE = run_dir.EVAL_HISTORY_FILE


def _monitored_key(metrics: dict, metric: str | None) -> str:
    if metric is not None:
        if metric not in metrics:
            raise KeyError(f"monitored metric {metric!r} is not among the evaluation's {sorted(metrics)}")
        return metric
    fid_keys = [key for key in metrics if key == "fid" or key.startswith("fid/")]
    if len(fid_keys) != 1:
        raise KeyError(f"cannot tell which FID to monitor among {sorted(metrics)}; pass metric=")
    return fid_keys[0]


def _summary(metrics: dict) -> str:
    """"fid 12.3, is 4.5 [network]" when every key names the same network, else "key value, ..."."""
    try:
        parts = [split_metric_key(key) + (value,) for key, value in metrics.items()]
    except ValueError:
        parts = None
    if parts and len({network for _, network, _ in parts}) == 1:
        return ", ".join(f"{metric} {value:.4g}" for metric, _, value in parts) + f" [{parts[0][1]}]"
    return ", ".join(f"{key} {value:.4g}" for key, value in metrics.items())


_METRIC_NAMES = {"fid": "FID (lower is better)", "is": "Inception Score", "is_std": "IS standard deviation",
                 "kid": "KID (lower is better)", "kid_std": "KID standard deviation", "precision": "k-NN precision",
                 "recall": "k-NN recall", "conditional_accuracy": "conditional accuracy (share of samples the "
                 "network classifies as the label they were generated for)"}


def _describe(key: str) -> str:
    """TensorBoard description of an ``eval/<key>`` scalar."""
    try:
        metric, network = split_metric_key(key)
    except ValueError:
        return f"{key} of the EMA generator (periodic evaluation)."
    return (f"{_METRIC_NAMES.get(metric, metric)} of the EMA generator's samples, with the feature network "
            f"{network!r} (periodic evaluation, every eval_every steps; also in eval_history.jsonl).")


def _lower_is_better(key: str) -> bool:
    try:
        return split_metric_key(key)[0] in LOWER_IS_BETTER
    except ValueError:
        return key in LOWER_IS_BETTER


class PeriodicEvaluation(keras.callbacks.Callback):
    """Every `every` G steps: evaluate the EMA generator, log to TensorBoard, save the best checkpoint.

    Args:
      every: evaluation period in G steps (evaluates when ``model.step % every == 0``).
      evaluate_fn: ``fn(generator) -> {key: float}``.
      writer: a ``tf.summary`` writer, or None for no TensorBoard logging.
      best_dir_fn: ``fn(step, metrics)`` saving the current weights as the best, or None.
      metric: the key to monitor; default the single ``"fid/..."`` key of the results.
      best: best value so far (e.g. read back from ``best.json`` when resuming); default none.
      higher_is_better: default inferred from the metric name (FID/KID lower, others higher).
      history_path: a JSON-lines file each evaluation appends ``{"step": ..., "metrics": {...}}`` to
        (what FID-vs-step plots read; a resumed run appends, readers keep the last line per step).

    After each evaluation ``self.history`` holds ``(step, metrics)`` pairs and ``self.best`` /
    ``self.best_step`` the best value and its step.
    """

    def __init__(self, every: int, evaluate_fn, writer=None, best_dir_fn=None, metric: str | None = None,
                 best: float | None = None, higher_is_better: bool | None = None, log_fn=print,
                 history_path: str | None = None):
        super().__init__()
        if int(every) < 1:
            raise ValueError(f"every must be a positive number of steps, got {every}")
        self.every = int(every)
        self.evaluate_fn, self.writer, self.best_dir_fn = evaluate_fn, writer, best_dir_fn
        self.metric, self.higher_is_better = metric, higher_is_better
        self.best = None if best is None or not math.isfinite(best) else float(best)
        self.best_step = None
        self.history = []
        self.log_fn = log_fn
        self.history_path = history_path
        self._last_step = None

    def _improves(self, key: str, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        higher = self.higher_is_better if self.higher_is_better is not None else not _lower_is_better(key)
        return value > self.best if higher else value < self.best

    def evaluate(self, step: int) -> dict:
        """Evaluate now at `step` (also usable outside `fit`); returns the metrics."""
        metrics = {key: float(value) for key, value in self.evaluate_fn(self.model.ema_generator).items()}
        self._last_step = step
        self.history.append((step, metrics))
        if self.writer is not None:
            with self.writer.as_default(step=step):
                for key, value in metrics.items():
                    tf.summary.scalar(f"eval/{key}", value, description=_describe(key))
            self.writer.flush()
        if self.history_path:  # rewritten whole through a temporary file: a reader never sees a torn record
            files.append_line(self.history_path, json.dumps({"step": int(step), "metrics": metrics}))
        key = _monitored_key(metrics, self.metric)
        improved = self._improves(key, metrics[key])
        if improved:
            self.best, self.best_step = metrics[key], step
            if self.best_dir_fn is not None:
                self.best_dir_fn(step, metrics)
        if self.log_fn:
            self.log_fn(f"\nstep {step} evaluation: {_summary(metrics)}" + (" (best so far)" if improved else ""))
        return metrics

    def on_train_batch_end(self, batch, logs=None):
        step = current_step(self.model)  # counted on the host during fit: no device read per step
        if step % self.every == 0 and step != self._last_step:
            self.evaluate(step)


class BestCheckpointSaver:
    """A ``best_dir_fn`` for :class:`PeriodicEvaluation`: keeps the best checkpoint in its own directory.

    ``saver(step, metrics)`` writes ``checkpoint`` (any ``tf.train.Checkpoint``, normally
    the same objects as the run's regular checkpoints, so it restores like one)
    as ``<directory>/ckpt-<step>``, deletes the previous best, then writes ``best.json`` with
    ``{"step", "metric", "value", "metrics", "checkpoint"}``. The evaluate CLI reads it with
    ``--checkpoint_dir=<model_dir>/best``.
    """

    def __init__(self, checkpoint: tf.train.Checkpoint, directory: str, metric: str | None = None):
        self.directory, self.metric = directory, metric
        self._manager = tf.train.CheckpointManager(checkpoint, directory, max_to_keep=1)

    @property
    def latest(self) -> str | None:
        """Prefix of the best checkpoint saved so far (None if none)."""
        return self._manager.latest_checkpoint

    @property
    def best_file(self) -> str:
        return run_dir.best_file(self.directory)

    def best_value(self) -> float | None:
        """The monitored value recorded in ``best.json``; None if there is none yet, or if it was
        recorded for another metric key than this saver's `metric` (e.g. another feature network)."""
        try:
            record = files.read_json(self.best_file)
            if self.metric is not None and record["metric"] != self.metric:
                return None
            return float(record["value"])
        except (FileNotFoundError, tf.errors.NotFoundError, KeyError, ValueError, TypeError):
            return None

    def __call__(self, step: int, metrics: dict) -> str:
        path = self._manager.save(checkpoint_number=int(step))
        key = _monitored_key(metrics, self.metric)
        record = {"step": int(step), "metric": key, "value": float(metrics[key]),
                  "metrics": {k: float(v) for k, v in metrics.items()}, "checkpoint": path.rstrip("/").rsplit("/", 1)[-1]}
        files.atomic_write_json(self.best_file, record, indent=2)
        return path


def make_evaluate_fn(config, feature_network, reference: dict, num_samples: int, batch_size: int = 100,
                     seed: int = 0, dataset_name: str | None = None, strategy=None, call=None):
    """``fn(generator) -> metrics`` that scores a float32 copy of the given (EMA) generator.

    The copy is built here, once: float32 whatever the training precision, refreshed with
    ``set_weights`` at each call, so evaluation neither runs in bfloat16 nor touches the training
    generator's state, and is traced only once. A fixed `seed` gives every evaluation the same noise
    and labels, so changes between steps come from the weights alone.

    Under a training strategy, pass it as `strategy` (the copy's variables are created in its scope)
    and `call`: ``call(fn) -> sample_fn`` running the row-wise ``fn(z, labels)`` through the strategy
    (the training run passes ``sagan_tf.runtime.replicas.distributed_call`` bound to it). Without them
    the copy lives on the default device and is called directly.
    """
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        copy = Generator(config, dtype="float32", name="eval_generator")
        copy.build()
    if call is None:
        sample_fn = as_sample_fn(copy)
    else:
        sample_fn = as_sample_fn(call(lambda z, labels: copy((z, labels), training=False)))
    z_dim, num_classes = int(config.z_dim), int(config.num_classes)

    def evaluate_fn(generator):
        copy.set_weights([np.asarray(w) for w in generator.get_weights()])
        return evaluate_generator(sample_fn, feature_network, reference, num_samples, batch_size, num_classes,
                                  z_dim=z_dim, seed=seed, dataset_name=dataset_name)

    return evaluate_fn


def build_periodic_evaluation(config, checkpoint: tf.train.Checkpoint, model_dir: str, writer,
                              data_dir: str | None = None, feature_network=None,
                              log_fn=print, strategy=None, call=None) -> PeriodicEvaluation:
    """The :class:`PeriodicEvaluation` a training run uses, from its config.

    Config fields read (sagan_tf.config has their defaults):
      eval_every: period in G steps (must be > 0 to call this).
      eval_samples: generated images per evaluation, and real images for the reference
        (capped at the split's size where it is known).
      eval_feature_network: "classifier:<dir>" | "savedmodel:<dir>" | "keras_inception:<h5>"
        (required unless `feature_network`, a spec string or a loaded network, is given).
      eval_reference_split: real split; None: "test" for Fashion-MNIST, else "train".
      eval_reference_cache: cache file/directory; None: ``<model_dir>/reference_stats``.
      eval_batch_size: images per generator / feature-network call.

    The reference statistics are computed (or loaded) here, before training starts. The best
    checkpoint (lowest FID) goes to ``<model_dir>/best``: :class:`BestCheckpointSaver` saves
    `checkpoint` there (the training run passes one over the same objects as its regular checkpoints,
    so the best one restores like them), and a resumed run starts from the best value recorded there.
    `strategy` and `call`: see :func:`make_evaluate_fn` (the generator's samples run through the
    strategy; the feature network runs on the default device).
    """
    every = int(config.eval_every or 0)
    if every < 1:
        raise ValueError(f"config.eval_every={every}: periodic evaluation needs a positive period")
    spec = feature_network or config.eval_feature_network
    if not spec:
        raise ValueError("config.eval_every > 0 needs config.eval_feature_network (e.g. "
                         "'classifier:/path/to/classifier_dir'; train one with python -m trainers.classifier)")
    network = load_feature_network(spec) if isinstance(spec, str) else spec
    num_samples, batch_size = int(config.eval_samples), int(config.eval_batch_size)
    reference, _, _ = runner.run_reference(config, network, model_dir, num_samples, num_samples, batch_size,
                                           split=config.eval_reference_split, cache=config.eval_reference_cache,
                                           data_dir=data_dir, log_fn=log_fn)
    evaluate_fn = make_evaluate_fn(config, network, reference, num_samples, batch_size,
                                   dataset_name=canonical_dataset_name(config.dataset), strategy=strategy,
                                   call=call)
    metric = runner.metric_key("fid", network.name)
    saver = BestCheckpointSaver(checkpoint, run_dir.best_dir(model_dir), metric=metric)
    return PeriodicEvaluation(every, evaluate_fn, writer, saver, metric=metric, best=saver.best_value(),
                              log_fn=log_fn, history_path=run_dir.eval_history_file(model_dir))
