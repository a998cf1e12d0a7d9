"""Spectral normalization: σ, its gradient, what is (not) updated, Embedding, mixed precision, replicas."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.layers import SpectralNormalization


def _dense(units=7, in_dim=12, seed=0):
    layer = SpectralNormalization(keras.layers.Dense(units, kernel_initializer=keras.initializers.RandomNormal(seed=seed)))
    layer.build((None, in_dim))
    return layer


def _numpy_sigma(w_mat, u):
    return np.linalg.norm(w_mat @ u)


def test_power_iteration_converges_to_largest_singular_value():
    layer = _dense()
    x = np.ones((2, 12), np.float32)
    for _ in range(60):
        layer(x, training=True)
    w_sn, sigma, _ = layer.normalized_kernel(training=False)
    kernel = layer.kernel.numpy()
    np.testing.assert_allclose(np.linalg.svd(w_sn.numpy(), compute_uv=False)[0], 1.0, atol=1e-3)
    np.testing.assert_allclose(float(sigma), np.linalg.svd(kernel, compute_uv=False)[0], rtol=1e-3)


def test_gradient_flows_through_sigma_and_matches_analytic_formula():
    layer = _dense()
    layer(np.ones((1, 12), np.float32), training=True)
    c = np.random.default_rng(1).normal(size=(12, 7)).astype(np.float32)
    with tf.GradientTape() as tape:
        w_sn, _, _ = layer.normalized_kernel(training=False)
        loss = tf.reduce_sum(c * w_sn)
    grad = tape.gradient(loss, layer.kernel.value).numpy()

    w, u = layer.kernel.numpy().astype(np.float64), layer.u.numpy().astype(np.float64)
    sigma = _numpy_sigma(w, u)
    v = w @ u / sigma
    expected = c / sigma - (np.sum(c * w) / sigma ** 2) * np.outer(v, u)
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)
    # Without the σ term the gradient would be c/σ: make sure that is measurably different.
    assert np.abs(grad - c / sigma).max() > 1e-3


def test_forward_uses_w_over_sigma_and_never_overwrites_the_kernel():
    layer = _dense()
    kernel_before = layer.kernel.numpy().copy()
    x = np.random.default_rng(2).normal(size=(3, 12)).astype(np.float32)
    for _ in range(3):
        y = layer(x, training=True).numpy()
    np.testing.assert_array_equal(layer.kernel.numpy(), kernel_before)
    sigma = _numpy_sigma(kernel_before, layer.u.numpy())
    np.testing.assert_allclose(y, x @ (kernel_before / sigma) + layer.layer.bias.numpy(), rtol=1e-5, atol=1e-6)


def test_inference_leaves_u_unchanged_and_sees_the_training_sigma():
    layer = _dense()
    x = np.random.default_rng(3).normal(size=(3, 12)).astype(np.float32)
    u0 = layer.u.numpy().copy()
    y_train = layer(x, training=True).numpy()
    u1 = layer.u.numpy().copy()
    assert not np.allclose(u0, u1), "a training call must advance u"
    y_infer = layer(x, training=False).numpy()
    np.testing.assert_array_equal(layer.u.numpy(), u1)
    np.testing.assert_allclose(y_infer, y_train, rtol=1e-6)


def test_paused_training_call_reuses_u_and_a_fresh_u_is_normalised():
    from sagan_tf.layers.spectral_norm import power_iteration_paused
    layer = _dense()
    x = np.random.default_rng(6).normal(size=(3, 12)).astype(np.float32)
    u0, kernel = layer.u.numpy().copy(), layer.kernel.numpy()
    assert abs(np.linalg.norm(u0) - 1) > 0.1  # the initial draw is not a unit vector
    with power_iteration_paused():
        y = layer(x, training=True).numpy()
    np.testing.assert_array_equal(layer.u.numpy(), u0)
    sigma = _numpy_sigma(kernel, u0 / np.linalg.norm(u0))
    np.testing.assert_allclose(y, x @ (kernel / sigma) + layer.layer.bias.numpy(), rtol=1e-5, atol=1e-6)
    layer(x, training=True)  # outside the context training advances u again
    assert not np.allclose(layer.u.numpy(), u0)


def test_conv2d_matches_convolution_with_normalised_kernel():
    layer = SpectralNormalization(keras.layers.Conv2D(5, 3, padding="same"))
    x = np.random.default_rng(4).normal(size=(2, 6, 6, 3)).astype(np.float32)
    y = layer(x, training=True).numpy()
    kernel = layer.kernel.numpy()
    sigma = _numpy_sigma(kernel.reshape(-1, 5), layer.u.numpy())
    expected = tf.nn.conv2d(x, kernel / sigma, 1, "SAME").numpy() + layer.layer.bias.numpy()
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_embedding_rows_are_rows_of_normalised_table():
    layer = SpectralNormalization(keras.layers.Embedding(10, 6))
    layer.build((None,))
    labels = np.array([3, 0, 9])
    rows = layer(labels, training=True).numpy()
    assert rows.dtype == np.float32
    table = layer.kernel.numpy()
    sigma = _numpy_sigma(table, layer.u.numpy())
    np.testing.assert_allclose(rows, table[labels] / sigma, rtol=1e-6)
    assert np.abs(rows).max() > 0


def test_mixed_bfloat16_keeps_float32_master_kernel_bit_identical():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    layer = _dense()
    before = layer.kernel.numpy().copy()
    x = np.random.default_rng(5).normal(size=(4, 12)).astype(np.float32)
    y = layer(x, training=True)
    assert y.dtype == tf.bfloat16
    assert layer.kernel.dtype == "float32" and layer.u.dtype == "float32"
    np.testing.assert_array_equal(layer.kernel.numpy(), before)
    # σ is computed from the float32 kernel: compare with the float32 reference.
    _, sigma, _ = layer.normalized_kernel(training=False)
    np.testing.assert_allclose(float(sigma), _numpy_sigma(before, layer.u.numpy()), rtol=1e-6)


def test_u_stays_identical_on_all_replicas(two_device_strategy):
    strategy = two_device_strategy
    with strategy.scope():
        layer = _dense()

    @tf.function
    def step(x):
        return strategy.run(lambda x: layer(x, training=True), args=(x,))

    dataset = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices(np.random.default_rng(6).normal(size=(8, 12)).astype(np.float32)).batch(8))
    u0 = layer.u.numpy().copy()
    for x in dataset:
        step(x)
    copies = [v.numpy() for v in strategy.experimental_local_results(layer.u.value)]
    assert len(copies) == 2
    np.testing.assert_array_equal(copies[0], copies[1])
    assert not np.allclose(copies[0], u0)


def test_config_round_trip():
    layer = SpectralNormalization(keras.layers.Conv2D(4, 3, padding="same"), power_iterations=2, epsilon=1e-8)
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert isinstance(restored, SpectralNormalization)
    assert restored.power_iterations == 2 and restored.epsilon == 1e-8
    assert restored.layer.get_config() == layer.layer.get_config()


def test_rejects_unsupported_layers_by_name():
    with pytest.raises(ValueError, match="LayerNormalization"):
        SpectralNormalization(keras.layers.LayerNormalization())
