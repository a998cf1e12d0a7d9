"""Writing files so that readers never see half of one."""
import io
import os
import tempfile

import numpy as np


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path, data):
    """Writes `data` to `path` through a temporary file and a rename: readers never see half a file.

    The file gets the permissions `open()` would give it (0666 less the umask), not mkstemp's private
    0600, so the others who share a run directory can read its config, samples and metrics.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            os.fchmod(f.fileno(), 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_save_npz(path, **arrays):
    """`np.savez` to `path` atomically (no pickles)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())
