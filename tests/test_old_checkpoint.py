"""A run directory written before sagan_tf.run.run_dir existed still restores, for sampling and for resuming.

tests/data/run_before_run_dir was written by the code at commit d611085 (a tiny config trained 2 steps:
config.json, checkpoints/ckpt-2, and the EMA generator's images for four fixed (z, label) pairs, computed
by that code in the process that trained it). Restoring it through today's code must give the same images
and every variable, so that users' existing runs and checkpoints keep working.
"""
import shutil

import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.run import run_dir
from sagan_tf.training import build_model
from sagan_tf.training.checkpointing import CheckpointManager
from tests.helpers import ROOT, tiny_config

OLD_RUN = ROOT / "tests" / "data" / "run_before_run_dir"


@pytest.fixture
def old_run(tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(OLD_RUN, copy)  # restoring may repair an index; never touch the committed files
    return copy


def test_the_old_ema_generator_restores_and_draws_the_same_images(old_run):
    expected = np.load(old_run / "expected_ema_output.npz")
    restored = run_dir.load_ema_generator(str(old_run))
    assert restored.step == 2 and restored.checkpoint.endswith("checkpoints/ckpt-2")
    images = restored.generator((expected["z"], expected["labels"]), training=False).numpy()
    # float32 on another CPU: oneDNN's kernels there sum in another order (1.1e-6 seen on a Zen 5 EPYC);
    # a wrong or missing variable moves these tanh outputs by far more than 1e-5
    np.testing.assert_allclose(images, expected["images"], atol=1e-5)


def test_a_resume_restores_every_variable_of_the_old_checkpoint(old_run):
    stored = run_dir.read_config(str(old_run))
    config = tiny_config(**{name: stored[name] for name in ("resolution", "ch", "z_dim", "num_classes",
                                                             "image_channels", "g_attention", "d_attention")})
    model = build_model(config, tf.distribute.get_strategy())
    initial = {id(w): w.numpy() for w in model.generator.weights + model.discriminator.weights}
    manager = CheckpointManager(model, str(old_run / "checkpoints"), log=lambda message: None)
    assert manager.restore_latest() == 2  # restore_latest also asserts that every model variable was in it
    reader = tf.train.load_checkpoint(str(old_run / "checkpoints" / "ckpt-2"))
    # (A variable is stored under the first path that reaches it, e.g. G's kernels under g_optimizer/, so
    # match by value, not by name.)
    stored_values = [reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
                     if name.endswith("/.ATTRIBUTES/VARIABLE_VALUE")]
    for network in (model.generator, model.discriminator, model.ema_generator):
        for weight in network.weights:  # each variable now holds one of the stored tensors
            assert any(v.shape == tuple(weight.shape) and np.array_equal(weight.numpy(), v) for v in stored_values), \
                weight.path
    assert any(not np.array_equal(initial[id(w)], w.numpy())  # restoring changed them
               for w in model.generator.weights + model.discriminator.weights)
    assert int(model.d_optimizer.iterations.numpy()) == 2 and int(model.step.numpy()) == 2
