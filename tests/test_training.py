"""The SAGAN train step: distribution equivalence, update counts, EMA, exact resume, non-finite guard."""
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.training import SAGAN, build_model, train
from sagan_tf.training.checkpointing import NonFiniteError
from sagan_tf.training.loop import replica_major
from tests.helpers import tiny_config
from tests.shared_runs import IMAGES, in_memory_dataset

def weights(network):
    return [w.numpy().copy() for w in network.weights]


def trainable(network):
    return [w.numpy().copy() for w in network.trainable_weights]


def sgd_model(config, strategy):
    """SGD instead of Adam: Adam's first step is ≈ lr·sign(g), blind to how the loss is scaled and
    unstable for gradients near 0; SGD's update is proportional to the gradient."""
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = SAGAN.from_experiment(config)
        model.compile(g_optimizer=keras.optimizers.SGD(1e-3), d_optimizer=keras.optimizers.SGD(1e-3))
    return model


def _sn_layers(network):
    from sagan_tf.layers import SpectralNormalization
    return [layer for layer in network._flatten_layers(include_self=False) if isinstance(layer, SpectralNormalization)]


def _state_before_the_step(model):
    """What the one-step tests compare against, taken before the model's first step."""
    return dict(
        g=weights(model.generator), d=weights(model.discriminator),
        g_trainable=trainable(model.generator), d_trainable=trainable(model.discriminator),
        ema_trainable=trainable(model.ema_generator),
        sn={id(layer): (layer.kernel.numpy().astype(np.float64), layer.u.numpy().astype(np.float64))
            for network in (model.generator, model.discriminator) for layer in _sn_layers(network)})


def one_step_on_one_and_two_devices(config, strategy):
    """The same SGD model one step on one device and one step on `strategy`'s replicas, from the same
    weights and data (laid out for the replicas as training lays it out: `loop.replica_major`).
    Returns {config, single, mirrored, before} with `before` the single model's state before its step."""
    single = sgd_model(config, tf.distribute.get_strategy())
    mirrored = sgd_model(config, strategy)
    for a, b in ((single.generator, mirrored.generator), (single.discriminator, mirrored.discriminator),
                 (single.ema_generator, mirrored.ema_generator)):
        b.set_weights(a.get_weights())
    before = _state_before_the_step(single)
    rows = config.batch_size * config.n_dis
    single.fit(in_memory_dataset(rows), epochs=1, steps_per_epoch=1, verbose=0)
    data = strategy.experimental_distribute_dataset(replica_major(in_memory_dataset(rows), config, strategy))
    mirrored.fit(data, epochs=1, steps_per_epoch=1, verbose=0)
    return dict(config=config, single=single, mirrored=mirrored, before=before)


def update_mismatch(steps):
    """max over trainable weights of |mirrored update − single update| / max |single update|, and the
    largest single-device update (which must be well above rounding for the comparison to mean anything)."""
    initial = steps["before"]["g_trainable"] + steps["before"]["d_trainable"]
    # Trainable weights: cross-replica BN's moving variance is computed as E[x²] − E[x]², whose float32
    # rounding differs from the single-device formula at the 1e-3 level of its (tiny) update.
    after_single = trainable(steps["single"].generator) + trainable(steps["single"].discriminator)
    after_mirrored = trainable(steps["mirrored"].generator) + trainable(steps["mirrored"].discriminator)
    # Compare the updates: a loss scaled by the local instead of the global batch doubles them.
    mismatch = 0.0
    for w0, a, b in zip(initial, after_single, after_mirrored):
        scale = max(np.abs(a - w0).max(), 1e-6)
        mismatch = max(mismatch, float(np.abs((b - w0) - (a - w0)).max() / scale))
    return mismatch, max(np.abs(a - w0).max() for w0, a in zip(initial, after_single))


@pytest.fixture(scope="module")
def sgd_steps(two_device_strategy):
    """One train step serves several tests: the same SGD model (cross-replica BN, n_dis=1, EMA from step 0
    with decay 0.9) one step on one device and one step on two replicas."""
    # Cross-replica BN makes G's batch statistics those of the global batch, as on one device.
    config = tiny_config(sync_bn=True, batch_size=4, n_dis=1, ema_start=0, ema_decay=0.9)
    return one_step_on_one_and_two_devices(config, two_device_strategy)


@pytest.fixture(scope="module")
def adam_step():
    """The trainer's own model (build_model: Adam) with N(0, 0.02) weights, n_dis=1 and the EMA starting at
    step 5, one step: {config, model, before}."""
    config = tiny_config(n_dis=1, batch_size=4, init="normal", ema_decay=0.9, ema_start=5)
    model = build_model(config, tf.distribute.get_strategy())
    before = _state_before_the_step(model)
    model.fit(in_memory_dataset(4), epochs=1, steps_per_epoch=1, verbose=0)
    return dict(config=config, model=model, before=before)


