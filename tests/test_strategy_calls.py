"""Every network call outside the train step runs through the strategy, and gives what one device gives.

Under MirroredStrategy on the two logical CPUs of tests/conftest.py: `distributed_call` really runs each
replica on its own rows; standing statistics, sample grids, attention figures and evaluation metrics
equal the single-device ones computed from the same weights.
"""
import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.evaluation.periodic import make_evaluate_fn
from sagan_tf.evaluation.runner import load_or_compute_reference
from sagan_tf.layers.spectral_norm import power_iteration_paused
from sagan_tf.models import Generator
from sagan_tf.runtime.replicas import distributed_call
from sagan_tf.sampling.noise import noise_batches
from sagan_tf.sampling.standing_statistics import StandingStatistics
from sagan_tf.training import build_model
from sagan_tf.training import callbacks as cb
from sagan_tf.training.gan import spectral_norm_layers
from tests.helpers import tiny_config


def bn_layers(generator):
    return [layer for layer in generator._flatten_layers(include_self=False)
            if isinstance(layer, keras.layers.BatchNormalization)]


def generator_pair(strategy, config):
    """A generator on one device and a copy of it with its variables mirrored on `strategy`'s replicas."""
    single = Generator(config)
    single.build()
    with strategy.scope():
        mirrored = Generator(config)
        mirrored.build()
    mirrored.set_weights(single.get_weights())
    return single, mirrored


def test_distributed_call_runs_every_replica_on_its_own_rows(two_device_strategy):
    def fn(x):
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        return {"rows": x * 10, "replica": tf.fill([tf.shape(x)[0]], replica)}

    x = np.arange(5, dtype=np.float32)  # odd: padded to 6 rows for 2 replicas, the padding cut off
    out = distributed_call(fn, two_device_strategy)(x)
    np.testing.assert_array_equal(out["rows"], x * 10)
    np.testing.assert_array_equal(out["replica"], [0, 0, 0, 1, 1])


def test_standing_statistics_on_two_replicas_equal_one_device(two_device_strategy):
    # sync_bn: cross-replica BN must be off in these passes, or each batch's statistics would be the pair's.
    single, mirrored = generator_pair(two_device_strategy, tiny_config(sync_bn=True))
    batches = noise_batches(8, 3, num_batches=4, batch_size=8, seed=3)
    StandingStatistics(single)(batches)
    StandingStatistics(mirrored, two_device_strategy)(batches)
    # Naive reference for the first BN layer: the mean over the 4 batches of each batch's own statistics.
    first = bn_layers(single)[0]
    assert float(np.abs(first.moving_mean.numpy()).max()) > 1e-3  # not the initial zeros
    for a, b in zip(bn_layers(single), bn_layers(mirrored)):
        for name in ("moving_mean", "moving_variance"):
            expected = getattr(a, name).numpy()
            for replica_value in two_device_strategy.experimental_local_results(getattr(b, name).value):
                np.testing.assert_allclose(replica_value.numpy(), expected, rtol=1e-5, atol=1e-6, err_msg=name)
        assert b.momentum == a.momentum == 0.9 and b.synchronized and a.synchronized  # restored
    with pytest.raises(ValueError, match="3 batches on 2 replicas"):
        StandingStatistics(mirrored, two_device_strategy)(batches[:3])


