"""A quiet start for the command-line tools: TensorFlow's start-up notices are not printed.

Importing TensorFlow 2.21 writes, before its C++ logging is configured (so `TF_CPP_MIN_LOG_LEVEL`
cannot hold them back), the oneDNN notice and "Could not find cuda drivers", each twice; the first
device query of a machine without a GPU logs "failed call to cuInit" as an error. None of them is a
fault, and to someone who has never seen them they read as one.

`quiet_start()`, called by the CLI packages (trainers/, export/) when Python runs one of their modules
(`python -m trainers.… | export.…`), sets `TF_CPP_MIN_LOG_LEVEL=2` (C++ info and warnings off, errors
on) and hooks TensorFlow's first import — whenever it comes, so cheap checks before it stay cheap — to
run with file descriptor 2 captured, together with its first device query: those notices are dropped,
every other line is written back to stderr, so a real error still prints. A user who set
`TF_CPP_MIN_LOG_LEVEL` (to any value) gets TensorFlow's own output untouched, and so does a program
that imports those packages as a library. This module imports nothing heavy itself (nor does
sagan_tf.runtime's __init__).
"""
import contextlib
import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile

LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
QUIET_LOG_LEVEL = "2"
# The lines TensorFlow writes at every start that are not faults.
START_UP_NOTICES = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|\] oneDNN custom operations are on"
    r"|\] Could not find cuda drivers on your machine"
    r"|\] failed call to cuInit")


def is_start_up_notice(line: str) -> bool:
    return START_UP_NOTICES.search(line) is not None


def running_as_module() -> bool:
    """True while `python -m package.module` imports `package` (runpy sets argv[0] to the module's file
    only after importing its package)."""
    return sys.argv[:1] == ["-m"]


@contextlib.contextmanager
def start_up_notices_dropped():
    """File descriptor 2 captured for the block; afterwards every captured line but the start-up notices
    is written to stderr (also when the block raises)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode("utf-8", errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not is_start_up_notice(line)))
            sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
    """TensorFlow's own loader, run with the notices dropped; then its first device query (cuInit's)."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = module.__spec__.loader = self.loader  # as if imported without this hook
        with start_up_notices_dropped():
            self.loader.exec_module(module)
            module.config.list_physical_devices()


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` as the path finder does, once, and hands it to `_QuietLoader`."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def quiet_start() -> None:
    """From here, TensorFlow's first import drops its start-up notices (TensorFlow is not imported now:
    a CLI's flag errors stay instant). Nothing changes if the user set TF_CPP_MIN_LOG_LEVEL or TensorFlow
    is already imported (then there is nothing left to hold back)."""
    if LOG_LEVEL_VARIABLE in os.environ or "tensorflow" in sys.modules:
        return
    os.environ[LOG_LEVEL_VARIABLE] = QUIET_LOG_LEVEL
    if not any(isinstance(finder, _QuietTensorFlowFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowFinder())
