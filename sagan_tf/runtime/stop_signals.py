"""SIGTERM / SIGINT for training processes, handled from process start (no TensorFlow imported here).

* Before training steps run (importing TF, building the model, restoring, preparing data, computing
  evaluation references) the first signal raises :class:`StopRequested`, a ``SystemExit(0)``: the
  stack unwinds through every ``finally`` (the run-directory lock is released, scratch directories
  removed) and the process exits 0. Nothing is lost: nothing was trained since the last checkpoint.
* While ``fit`` runs, ``callbacks.StopOnSignal`` owns the handlers: the first signal stops after the
  current step and checkpoints (exit 0).
* A second signal, at any time, exits at once with 128 + signum (143 for SIGTERM, 130 for SIGINT)
  after running the registered cleanups (the lock). Checkpoints are written atomically, so the last
  complete one stays usable. "Second" means after the first was handled (its message printed): Python
  records a pending signal as a flag, so two that both arrive during one TensorFlow call count as one.
* Inside :func:`deferred` (taking or releasing the run lock: `sagan_tf.runtime.lock_holding`) signals are recorded and handled on
  leaving it, so that a stop can never fall between "the lock file exists" and "the process knows it
  holds it" and leave the file behind.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Callable, Iterator, NoReturn

__all__ = ["StopRequested", "received", "force_exit", "note_received", "deferred", "install", "restore", "add_cleanup",
           "remove_cleanup"]

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_state = {"received": None, "deferring": False, "pending": []}
_cleanups = []


class StopRequested(SystemExit):
    """A stop signal arrived before training started (exit status 0)."""

    def __init__(self, name):
        super().__init__(0)
        self.signal_name = name

    def __str__(self):
        return f"{self.signal_name} received before training started"


def received() -> str | None:
    """The name of the first stop signal received ('SIGTERM', ...), or None."""
    return _state["received"]


def force_exit(signum: int) -> NoReturn:
    """Runs the cleanups and exits at once with 128 + signum (the second-signal path)."""
    name = signal.Signals(signum).name
    print(f"\n{name} received again: exiting now (status {128 + signum}); the last complete checkpoint is kept.",
          file=sys.stderr, flush=True)
    for cleanup in reversed(list(_cleanups)):
        try:
            cleanup()
        except Exception:  # exiting anyway
            pass
    os._exit(128 + signum)


def _handle(signum, frame):
    if _state["deferring"]:
        _state["pending"].append(signum)
        return
    name = signal.Signals(signum).name
    if _state["received"]:
        force_exit(signum)
    _state["received"] = name
    print(f"\n{name} received before training started: stopping cleanly (nothing is lost; rerun to resume). "
          "Send it again to exit at once.", file=sys.stderr, flush=True)
    raise StopRequested(name)


def note_received(signum: int) -> None:
    """Records a first signal handled elsewhere (StopOnSignal), so that a second one exits at once."""
    if _state["received"]:
        force_exit(signum)
    _state["received"] = signal.Signals(signum).name


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A critical section: a signal arriving inside is handled (as above) once it is left.

    Python runs a handler between any two bytecodes, in the main thread, whichever thread the kernel
    delivered the signal to; blocking it with ``pthread_sigmask`` would not stop that once TensorFlow's
    threads exist, so the deferral is done here, in the handler."""
    outer = _state["deferring"]
    _state["deferring"] = True
    try:
        yield
    finally:
        _state["deferring"] = outer
        if not outer and _state["pending"]:
            pending, _state["pending"] = _state["pending"], []
            for signum in pending[:-1]:
                note_received(signum)  # a second one among them exits at once
            _handle(pending[-1], None)


def install() -> dict:
    """Installs the handlers (main thread only; elsewhere a no-op); returns the previous ones for :func:`restore`."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    _state["received"], _state["pending"] = None, []
    return {sig: signal.signal(sig, _handle) for sig in SIGNALS}


def restore(previous: dict) -> None:
    if threading.current_thread() is threading.main_thread():
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def add_cleanup(function: Callable[[], None]) -> None:
    _cleanups.append(function)


def remove_cleanup(function: Callable[[], None]) -> None:
    if function in _cleanups:
        _cleanups.remove(function)

