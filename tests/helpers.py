"""Small shared helpers for tests: tiny configs, parameter counting, a random training set, running a CLI."""
import importlib.util
import os
import pathlib
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: Environment of the CLI subprocesses: TF's C++ logging quiet, the checkout importable.
CLI_ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))


def run_cli(module, *args, timeout=300):
    """Runs `python -m module args...` from the checkout, as a user would; returns the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=CLI_ENV, capture_output=True,
                          text=True, timeout=timeout)


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