def test_mirrored_step_equals_single_device_step(sgd_steps):
    mismatch, largest_update = update_mismatch(sgd_steps)
    assert mismatch < 2e-3 and largest_update > 1e-4, (mismatch, largest_update)


def test_mirrored_step_equals_single_device_step_with_two_d_updates(two_device_strategy):
    """n_dis = 2: each replica's share of D update k's real batch is laid out to be the one device's
    (without `replica_major` replica 0 would take both halves of batch 0, and D update 0 other images)."""
    config = tiny_config(sync_bn=True, batch_size=4, n_dis=2, ema_start=0, ema_decay=0.9)
    mismatch, largest_update = update_mismatch(one_step_on_one_and_two_devices(config, two_device_strategy))
    assert mismatch < 2e-3 and largest_update > 1e-4, (mismatch, largest_update)


def test_without_cross_replica_batch_norm_the_replicas_step_differs(two_device_strategy):
    """Where the equivalence ends (docs/distributed.md): with sync_bn=False, G normalises each replica's
    half batch by its own statistics, so its images and both updates differ from one device's."""
    config = tiny_config(sync_bn=False, batch_size=4, n_dis=1, ema_start=0, ema_decay=0.9)
    mismatch, _ = update_mismatch(one_step_on_one_and_two_devices(config, two_device_strategy))
    assert mismatch > 1e-2, mismatch


def test_one_step_updates_both_networks_and_n_dis_counts():
    config = tiny_config(n_dis=2, batch_size=4)
    model = build_model(config, tf.distribute.get_strategy())
    g0, d0 = weights(model.generator), weights(model.discriminator)
    model.fit(in_memory_dataset(8), epochs=1, steps_per_epoch=1, verbose=0)
    assert int(model.g_optimizer.iterations) == 1 and int(model.d_optimizer.iterations) == 2
    assert max(np.abs(a - b).max() for a, b in zip(weights(model.generator), g0)) > 1e-5
    assert max(np.abs(a - b).max() for a, b in zip(weights(model.discriminator), d0)) > 1e-5


def test_one_power_iteration_per_training_step_in_g_and_d(adam_step):
    # G runs in training mode twice per step (the D step's fakes, its own update) and D once in
    # training mode (n_dis=1); each network's u must advance exactly once, from the weights before the update.
    # N(0, 0.02) weights: an orthogonal kernel's u converges in one iteration, hiding a second one.
    model, before = adam_step["model"], adam_step["before"]["sn"]
    assert adam_step["config"].n_dis == 1 and adam_step["config"].init == "normal"

    def iterate(w_mat, u):
        v = w_mat @ u / np.linalg.norm(w_mat @ u)
        return v @ w_mat / np.linalg.norm(v @ w_mat)

    for network in (model.generator, model.discriminator):
        layers = _sn_layers(network)
        distinguishable = 0
        for layer in layers:
            kernel, u = before[id(layer)]
            w_mat = kernel.reshape(-1, kernel.shape[-1])
            once = iterate(w_mat, u)
            distinguishable += np.abs(once - iterate(w_mat, once)).max() > 1e-3
            np.testing.assert_allclose(layer.u.numpy(), once, atol=2e-5, err_msg=layer.name)
        # Most layers are still far from converged after one iteration, so a second one would show.
        assert len(layers) > 10 and distinguishable > len(layers) // 2, (network.name, distinguishable, len(layers))


@pytest.mark.parametrize("run, expected_decay", [("sgd_steps", 0.9), ("adam_step", 0.0)])
def test_ema_follows_decay_formula(request, run, expected_decay):
    # sgd_steps: ema_start=0, decay 0.9 from the first step; adam_step: ema_start=5, a plain copy before it.
    run = request.getfixturevalue(run)
    model, before = run.get("model") or run["single"], run["before"]
    np.testing.assert_array_equal(np.concatenate([b.ravel() for b in before["g_trainable"]]),
                                  np.concatenate([b.ravel() for b in before["ema_trainable"]]))
    for ema, g, g0 in zip(model.ema_generator.trainable_weights, model.generator.trainable_weights,
                          before["g_trainable"]):
        np.testing.assert_allclose(ema.numpy(), expected_decay * g0 + (1 - expected_decay) * g.numpy(),
                                   rtol=1e-5, atol=1e-7)
    for ema, g in zip(model.ema_generator.non_trainable_weights, model.generator.non_trainable_weights):
        np.testing.assert_array_equal(ema.numpy(), g.numpy())


