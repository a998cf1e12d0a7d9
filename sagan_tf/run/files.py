"""Every file the project reads or writes, through `tf.io.gfile`.

So any filesystem TensorFlow knows works for run directories, data, exports and caches: local
paths, `file:///...`, `gs://bucket/...` on a cluster, `ram://...` in tests. Python's `open()` and
`os.path` treat a URI as a relative local path (`gs://b/run` becomes the directory `gs:/b/run`), so
project code never uses them on a user-given path; it uses these helpers or `tf.io.gfile` directly.

Writes are atomic for readers: the bytes go to a temporary name beside the target, then a rename
(POSIX rename locally; on object stores the new object appears whole or not at all).
"""
from __future__ import annotations

import io
import json
import os
import posixpath
import uuid

import numpy as np
import tensorflow as tf

__all__ = [
    "is_uri",
    "local_path",
    "join",
    "dirname",
    "absolute",
    "exists",
    "isdir",
    "makedirs",
    "listdir",
    "remove",
    "read_bytes",
    "read_text",
    "read_json",
    "load_npz",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_save_npz",
    "append_line",
]

gfile = tf.io.gfile

TEMPORARY_PREFIX = ".tmp-"


def is_uri(path: str) -> bool:
    """True for `scheme://...` paths (gs://, file://, ram://, s3://, hdfs://)."""
    return "://" in str(path)


def local_path(path: str) -> str | None:
    """The local filesystem path behind `path` (a plain path or `file://...`), or None for other schemes.

    For the few consumers that need a real local file: a lock's pid check, or a library without URI support.
    """
    path = os.fspath(path)
    if path.startswith("file://"):
        return path[len("file://"):]
    return None if is_uri(path) else path


def join(path: str, *parts: str) -> str:
    """`os.path.join` that keeps a URI's `//` (posixpath for URIs, the platform's join for local paths)."""
    path = os.fspath(path)
    return posixpath.join(path, *parts) if is_uri(path) else os.path.join(path, *parts)


def dirname(path: str) -> str:
    path = os.fspath(path).rstrip("/")
    return posixpath.dirname(path) if is_uri(path) else os.path.dirname(os.path.abspath(path))


def absolute(path: str) -> str:
    """An absolute form of `path`: URIs as they are, local paths made absolute (recorded in exports and logs)."""
    path = os.fspath(path)
    return path if is_uri(path) else os.path.abspath(path)


def exists(path: str) -> bool:
    return gfile.exists(os.fspath(path))


def isdir(path: str) -> bool:
    return gfile.isdir(os.fspath(path))


def makedirs(path: str) -> None:
    gfile.makedirs(os.fspath(path))


def listdir(path: str) -> list[str]:
    """Entry names in `path` (without the trailing `/` some filesystems put on directories), sorted."""
    return sorted(name.rstrip("/") for name in gfile.listdir(os.fspath(path)))


def remove(path: str) -> None:
    gfile.remove(os.fspath(path))


def read_bytes(path: str) -> bytes:
    with gfile.GFile(os.fspath(path), "rb") as f:
        return f.read()


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def read_json(path: str):
    return json.loads(read_text(path))


def load_npz(path: str) -> dict:
    """The arrays of an .npz file (no pickles), read whole so it works on any filesystem."""
    with np.load(io.BytesIO(read_bytes(path)), allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str, data) -> None:
    """Writes `data` to `path` through a temporary file and a rename: readers never see half a file.

    The directory is created. A local file gets the permissions `open()` would give it (0666 less the
    umask), so the others who share a run directory can read its config, samples and metrics.
    """
    path = os.fspath(path)
    directory = dirname(path)
    gfile.makedirs(directory)
    tmp = join(directory, f"{TEMPORARY_PREFIX}{uuid.uuid4().hex}-{posixpath.basename(path)}")
    try:
        with gfile.GFile(tmp, "wb") as f:
            f.write(data)
        local = local_path(tmp)
        if local is not None:
            os.chmod(local, 0o666 & ~_umask())
        gfile.rename(tmp, path, overwrite=True)
    except BaseException:
        if gfile.exists(tmp):
            gfile.remove(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str, value, **dump_kwargs) -> None:
    """`value` as JSON text (json.dumps keyword arguments), ending in a newline."""
    atomic_write_text(path, json.dumps(value, **dump_kwargs) + "\n")


def atomic_save_npz(path: str, **arrays) -> None:
    """`np.savez` to `path` atomically (no pickles)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def append_line(path: str, line: str) -> None:
    """Appends one line to a text file, atomically for readers: the whole file is rewritten.

    Object stores cannot append; the files appended to here (eval history, best metrics) stay small.
    """
    previous = read_text(path) if gfile.exists(path) else ""
    atomic_write_text(path, previous + line.rstrip("\n") + "\n")
