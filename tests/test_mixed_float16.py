"""mixed_float16 on the CPU: both networks train under their own dynamic loss scales, a skipped update
(non-finite scaled gradients) still counts as a step, u and the EMA stay float32, and a checkpoint
restores the loss-scale state so that training continues exactly."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.training import build_model
from sagan_tf.training.checkpointing import make_checkpoint
from sagan_tf.training.gan import spectral_norm_layers
from sagan_tf.training.optimizers import StepCountingLossScaleOptimizer
from tests.helpers import tiny_config

RNG = np.random.default_rng(0)
IMAGES = RNG.uniform(-1, 1, size=(16, 32, 32, 1)).astype(np.float32)
LABELS = (np.arange(16) % 3).astype(np.int32)

pytestmark = pytest.mark.slow  # float16 on CPU / two exports: about a minute in all (docs/testing.md)


def dataset(start_step=0):
    return tf.data.Dataset.from_tensor_slices((IMAGES, LABELS)).repeat().batch(4, drop_remainder=True).skip(start_step)


def values(variables):
    return [np.array(v.numpy()) for v in variables]


def changed(before, variables):
    return max(float(np.abs(b.astype(np.float64) - a).max()) for b, a in zip(before, values(variables)))


def slots(optimizer):
    return values(optimizer.inner_optimizer.variables)


class StepLogs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.logs = []

    def on_train_batch_end(self, batch, logs=None):
        self.logs.append({k: float(v) for k, v in logs.items()})


@pytest.fixture(scope="module")
def trained():
    """A mixed_float16 model after 4 steps from Keras' initial scale 2^15, at which float16 gradients
    overflow: some of these updates are skipped (traced once; the tests below continue it, in order)."""
    model = build_model(tiny_config(mixed_precision="mixed_float16", init="normal"), tf.distribute.get_strategy())
    initial = values(model.generator.trainable_variables), values(model.discriminator.trainable_variables)
    logs = StepLogs()
    model.fit(dataset(), epochs=1, steps_per_epoch=4, verbose=0, callbacks=[logs])
    return model, initial, logs.logs


def test_both_networks_train_in_float16_under_their_own_loss_scales(trained):
    model, (g0, d0), logs = trained
    assert model.generator.compute_dtype == "float16" and model.discriminator.compute_dtype == "float16"
    for optimizer in (model.g_optimizer, model.d_optimizer):
        assert isinstance(optimizer, StepCountingLossScaleOptimizer)
    assert model.g_optimizer.dynamic_scale is not model.d_optimizer.dynamic_scale
    assert changed(g0, model.generator.trainable_variables) > 1e-6
    assert changed(d0, model.discriminator.trainable_variables) > 1e-6
    # Skipped updates happened (each halves its network's scale; a skipped one logs a non-finite norm),
    # and still the step counts every train step, as in float32, and D's iterations every D step.
    for name, optimizer in (("g", model.g_optimizer), ("d", model.d_optimizer)):
        skips = sum(not np.isfinite(step[f"{name}_grad_norm"]) for step in logs)
        assert 0 < skips < 4 and float(optimizer.dynamic_scale) == 2.0 ** 15 / 2 ** skips, (name, skips)
    assert int(model.step) == 4 and int(model.d_optimizer.iterations) == 4


def test_u_vectors_master_weights_and_ema_stay_float32(trained):
    model = trained[0]
    for network in (model.generator, model.discriminator, model.ema_generator):
        layers = spectral_norm_layers(network)
        assert layers and all(layer.u.dtype == "float32" for layer in layers), network.name
        assert all(w.dtype == "float32" for w in network.weights), network.name
    assert all(w.dtype == "float32" for w in model.ema_generator.trainable_weights)


@pytest.mark.parametrize("skipped", ["d", "g"])
def test_a_skipped_update_counts_as_a_step_and_halves_only_its_own_scale(trained, skipped):
    """A scale of 1e38 overflows the float16 gradients of that network only: its update is skipped (weights
    and Adam slots unchanged), its iterations and the run's step still advance by one, its scale halves
    and its growth counter restarts; the other network updates and keeps its scale."""
    model = trained[0]
    networks = {"g": (model.generator, model.g_optimizer), "d": (model.discriminator, model.d_optimizer)}
    other = "g" if skipped == "d" else "d"
    networks[skipped][1].dynamic_scale.assign(1e38)
    networks[other][1].dynamic_scale.assign(128.0)  # small enough for finite float16 gradients
    before = {key: (values(net.trainable_variables), slots(opt), int(opt.iterations), float(opt.dynamic_scale),
                    int(opt.step_counter)) for key, (net, opt) in networks.items()}
    step = int(model.step)
    logs = StepLogs()
    model.fit(dataset(step), epochs=1, steps_per_epoch=1, verbose=0, callbacks=[logs])

    net, opt = networks[skipped]
    weights, slot_values, iterations, scale, _ = before[skipped]
    assert changed(weights, net.trainable_variables) == 0.0
    assert changed(slot_values[1:], opt.inner_optimizer.variables[1:]) == 0.0  # [0] is the iteration counter
    assert int(opt.iterations) == iterations + 1
    assert float(opt.dynamic_scale) == scale / 2 and int(opt.step_counter) == 0
    assert not np.isfinite(logs.logs[-1][f"{skipped}_grad_norm"])  # the logged sign of a skipped update

    net, opt = networks[other]
    weights, _, iterations, scale, counter = before[other]
    assert changed(weights, net.trainable_variables) > 1e-6
    assert int(opt.iterations) == iterations + 1
    assert float(opt.dynamic_scale) == scale and int(opt.step_counter) == counter + 1
    assert np.isfinite(logs.logs[-1][f"{other}_grad_norm"])
    assert int(model.step) == step + 1  # G's iterations: the run's step, skipped or not


def test_checkpoint_restores_the_loss_scales_and_training_continues_exactly(trained, tmp_path):
    model = trained[0]
    model.g_optimizer.dynamic_scale.assign(512.0)  # distinct from the initial 32768, so a lost state shows
    model.d_optimizer.dynamic_scale.assign(2048.0)
    path = make_checkpoint(model).save(str(tmp_path / "ckpt"))
    restored = build_model(tiny_config(mixed_precision="mixed_float16", init="normal"), tf.distribute.get_strategy())
    make_checkpoint(restored).restore(path).assert_existing_objects_matched()
    for a, b in ((model.g_optimizer, restored.g_optimizer), (model.d_optimizer, restored.d_optimizer)):
        assert float(b.dynamic_scale) == float(a.dynamic_scale) and int(b.step_counter) == int(a.step_counter)
        assert int(b.iterations) == int(a.iterations)
    step = int(model.step)
    for m in (model, restored):
        m.fit(dataset(step), epochs=1, steps_per_epoch=1, verbose=0)
    for a, b in zip(model.weights + model.g_optimizer.variables + model.d_optimizer.variables,
                    restored.weights + restored.g_optimizer.variables + restored.d_optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    assert int(restored.step) == step + 1


def replica_copies(strategy, variable):
    """Each replica's copy of a (Keras) mirrored variable, as numpy arrays."""
    return [np.array(copy.numpy()) for copy in strategy.experimental_local_results(variable.value)]


