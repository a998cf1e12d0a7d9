"""sagan_tf.run.files: atomic writes keep the old file until the new one is complete, with open()'s permissions."""
import os
import stat

import numpy as np
import pytest

from sagan_tf.run import files


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_written_file_has_the_content_and_the_permissions_open_would_give(tmp_path, umask_022):
    path = tmp_path / "run" / "config.json"  # the directory is created
    files.atomic_write_bytes(str(path), b'{"ch": 4}')
    assert path.read_bytes() == b'{"ch": 4}'
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644  # 0666 & ~022, as open() gives; mkstemp alone: 0600
    with open(tmp_path / "plain", "wb"):
        pass
    assert stat.S_IMODE(os.stat(path).st_mode) == stat.S_IMODE(os.stat(tmp_path / "plain").st_mode)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "eval_history.jsonl"
    path.write_bytes(b"old")

    class Unwritable:
        def __len__(self):
            return 1

    with pytest.raises(TypeError):
        files.atomic_write_bytes(str(path), Unwritable())
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval_history.jsonl"]


def test_atomic_save_npz_round_trips(tmp_path):
    files.atomic_save_npz(str(tmp_path / "a.npz"), images=np.arange(6, dtype=np.uint8).reshape(2, 3))
    with np.load(tmp_path / "a.npz") as loaded:
        np.testing.assert_array_equal(loaded["images"], [[0, 1, 2], [3, 4, 5]])
