"""Holding a run directory's lock (`sagan_tf.run.run_lock`) through stop signals, without TensorFlow.

A trainer CLI takes the lock first, before TensorFlow is imported and before its config is resolved
(which may scan a large image folder), so that a second trainer on a model_dir another one holds is
refused within about a second, naming the holder. `train` then finds the lock held by this process and
keeps it (`holding_run_lock` is re-entrant for the process that holds it).

Only the chief holds the lock. Before TensorFlow exists the chief is known from the strategy's name and
`TF_CONFIG` alone (`is_chief_task`), by the rule `sagan_tf.runtime.cluster.is_chief` applies to the
strategy it will get.
"""
from __future__ import annotations

import contextlib
import json
import os
from typing import Iterator

from sagan_tf.run import run_lock  # the standard library only; TensorFlow only for a URI
from sagan_tf.runtime import stop_signals

__all__ = ["holding_run_lock", "holding_as_chief", "is_chief_task"]


@contextlib.contextmanager
def holding_run_lock(model_dir, log=None) -> Iterator[run_lock.RunLock]:
    """Holds the run lock of `model_dir` for the body; released on any exit, including a stop signal that
    arrives while the lock is being taken (it is handled once the lock is held, so the release below sees
    it) and a second signal's forced exit (a registered cleanup).

    When this process holds the lock already (a trainer CLI takes it before importing TensorFlow, then
    calls `train`, which holds it for the run), the body runs under that lock, which stays held: its
    outer holder releases it."""
    already = run_lock.held_lock(model_dir)
    if already is not None:
        yield already
        return
    lock = run_lock.RunLock(model_dir, log=log)
    try:
        with stop_signals.deferred():
            lock.acquire()
            stop_signals.add_cleanup(lock.release)
        yield lock
    finally:
        with stop_signals.deferred():
            stop_signals.remove_cleanup(lock.release)
            lock.release()


def is_chief_task(tf_config: str | None, strategy: str) -> bool:
    """Whether this process is the chief, from the --strategy name and TF_CONFIG's text alone. Only
    multi_worker_mirrored reads TF_CONFIG's cluster; any other strategy runs one chief process."""
    if strategy != "multi_worker_mirrored" or not tf_config:
        return True
    try:
        spec = json.loads(tf_config)
    except ValueError:
        return True  # TensorFlow reports a malformed TF_CONFIG itself
    cluster, task = spec.get("cluster") or {}, spec.get("task") or {}
    if not cluster:
        return True
    task_type, task_id = task.get("type"), int(task.get("index", 0) or 0)
    return task_type in ("chief", None) or (task_type == "worker" and task_id == 0 and "chief" not in cluster)


@contextlib.contextmanager
def holding_as_chief(model_dir, strategy: str) -> Iterator[run_lock.RunLock | None]:
    """`<model_dir>/.lock` held for the body when this process is the chief (None otherwise); a model_dir
    that taking the lock created is removed again if nothing was written into it (a bad flag found after
    the lock was taken leaves nothing behind)."""
    if not is_chief_task(os.environ.get("TF_CONFIG"), strategy):
        yield None
        return
    created = _first_missing_directory(model_dir)
    try:
        with holding_run_lock(model_dir) as lock:
            yield lock
    finally:
        if created is not None:
            _remove_if_empty(model_dir, created)


def _first_missing_directory(path):
    """The outermost directory of local `path` that does not exist yet (None if it exists, or for a URI)."""
    if "://" in str(path) and not str(path).startswith("file://"):
        return None
    directory, missing = os.path.abspath(str(path).removeprefix("file://")), None
    while not os.path.isdir(directory) and directory != os.path.dirname(directory):
        missing, directory = directory, os.path.dirname(directory)
    return missing


def _remove_if_empty(path, outermost):
    """Removes the empty directories from `path` up to `outermost` (what taking the lock created)."""
    directory = os.path.abspath(str(path).removeprefix("file://"))
    while True:
        try:
            os.rmdir(directory)
        except OSError:  # not empty (the run wrote something), or gone
            return
        if directory == outermost:
            return
        directory = os.path.dirname(directory)