def test_an_overflow_on_one_replica_skips_the_update_on_every_replica(two_device_strategy):
    """MirroredStrategy, mixed_float16: replica 1's real images overflow float16 (D's gradients there are
    not finite), replica 0's do not. The skip is decided on both replicas' gradients: D's update is
    skipped on every replica (weights and Adam slots unchanged, finite and identical on both), D's
    scale halves, its iterations still count the step; G, finite on both, updates."""
    model = build_model(tiny_config(mixed_precision="mixed_float16", init="normal"), two_device_strategy)
    model.d_optimizer.dynamic_scale.assign(1.0)  # replica 0's float16 gradients are finite at this scale
    model.g_optimizer.dynamic_scale.assign(1.0)
    images = IMAGES[:8].copy()
    images[4:] = 1e30  # rows 4-7: replica 1's share of the global batch of 8; inf in float16
    batches = tf.data.Dataset.from_tensor_slices((images, LABELS[:8])).batch(8).repeat()
    d_before, g_before = values(model.discriminator.trainable_variables), values(model.generator.trainable_variables)
    d_slots = slots(model.d_optimizer)
    model.fit(two_device_strategy.experimental_distribute_dataset(batches), epochs=1, steps_per_epoch=1, verbose=0)

    for variable, before in zip(model.discriminator.trainable_variables, d_before):
        for copy in replica_copies(two_device_strategy, variable):
            np.testing.assert_array_equal(copy, before, err_msg=variable.path)
    for slot, before in zip(model.d_optimizer.inner_optimizer.variables[1:], d_slots[1:]):
        for copy in replica_copies(two_device_strategy, slot):
            np.testing.assert_array_equal(copy, before, err_msg=slot.path)
    assert float(model.d_optimizer.dynamic_scale.numpy()) == 0.5 and int(model.d_optimizer.iterations.numpy()) == 1
    assert changed(g_before, model.generator.trainable_variables) > 1e-6
    assert float(model.g_optimizer.dynamic_scale.numpy()) == 1.0 and int(model.step.numpy()) == 1
    for variable in model.generator.trainable_variables:
        first, second = replica_copies(two_device_strategy, variable)
        assert np.isfinite(first).all()
        np.testing.assert_array_equal(first, second, err_msg=variable.path)
