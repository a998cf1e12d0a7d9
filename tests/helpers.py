"""Small shared helpers for tests: tiny configs, parameter counting, a random training set, one trained tiny run,
running a CLI.

Running a CLI: `run_cli(module, *args)` runs `python -m module args...` from the checkout and returns a
`subprocess.CompletedProcess`. Each call is its own process, started the way `python -m` starts one, but
forked from a session-wide server that has already imported TensorFlow and Keras (the import is most of a
small CLI's time): the child sets sys.argv, runs the module as `__main__` with `runpy` (absl parses the
flags, `app.run` handles the errors, exactly the user's code path), and exits through the normal
interpreter shutdown, so its exit status, stdout and stderr are those of a plain `python -m` run (less
TensorFlow's C++ start-up lines, which the server's import printed once). A bad value costs a CLI test about
a second instead of the 4-8 s of a TensorFlow import. The server itself never creates a TensorFlow op, so
each child initialises the runtime (devices, threads) itself. `python -m tests.helpers` is that server.
"""
import atexit
import functools
import importlib.util
import json
import os
import pathlib
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: Environment of the CLI subprocesses: TF's C++ logging quiet, the checkout importable.
CLI_ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))


class _CliServer:
    """The client side of the fork server: one request at a time, one reply line per event."""

    def __init__(self):
        self.process = subprocess.Popen([sys.executable, "-m", "tests.helpers"], cwd=ROOT, env=CLI_ENV,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        text=True, bufsize=1)
        self.lock = threading.Lock()

    def alive(self) -> bool:
        return self.process.poll() is None

    def _reply(self, timeout):
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the CLI fork server exited with status {self.process.poll()}")
        return json.loads(line)

    def run(self, argv, timeout):
        with self.lock, tempfile.TemporaryDirectory(prefix="cli-") as work:
            out, err = os.path.join(work, "stdout"), os.path.join(work, "stderr")
            self.process.stdin.write(json.dumps({"argv": argv, "stdout": out, "stderr": err}) + "\n")
            self.process.stdin.flush()
            started = self._reply(timeout)  # the first request also waits for the server's TF import
            if started is None:
                raise subprocess.TimeoutExpired(argv, timeout, output="the CLI fork server started no child")
            pid = started["pid"]
            reply = self._reply(timeout)
            if reply is None:  # as subprocess.run does on a timeout: kill the child, then raise
                os.kill(pid, signal.SIGKILL)
                self._reply(60)
                raise subprocess.TimeoutExpired(argv, timeout)
            with open(out, encoding="utf-8", errors="replace") as f:
                stdout = f.read()
            with open(err, encoding="utf-8", errors="replace") as f:
                stderr = f.read()
            return reply["returncode"], stdout, stderr

    def close(self):
        if self.alive():
            self.process.stdin.close()
            self.process.wait(timeout=60)


_SERVER = []


def _server() -> _CliServer:
    if not _SERVER or not _SERVER[0].alive():
        _SERVER[:] = [_CliServer()]
        atexit.register(_SERVER[0].close)
    return _SERVER[0]


def run_cli(module, *args, timeout=300) -> subprocess.CompletedProcess:
    """Runs `python -m module args...` from the checkout, as a user would; returns the CompletedProcess."""
    argv = [sys.executable, "-m", module, *map(str, args)]
    returncode, stdout, stderr = _server().run([module, *map(str, args)], timeout)
    return subprocess.CompletedProcess(argv, returncode, stdout, stderr)


def _serve():
    """The server loop: forks a child per request line; the child returns its request, the server None."""
    import keras  # noqa: F401  (imported once here; the children inherit them)
    import tensorflow  # noqa: F401
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            return request
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), flush=True)
    return None


def _run_as_main(request):
    """In the child: stdin /dev/null, stdout/stderr to the request's files, then `python -m` semantics."""
    import runpy
    for fd, path, mode in ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], os.O_WRONLY | os.O_CREAT),
                           (2, request["stderr"], os.O_WRONLY | os.O_CREAT)):
        opened = os.open(path, mode, 0o600)
        os.dup2(opened, fd)
        os.close(opened)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.argv = list(request["argv"])
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)