def test_standing_statistics_are_the_mean_of_each_batch_statistics():
    """Naive reference: after the standing statistics, each batch alone in a training-mode pass at
    momentum 0 with the power iteration paused (exactly that batch's statistics, with the final u), then
    the mean. u takes one power iteration per batch first: it must have moved."""
    generator = Generator(tiny_config(init="normal"))  # N(0, 0.02): u far from converged, so a moving u shows
    generator.build()
    batches = noise_batches(8, 3, num_batches=2, batch_size=8, seed=5)
    layers = bn_layers(generator)
    u_before = [layer.u.numpy().copy() for layer in spectral_norm_layers(generator)]
    StandingStatistics(generator)(batches)
    standing = [(layer.moving_mean.numpy().copy(), layer.moving_variance.numpy().copy()) for layer in layers]
    assert max(np.abs(a - layer.u.numpy()).max() for a, layer in zip(u_before, spectral_norm_layers(generator))) > 1e-3
    alone = []
    for layer in layers:
        layer.momentum = 0.0
    with power_iteration_paused():
        for batch in batches:
            generator(batch, training=True)
            alone.append([(layer.moving_mean.numpy(), layer.moving_variance.numpy()) for layer in layers])
    for i, (mean, variance) in enumerate(standing):
        np.testing.assert_allclose(mean, (alone[0][i][0] + alone[1][i][0]) / 2, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(variance, (alone[0][i][1] + alone[1][i][1]) / 2, rtol=1e-5, atol=1e-7)
    assert np.abs(alone[0][0][1] - alone[1][0][1]).max() > 1e-4  # the two batches differ


@pytest.fixture(scope="module")
def sagan_pair():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    config = tiny_config()
    single = build_model(config, tf.distribute.get_strategy())
    mirrored = build_model(config, strategy)
    for a, b in ((single.generator, mirrored.generator), (single.ema_generator, mirrored.ema_generator)):
        b.set_weights(a.get_weights())
    return config, single, mirrored, strategy


def test_sample_grid_and_attention_figure_on_two_replicas_equal_one_device(sagan_pair, tmp_path):
    config, single, mirrored, strategy = sagan_pair
    assert mirrored.distribute_strategy is strategy
    figures = []
    for model in (single, mirrored):
        grid = cb.SampleGrid(None, None, 3, config.z_dim, config.num_classes, per_class=3, seed=1)  # 9 rows: padded
        grid.set_model(model)
        figures.append((grid.grid(), grid.attention_figure()))
    (grid1, attention1), (grid2, attention2) = figures
    assert grid1.shape == grid2.shape and attention1.shape == attention2.shape
    # uint8 images of float32 results: equal, up to a rare rounding flip of one level.
    assert np.abs(grid1.astype(int) - grid2.astype(int)).max() <= 1
    assert np.abs(attention1.astype(int) - attention2.astype(int)).max() <= 1
    direct = single.ema_generator((grid.z, grid.labels), training=False).numpy()
    assert np.abs(grid1.astype(int) - cb.image_grid(cb.to_uint8(direct), grid.rows).astype(int)).max() <= 1


def test_ema_statistics_callback_uses_the_strategy(sagan_pair):
    config, single, mirrored, strategy = sagan_pair
    results = []
    for model in (single, mirrored):
        callback = cb.EMAStatistics((2,), config.z_dim, config.num_classes, num_batches=3, batch_size=8, seed=2)
        callback.set_model(model)
        callback.refresh()
        results.append([layer.moving_variance.numpy() for layer in bn_layers(model.ema_generator)])
    # 3 batches asked for: rounded up to 4 on 2 replicas (and on 1 device, 3): so they differ, and the
    # mirrored one equals one device's standing statistics over the same 4 batches.
    reference = single.ema_generator
    StandingStatistics(reference)(noise_batches(config.z_dim, config.num_classes, 4, 8, seed=2))
    for a, b in zip([layer.moving_variance.numpy() for layer in bn_layers(reference)], results[1]):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


class PooledPixels:
    """A stand-in feature network: 4×4 average-pooled pixels as features, a fixed projection as logits."""
    name = "pooled_pixels"
    fingerprint = ""

    def __init__(self, num_classes):
        self.projection = np.random.default_rng(0).standard_normal((64, num_classes)).astype(np.float32)

    def __call__(self, images):
        images = np.asarray(images, np.float32)
        features = images.reshape(len(images), 8, 4, 8, 4, -1).mean(axis=(2, 4)).reshape(len(images), -1)
        return features, features @ self.projection


def test_evaluation_on_two_replicas_equals_one_device(sagan_pair):
    config, single, mirrored, strategy = sagan_pair
    network = PooledPixels(config.num_classes)
    real = np.tanh(np.random.default_rng(1).standard_normal((24, 32, 32, 1))).astype(np.float32)
    reference = load_or_compute_reference(None, network, real, 24, "toy", num_features=24, batch_size=8)
    plain = make_evaluate_fn(config, network, reference, num_samples=15, batch_size=5)
    distributed = make_evaluate_fn(config, network, reference, num_samples=15, batch_size=5, strategy=strategy,
                                   call=functools.partial(distributed_call, strategy=strategy))
    a, b = plain(single.ema_generator), distributed(mirrored.ema_generator)
    assert sorted(a) == sorted(b) and len(a) >= 4
    for key in a:
        assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key


def test_train_step_logs_are_the_mean_over_replicas_under_any_reduction(two_device_strategy):
    """Keras reduces a train step's logs with "first" under TPUStrategy and "mean" otherwise: the step
    averages them over the replicas itself, so both reductions give the global-batch mean. Replica 1's
    real images are other images than replica 0's, so their own losses differ."""
    from keras.src.backend.tensorflow.trainer import reduce_per_replica

    model = build_model(tiny_config(batch_size=4, n_dis=1), two_device_strategy)
    rng = np.random.default_rng(0)
    images = np.concatenate([rng.uniform(-1, 1, (2, 32, 32, 1)), np.full((2, 32, 32, 1), 0.9)]).astype(np.float32)
    data = next(iter(two_device_strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors((images, np.array([0, 1, 2, 0], np.int32))))))
    logs = tf.function(lambda batch: two_device_strategy.run(model.train_step, args=(batch,)))(data)
    for name, value in logs.items():
        first, second = [float(v) for v in two_device_strategy.experimental_local_results(value)]
        assert first == second, name
        assert float(reduce_per_replica(value, two_device_strategy, "first")) == first, name
        np.testing.assert_allclose(float(reduce_per_replica(value, two_device_strategy, "mean")), first, rtol=1e-6)


def test_health_scalars_read_in_cross_replica_context_are_every_replicas_values(two_device_strategy):
    """The values that live in the weights are read outside `strategy.run` (sagan_tf.runtime.replicas): there they
    equal what each replica reads inside it."""
    model = build_model(tiny_config(), two_device_strategy)
    for layer in spectral_norm_layers(model.discriminator):  # distinct u per layer, so σ differs from 1
        layer.u.assign(np.linspace(1.0, 2.0, layer.u.shape[0]).astype(np.float32))
    outside = {name: float(value) for name, value in model.health_scalars().items()}
    inside = tf.function(lambda: two_device_strategy.run(model.health_scalars))()
    for name, value in inside.items():
        for replica_value in two_device_strategy.experimental_local_results(value):
            np.testing.assert_allclose(float(replica_value), outside[name], rtol=1e-6, err_msg=name)
    assert outside["d_sigma_max"] > 0 and outside["d_sigma_max"] != 1.0
