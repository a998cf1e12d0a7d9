"""Self-attention, conditional batch norm and residual blocks against naive numpy computations."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.layers import (ConditionalBatchNormalization, DiscriminatorBlock, GeneratorBlock, SelfAttention,
                             SpectralNormalization)
from sagan_tf.layers.resblocks import avg_pool2x, upsample2x


def _normalised_1x1(sn_layer):
    """The (C_in, C_out) matrix of a spectrally normalised 1×1 conv, in numpy, from its stored u."""
    kernel = sn_layer.kernel.numpy()
    w = kernel.reshape(-1, kernel.shape[-1])
    return w / np.linalg.norm(w @ sn_layer.u.numpy())


def _maxpool2(x):
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _naive_attention(x, layer, pooled=True):
    b, h, w, c = x.shape
    theta = (x @ _normalised_1x1(layer.theta)).reshape(b, h * w, c // 8)
    phi = x @ _normalised_1x1(layer.phi)
    g = x @ _normalised_1x1(layer.g)
    if pooled:
        phi, g = _maxpool2(phi), _maxpool2(g)
    phi, g = phi.reshape(b, -1, c // 8), g.reshape(b, -1, c // 2)
    logits = np.einsum("bnc,bmc->bnm", theta, phi)
    beta = np.exp(logits - logits.max(-1, keepdims=True))
    beta /= beta.sum(-1, keepdims=True)
    o = (np.einsum("bnm,bmc->bnc", beta, g).reshape(b, h, w, c // 2)) @ _normalised_1x1(layer.o)
    return x + layer.gamma.numpy() * o, beta


@pytest.fixture
def feature_map():
    return np.random.default_rng(0).normal(size=(2, 8, 8, 16)).astype(np.float32)


def test_attention_is_identity_at_init(feature_map):
    layer = SelfAttention()
    np.testing.assert_array_equal(layer(feature_map, training=True).numpy(), feature_map)


@pytest.mark.parametrize("pooled", [True, False])
def test_attention_matches_naive_formula(feature_map, pooled):
    layer = SelfAttention(pooled=pooled)
    layer(feature_map, training=True)  # build and advance u once
    layer.gamma.assign(0.7)
    y, beta = layer(feature_map, training=False, return_attention=True)
    expected_y, expected_beta = _naive_attention(feature_map.astype(np.float64), layer, pooled)
    n = 64
    assert beta.shape == (2, n, n // 4 if pooled else n)
    np.testing.assert_allclose(beta.numpy(), expected_beta, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(y.numpy(), expected_y, rtol=1e-4, atol=1e-5)
    assert np.abs(y.numpy() - feature_map).max() > 1e-3


def test_attention_sizes_follow_the_paper(feature_map):
    layer = SelfAttention()
    layer(feature_map)
    assert [sub.layer.filters for sub in (layer.theta, layer.phi, layer.g, layer.o)] == [2, 2, 8, 16]
    assert all(isinstance(sub, SpectralNormalization) and not sub.layer.use_bias
               for sub in (layer.theta, layer.phi, layer.g, layer.o))
    assert layer.gamma.shape == () and float(layer.gamma.numpy()) == 0.0


def test_attention_softmax_stays_float32_under_mixed_precision(feature_map):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    layer = SelfAttention()
    y, beta = layer(feature_map, return_attention=True)
    assert y.dtype == tf.bfloat16 and beta.dtype == tf.float32
    np.testing.assert_allclose(beta.numpy().sum(-1), 1.0, rtol=1e-5)


def test_cbn_matches_numpy_with_batch_statistics():
    x = np.random.default_rng(1).normal(2.0, 3.0, size=(4, 3, 3, 5)).astype(np.float32)
    labels = np.array([0, 1, 2, 1])
    layer = ConditionalBatchNormalization(num_classes=3)
    layer(x, labels)
    gain = np.random.default_rng(2).normal(size=(3, 5)).astype(np.float32)
    bias = np.random.default_rng(3).normal(size=(3, 5)).astype(np.float32)
    layer.gain.embeddings.assign(gain)
    layer.bias.embeddings.assign(bias)
    y = layer(x, labels, training=True).numpy()
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    normalised = (x - mean) / np.sqrt(var + layer.epsilon)
    expected = normalised * gain[labels][:, None, None] + bias[labels][:, None, None]
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


def test_cbn_inference_uses_moving_statistics_and_labels_matter():
    x = np.random.default_rng(4).normal(size=(2, 2, 2, 3)).astype(np.float32)
    layer = ConditionalBatchNormalization(num_classes=2)
    layer(x, np.array([0, 1]))
    layer.bn.moving_mean.assign([1.0, -1.0, 0.5])
    layer.bn.moving_variance.assign([4.0, 1.0, 0.25])
    layer.gain.embeddings.assign([[1.0, 2.0, 3.0], [-1.0, 0.5, 1.0]])
    y0 = layer(x, np.array([0, 0]), training=False).numpy()
    y1 = layer(x, np.array([1, 1]), training=False).numpy()
    normalised = (x - np.array([1.0, -1.0, 0.5])) / np.sqrt(np.array([4.0, 1.0, 0.25]) + layer.epsilon)
    np.testing.assert_allclose(y0, normalised * np.array([1.0, 2.0, 3.0]), rtol=1e-5, atol=1e-6)
    assert np.abs(y0 - y1).max() > 0.1


def test_cbn_gain_initialised_to_one_and_unconditional_variant_has_affine():
    layer = ConditionalBatchNormalization(num_classes=4)
    layer.build((None, 2, 2, 3))
    np.testing.assert_array_equal(layer.gain.embeddings.numpy(), np.ones((4, 3)))
    plain = ConditionalBatchNormalization(num_classes=0)
    plain.build((None, 2, 2, 3))
    assert {w.name for w in plain.trainable_weights} == {"gamma", "beta"}


def test_discriminator_block_equals_its_definition():
    x = np.random.default_rng(5).normal(size=(2, 8, 8, 4)).astype(np.float32)
    block = DiscriminatorBlock(8, downsample=True, preactivation=True)
    y = block(x).numpy()
    h = block.conv2(tf.nn.relu(block.conv1(tf.nn.relu(x))))
    # Reference order of the shortcut: conv 1×1 first, then pool (pooling first is the same linear map).
    expected = avg_pool2x(h) + avg_pool2x(block.shortcut(x))
    np.testing.assert_allclose(y, expected.numpy(), rtol=1e-5, atol=1e-5)


def test_generator_block_equals_its_definition():
    x = np.random.default_rng(6).normal(size=(2, 4, 4, 8)).astype(np.float32)
    labels = np.array([1, 0])
    block = GeneratorBlock(4, num_classes=2)
    y = block(x, labels, training=False).numpy()
    h = tf.nn.relu(block.bn1(x, labels))
    h = block.conv1(upsample2x(h))
    h = block.conv2(tf.nn.relu(block.bn2(h, labels)))
    expected = h + block.shortcut(upsample2x(x))
    assert y.shape == (2, 8, 8, 4)
    np.testing.assert_allclose(y, expected.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(upsample2x(np.arange(4.0).reshape(1, 2, 2, 1))[0, :, :, 0],
                                  [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])


@pytest.mark.parametrize("make", [
    lambda: SelfAttention(pooled=False, init="normal"),
    lambda: ConditionalBatchNormalization(7, synchronized=True),
    lambda: GeneratorBlock(8, 3, upsample=True, init="glorot", synchronized_bn=True),
    lambda: DiscriminatorBlock(8, downsample=False, preactivation=False),
])
def test_layer_config_round_trip(make):
    layer = make()
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(restored) is type(layer)
    assert restored.get_config() == layer.get_config()