def test_noise_differs_across_replicas_and_steps(two_device_strategy):
    model = build_model(tiny_config(), two_device_strategy)

    @tf.function
    def draw():
        return two_device_strategy.run(lambda: model.replica_noise(2, purpose=0))

    z, labels = draw()
    z0, z1 = [t.numpy() for t in two_device_strategy.experimental_local_results(z)]
    assert z0.shape == (2, 8) and not np.allclose(z0, z1)
    single = build_model(tiny_config(), tf.distribute.get_strategy())
    z_global, _ = single.replica_noise(4, purpose=0)
    np.testing.assert_allclose(np.concatenate([z0, z1]), z_global.numpy())
    single.g_optimizer.iterations.assign(1)
    assert not np.allclose(single.replica_noise(4, purpose=0)[0].numpy(), z_global.numpy())


def _all_state(model):
    state = weights(model.generator) + weights(model.discriminator) + weights(model.ema_generator)
    state += [v.numpy().copy() for v in model.g_optimizer.variables + model.d_optimizer.variables]
    return state


@pytest.mark.slow  # ~80 s each: trains the same tiny run twice, interrupted and not
@pytest.mark.parametrize("augment", ["", "translation,cutout"])
def test_resume_equals_uninterrupted_run(tmp_path, augment):
    config = tiny_config(train_steps=6, checkpoint_every=3, ema_start=2, augment=augment)
    dataset_fn = lambda start: in_memory_dataset(4, start)
    train(config, str(tmp_path / "resumed"), dataset_fn=dataset_fn, verbose=0)
    config.train_steps = 12
    resumed = train(config, str(tmp_path / "resumed"), dataset_fn=dataset_fn, verbose=0)
    straight = train(config, str(tmp_path / "straight"), dataset_fn=dataset_fn, verbose=0)
    assert int(resumed.step) == int(straight.step) == 12
    for a, b in zip(_all_state(resumed), _all_state(straight)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert tf.train.latest_checkpoint(str(tmp_path / "resumed" / "checkpoints")).endswith("ckpt-12")


@pytest.mark.slow  # fault injection, ~25 s
def test_non_finite_loss_stops_run_and_keeps_last_good_checkpoint(tmp_path):
    config = tiny_config(train_steps=2, checkpoint_every=2)
    model_dir = str(tmp_path / "run")
    train(config, model_dir, dataset_fn=lambda start: in_memory_dataset(4, start), verbose=0)
    poisoned = IMAGES.copy()
    poisoned[:] = np.nan
    config.train_steps = 6
    with pytest.raises(NonFiniteError, match=r"step 3.*d_loss"):
        train(config, model_dir, dataset_fn=lambda start: in_memory_dataset(4, start, poisoned), verbose=0)
    latest = tf.train.latest_checkpoint(f"{model_dir}/checkpoints")
    assert latest.endswith("ckpt-2")
    reader = tf.train.load_checkpoint(latest)
    for name in reader.get_variable_to_shape_map():
        value = reader.get_tensor(name)
        if np.issubdtype(np.asarray(value).dtype, np.floating):
            assert np.all(np.isfinite(value)), name


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"), reason="dataset-fashion-mnist is not installed")
@pytest.mark.slow  # trains or runs CLIs for tens of seconds (docs/testing.md)
def test_periodic_evaluation_is_wired_into_train(tmp_path):
    from sagan_tf.evaluation.classifier import build_classifier, save_classifier
    save_classifier(build_classifier(width=4, feature_dim=8), str(tmp_path / "clf"), dataset_name="fashion_mnist")
    config = tiny_config(num_classes=10, train_steps=2, eval_every=2, eval_samples=16,
                         eval_feature_network=f"classifier:{tmp_path / 'clf'}")
    train(config, str(tmp_path / "run"), dataset_fn=lambda start: in_memory_dataset(4, start), verbose=0)
    best = json.loads((tmp_path / "run" / "best" / "best.json").read_text())
    assert best["step"] == 2 and best["metric"].startswith("fid/")
    tags = set()
    for name in (tmp_path / "run" / "train").glob("events*"):
        for event in tf.compat.v1.train.summary_iterator(str(name)):
            tags.update(value.tag for value in event.summary.value)
    assert any(tag.startswith("fid") or "/fid" in tag for tag in tags), tags


def test_standing_statistics_are_the_ema_weights_own_batch_statistics():
    from sagan_tf.models import Generator
    from sagan_tf.sampling.noise import noise_batches
    from sagan_tf.sampling.standing_statistics import standing_statistics
    generator = Generator(tiny_config())
    generator.build()
    batches = noise_batches(8, 3, num_batches=1, batch_size=16, seed=1)
    snapshot = generator.get_weights()
    standing_statistics(generator, batches)
    inference = generator(batches[0], training=False).numpy()
    # With one batch the moving statistics are exactly that batch's: inference equals the training pass.
    generator.set_weights(snapshot)
    np.testing.assert_allclose(inference, generator(batches[0], training=True).numpy(), atol=2e-4)
    generator.set_weights(snapshot)
    assert np.abs(generator(batches[0], training=False).numpy() - inference).max() > 1e-2
    assert [layer.momentum for layer in generator._flatten_layers()
            if isinstance(layer, keras.layers.BatchNormalization)][0] == 0.9


def test_g_ortho_reg_adds_biggans_update_to_g_only():
    """One SGD step with g_ortho_reg=β against the same step with 0, from the same weights and noise:
    G's kernels differ by exactly −lr·β·2W(WᵀW ⊙ (1 − I)) (losses.orthogonal_penalty), everything else not
    at all. Eager train_step: one step, no tracing."""
    from sagan_tf.training.gan import spectral_norm_layers
    beta, lr = 100.0, 1e-3  # a large β so that its update stands far above float32 rounding of N(0, 0.02) weights
    # N(0, 0.02) weights: orthogonal ones (the default init) have no overlaps to penalise yet.
    models = [sgd_model(tiny_config(n_dis=1, batch_size=4, init="normal", g_ortho_reg=g_ortho_reg),
                        tf.distribute.get_strategy()) for g_ortho_reg in (0.0, beta)]
    for a, b in ((models[0].generator, models[1].generator), (models[0].discriminator, models[1].discriminator)):
        b.set_weights(a.get_weights())
    kernels = [layer.kernel for layer in spectral_norm_layers(models[0].generator)]
    expected = {id(k): -lr * beta * 2 * (w @ ((w.T @ w) * (1 - np.eye(w.shape[1])))).reshape(k.shape)
                for k in kernels for w in [k.numpy().astype(np.float64).reshape(-1, k.shape[-1])]}
    batch = next(iter(in_memory_dataset(4)))
    for model in models:
        model.train_step(batch)
    names = [k.path for k in kernels]
    for plain, regularised in zip(models[0].generator.weights, models[1].generator.weights):
        difference = regularised.numpy().astype(np.float64) - plain.numpy()
        if plain.path in names:
            want = expected[id(kernels[names.index(plain.path)])]
            np.testing.assert_allclose(difference, want, rtol=0, atol=2e-7 + 0.02 * np.abs(want).max(),
                                       err_msg=plain.path)
        else:
            np.testing.assert_array_equal(difference, 0, err_msg=plain.path)
    assert max(np.abs(e).max() for e in expected.values()) > 1e-6  # the regulariser did something measurable
    for plain, regularised in zip(models[0].discriminator.weights, models[1].discriminator.weights):
        np.testing.assert_array_equal(regularised.numpy(), plain.numpy(), err_msg=plain.path)


def test_noise_keys_never_coincide():
    """z's key and the labels' key of every draw are distinct from each other and from every other draw's
    (the labels' key was once z's pair swapped: equal whenever the draw's counter equals the seed)."""
    from sagan_tf.training.gan import noise_keys

    keys = []
    for seed in range(6):
        for counter in range(6):
            keys.extend(tuple(int(k) for k in key.numpy()) for key in noise_keys(seed, counter))
    assert len(set(keys)) == len(keys) == 2 * 36


def test_replica_major_order_gives_each_replica_its_share_of_every_d_batch():
    from sagan_tf.runtime.replicas import replica_major_order

    order = replica_major_order(global_batch=4, blocks=2, replicas=2)
    # Global rows 0-3 are D update 0's batch, 4-7 update 1's; replica r takes contiguous half r.
    np.testing.assert_array_equal(order, [0, 1, 4, 5, 2, 3, 6, 7])
    np.testing.assert_array_equal(replica_major_order(6, 1, 3), np.arange(6))
    np.testing.assert_array_equal(replica_major_order(6, 3, 1), np.arange(18))
    with pytest.raises(ValueError, match="6 rows .* 4 replicas"):
        replica_major_order(6, 2, 4)


def test_each_name_has_one_meaning():
    """SAGAN builds from an experiment config with from_experiment; from_config stays Keras' deserialisation
    hook. The train step's per-replica draw is replica_noise, apart from sampling.sample_noise (numpy)."""
    import keras

    from sagan_tf import sampling
    assert SAGAN.from_config.__func__ is keras.Model.from_config.__func__
    assert not hasattr(SAGAN, "sample_noise") and callable(sampling.sample_noise)
