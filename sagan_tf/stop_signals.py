"""SIGTERM / SIGINT for training processes, handled from process start (no TensorFlow imported here).

* Before training steps run (importing TF, building the model, restoring, preparing data, computing
  evaluation references) the first signal raises :class:`StopRequested`, a ``SystemExit(0)``: the
  stack unwinds through every ``finally`` (the run-directory lock is released, scratch directories
  removed) and the process exits 0. Nothing is lost: nothing was trained since the last checkpoint.
* While ``fit`` runs, ``callbacks.StopOnSignal`` owns the handlers: the first signal stops after the
  current step and checkpoints (exit 0).
* A second signal, at any time, exits at once with 128 + signum (143 for SIGTERM, 130 for SIGINT)
  after running the registered cleanups (the lock). Checkpoints are written atomically, so the last
  complete one stays usable.
"""
import os
import signal
import sys
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_state = {"received": None}
_cleanups = []


class StopRequested(SystemExit):
    """A stop signal arrived before training started (exit status 0)."""

    def __init__(self, name):
        super().__init__(0)
        self.signal_name = name

    def __str__(self):
        return f"{self.signal_name} received before training started"


def received():
    """The name of the first stop signal received ('SIGTERM', ...), or None."""
    return _state["received"]


def force_exit(signum):
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
    name = signal.Signals(signum).name
    if _state["received"]:
        force_exit(signum)
    _state["received"] = name
    print(f"\n{name} received before training started: stopping cleanly (nothing is lost; rerun to resume). "
          "Send it again to exit at once.", file=sys.stderr, flush=True)
    raise StopRequested(name)


def note_received(signum):
    """Records a first signal handled elsewhere (StopOnSignal), so that a second one exits at once."""
    if _state["received"]:
        force_exit(signum)
    _state["received"] = signal.Signals(signum).name


def install():
    """Installs the handlers (main thread only; elsewhere a no-op); returns the previous ones for :func:`restore`."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    _state["received"] = None
    return {sig: signal.signal(sig, _handle) for sig in SIGNALS}


def restore(previous):
    if threading.current_thread() is threading.main_thread():
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def add_cleanup(function):
    _cleanups.append(function)


def remove_cleanup(function):
    if function in _cleanups:
        _cleanups.remove(function)
