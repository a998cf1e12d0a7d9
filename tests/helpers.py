"""Small shared helpers for tests: tiny configs and parameter counting."""
import importlib.util
import pathlib

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


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
