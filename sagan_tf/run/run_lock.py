"""One writer per run directory: ``<model_dir>/.lock``, held by the chief for the life of the run.

The lock file is created with ``O_CREAT | O_EXCL`` (atomic on local filesystems and NFSv3+) and holds
JSON: pid, host, the process's start time (from /proc, to tell a reused pid from the holder), the
start time of the lock and the command line. A second writer fails at once with
:class:`RunLockedError` naming the holder's pid and host. The lock is released (the file removed,
only if it is still ours) when the run ends in any way Python sees: return, exception, a clean stop
after SIGTERM/SIGINT, a forced exit on a second signal (:func:`hold` holds it for a
run, safe against those signals). After ``kill -9``, a power loss or an OOM
kill it stays behind; the next run on the same host finds the pid dead (or now another process)
and takes the lock over with a message. A lock from another host is never taken over: whether that
process lives cannot be checked from here, so the error says how to remove it by hand.

On a filesystem that is not local (``gs://``, any URI but ``file://``) there is no exclusive create:
the lock is written through tf.io.gfile and read back, which refuses a second writer that starts
after the first one's lock is visible, but not two that start within the same instant. Start one
chief per bucket run directory.

A local lock needs nothing but the standard library: the trainer CLIs take it (:func:`hold`) before
TensorFlow is imported, so that a second trainer on a held model_dir is refused in about a second, and
`sagan_tf.training.train` then finds it already held by this process and keeps it (the CLI releases it).
TensorFlow is imported only for a URI.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time


__all__ = ["LOCK_FILE", "RunLockedError", "RunLock", "pid_alive", "held_lock", "hold"]

LOCK_FILE = ".lock"

# A lock file that exists but is still empty (its writer is between open and write) is "being
# created" for this long before it counts as stale.
EMPTY_GRACE_SECONDS = 10.0

# The locks this process holds, by _key(): hold() keeps one it finds here instead of taking it twice.
_held: dict[str, "RunLock"] = {}


def _local_path(path: str) -> str | None:
    """`sagan_tf.run.files.local_path` (the same rule), without importing TensorFlow."""
    if path.startswith("file://"):
        return path[len("file://"):]
    return None if "://" in path else path


def _key(model_dir) -> str:
    model_dir = os.fspath(model_dir)
    local = _local_path(model_dir)
    return os.path.realpath(local) if local is not None else model_dir.rstrip("/")


def _files():
    from sagan_tf.run import files  # tf.io.gfile: only for a URI
    return files


def _gfile_errors():
    import tensorflow as tf
    return tf.errors


class RunLockedError(RuntimeError):
    """Another live process holds the run directory."""


def _process_start(pid):
    """The start time of `pid` in clock ticks since boot (/proc/<pid>/stat field 22), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    try:
        return int(text.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None


def pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except (OSError, ValueError, OverflowError):
        return False
    return True


class RunLock:
    """``with RunLock(model_dir): ...`` or ``lock = RunLock(model_dir).acquire(); ...; lock.release()``."""

    def __init__(self, model_dir, log=None):
        self.model_dir = os.fspath(model_dir)
        local_dir = _local_path(self.model_dir)
        # _local: None on a filesystem without exclusive create (a URI other than file://)
        self._local = None if local_dir is None else os.path.join(local_dir, LOCK_FILE)
        self.path = os.path.join(self.model_dir, LOCK_FILE) if self._local else _files().join(self.model_dir, LOCK_FILE)
        self.log = log or (lambda message: print(message, file=sys.stderr, flush=True))
        self.held = False
        self._content = None

    def _describe(self, info):
        return (f"pid {info.get('pid')} on host {info.get('host')!r} (since {info.get('started', '?')}, "
                f"command: {' '.join(info.get('argv', []))[:200]!r})")

    def _read(self):
        """(info dict or None, raw text or None): None, None when there is no lock file."""
        if self._local is not None:
            try:
                with open(self._local, encoding="utf-8") as f:
                    text = f.read()
            except FileNotFoundError:  # none, or released meanwhile
                return None, None
        else:
            files = _files()
            if not files.exists(self.path):
                return None, None
            try:
                text = files.read_text(self.path)
            except (OSError, _gfile_errors().NotFoundError):  # released meanwhile
                return None, None
        try:
            info = json.loads(text)
            return (info if isinstance(info, dict) else None), text
        except ValueError:
            return None, text

    def _stale_reason(self, info, text):
        """Why the existing lock is stale (a string), or None if its holder may be alive."""
        if info is None:
            age = self._age()
            if age is None:
                return None
            if not text and age < EMPTY_GRACE_SECONDS:
                return None  # being written right now
            return f"its content is unreadable ({text[:80]!r}, {age:.0f} s old)"
        if info.get("host") != socket.gethostname():
            return None
        pid = info.get("pid")
        if not pid_alive(pid):
            return f"its process (pid {pid}) is not running"
        recorded, current = info.get("process_start"), _process_start(pid)
        if recorded is not None and current is not None and recorded != current:
            return f"pid {pid} now belongs to another process"
        return None

    def _age(self):
        """Seconds since the lock file was last written, or None if it cannot be told (gone meanwhile)."""
        if self._local is not None:
            try:
                return time.time() - os.stat(self._local).st_mtime
            except OSError:
                return None
        import tensorflow as tf
        try:
            return time.time() - tf.io.gfile.stat(self.path).mtime_nsec / 1e9
        except (OSError, tf.errors.OpError):
            return None

    def _create_exclusive(self, content):
        """Creates the lock file holding `content`; False if it already exists."""
        if self._local is None:  # no exclusive create: refuse if visible, write, and check it is ours
            files = _files()
            if files.exists(self.path):
                return False
            files.atomic_write_text(self.path, content)
            return True
        try:
            fd = os.open(self._local, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        return True

    def acquire(self):
        self._makedirs()
        info = {"pid": os.getpid(), "host": socket.gethostname(), "process_start": _process_start(os.getpid()),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": sys.argv}
        content = json.dumps(info)
        for _ in range(5):  # a lost race against another taker starts over
            if not self._create_exclusive(content):
                holder, text = self._read()
                if text is None:
                    continue  # released meanwhile
                reason = self._stale_reason(holder, text)
                if reason is None:
                    if holder is None:
                        raise RunLockedError(f"{self.model_dir} is being locked by another process right now "
                                             f"({self.path} is empty); is a second trainer starting on it?")
                    raise RunLockedError(
                        f"{self.model_dir} is in use by another training run: {self._describe(holder)} holds "
                        f"{self.path}. Two writers would overwrite each other's checkpoints. Stop that run, or use "
                        "another --model_dir; if that process is gone (e.g. a lock left on another host), remove "
                        f"{self.path} by hand.")
                self._take_over(text, reason, holder)
                continue
            if self._read()[1] != content:  # someone took over an "unreadable" lock we were still writing
                raise RunLockedError(f"{self.path} changed while it was being created; another trainer is starting "
                                     "on this model_dir.")
            self.held, self._content = True, content
            _held[_key(self.model_dir)] = self
            return self
        raise RunLockedError(f"could not lock {self.path}: it keeps changing (several trainers starting at once?).")

    def _makedirs(self):
        if self._local is None:
            _files().makedirs(self.model_dir)
        else:
            os.makedirs(os.path.dirname(self._local), exist_ok=True)

    def _take_over(self, stale_text, reason, holder):
        """Removes the stale lock file if it still holds `stale_text` (renamed first, so that of two takers
        only one removes it, and a fresh lock created meanwhile is put back)."""
        if self._local is None:  # no atomic rename-aside: remove it if it still holds the stale text
            if self._read()[1] == stale_text:
                _files().remove(self.path)
        else:
            aside = f"{self._local}.stale-{os.getpid()}"
            try:
                os.rename(self._local, aside)
            except FileNotFoundError:
                return
            with open(aside) as f:
                now = f.read()
            if now != stale_text:  # not the stale lock any more: give the new holder its file back
                try:
                    os.link(aside, self._local)  # fails if yet another lock exists; then that one stands
                except OSError:
                    pass
                os.remove(aside)
                return
            os.remove(aside)
        what = self._describe(holder) if holder else "an unreadable lock"
        self.log(f"Taking over the stale lock {self.path} of {what}: {reason}.")

    def release(self):
        """Removes the lock file if it is still this process's (idempotent)."""
        if not self.held:
            return
        self.held = False
        if _held.get(_key(self.model_dir)) is self:
            del _held[_key(self.model_dir)]
        if self._read()[1] == self._content:
            if self._local is not None:
                try:
                    os.remove(self._local)
                except OSError:
                    pass
                return
            try:
                _files().remove(self.path)
            except (OSError, _gfile_errors().NotFoundError):
                pass

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def held_lock(model_dir) -> RunLock | None:
    """The lock of `model_dir` this process holds, or None."""
    lock = _held.get(_key(model_dir))
    if lock is None or not lock.held or json.loads(lock._content).get("pid") != os.getpid():
        return None  # (a forked child does not hold its parent's lock)
    return lock