def load_preset(name):
    """Loads configs/<name>.py and returns its ConfigDict."""
    spec = importlib.util.spec_from_file_location(f"preset_{name}", ROOT / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def tiny_config(**overrides):
    """A 32×32, ch=4, z_dim=8, 3-class, 1-channel config small enough to train in tests."""
    config = load_preset("fashion_mnist")
    config.update(dict(resolution=32, ch=4, num_classes=3, image_channels=1, g_attention=[16], d_attention=[16],
                       z_dim=8, batch_size=4, mixed_precision="float32", ema_start=0, ema_decay=0.9,
                       checkpoint_every=3, sample_every=3, log_every=1, train_steps=3))
    config.update(overrides)
    return config


def class_sensitive_generator(num_classes=3, seed=0):
    """A tiny float32 Generator whose CBN class tables are random: at init every class has gain 1 and
    bias 0, so labels would not change the image and a label mix-up could not be seen."""
    from sagan_tf.models import Generator

    generator = Generator(tiny_config(num_classes=num_classes), dtype="float32")
    generator.build()
    rng = np.random.default_rng(seed)
    for weight in generator.weights:
        if "embeddings" in weight.path:
            weight.assign(1.0 + 0.5 * rng.standard_normal(weight.shape).astype(np.float32))
    return generator


def count_params(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def random_dataset_fn(config, num=8, seed=0):
    """A `dataset_fn(start_step)` for `train()`: `num` fixed random images with cycling labels, repeated."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    images = rng.uniform(-1, 1, (num, config.resolution, config.resolution, config.image_channels)).astype(np.float32)
    labels = (np.arange(num) % max(config.num_classes, 1)).astype(np.int32)

    def dataset_fn(start_step):
        return (tf.data.Dataset.from_tensor_slices((images, labels)).repeat()
                .batch(config.n_dis * config.batch_size, drop_remainder=True).skip(start_step))

    return dataset_fn


_SCRATCH = []


def scratch_dir() -> str:
    """One scratch directory per test process, removed at exit (for session-wide runs and exports)."""
    if not _SCRATCH:
        path = tempfile.mkdtemp(prefix="sagan-tests-")
        atexit.register(shutil.rmtree, path, True)
        _SCRATCH.append(path)
    return _SCRATCH[0]


#: What trained_run() asks for: 'auto' precision, resolved on hardware faked to lack native bfloat16.
TRAINED_RUN_PRECISION = "auto"


@functools.lru_cache(maxsize=None)
def trained_run():
    """(model_dir, SAGAN model): tiny_config trained 2 steps, checkpoints ckpt-1 and ckpt-2, made once per
    session (test_export and test_serving export it, test_precision reads the policy it recorded).

    It asks for mixed_precision='auto' on hardware faked to lack native bfloat16, so it trains in float32
    on every machine and config.json must record 'float32'.
    """
    from sagan_tf.runtime import precision
    from sagan_tf.training import train
    config = tiny_config(mixed_precision=TRAINED_RUN_PRECISION, train_steps=2, checkpoint_every=1,
                         sample_every=1000, log_every=1000)
    model_dir = os.path.join(scratch_dir(), "run")
    real = precision.native_bfloat16
    precision.native_bfloat16 = lambda strategy=None: False
    try:
        model = train(config, model_dir, dataset_fn=random_dataset_fn(config), verbose=0)
    finally:
        precision.native_bfloat16 = real
    return model_dir, model


if __name__ == "__main__":
    _request = _serve()
    if _request is not None:
        _run_as_main(_request)


def shipped_generator():
    """The shipped generator: the highest version under pretrained/fashion_mnist (what models.config serves)."""
    versions = [path for path in (ROOT / "pretrained" / "fashion_mnist").iterdir() if path.name.isdigit()]
    return max(versions, key=lambda path: int(path.name))
