"""Resampling folded into convolutions (`fused_resample`): the same function as the plain blocks, fewer FLOPs.

References: the plain forms written out with TF's own upsample/conv/pool ops in float64, and the blocks
and networks with `fused_resample=False` holding the same weights.
"""
import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.layers import DiscriminatorBlock, GeneratorBlock
from sagan_tf.layers import resample_conv
from sagan_tf.models import Discriminator, Generator, cost
from sagan_tf.models.architecture import model_fields
from tests.helpers import load_preset, tiny_config


def _plain_upsample_conv(x, w):
    return tf.nn.conv2d(tf.repeat(tf.repeat(x, 2, axis=1), 2, axis=2), w, 1, "SAME")


def _plain_conv_avg_pool(x, w):
    return tf.nn.avg_pool2d(tf.nn.conv2d(x, w, 1, "SAME"), 2, 2, "VALID")


@pytest.mark.parametrize("fused, plain, shape", [
    (resample_conv.upsample_conv, _plain_upsample_conv, (2, 4, 4, 3)),
    (resample_conv.upsample_conv, _plain_upsample_conv, (1, 5, 7, 2)),   # odd, non-square
    (resample_conv.upsample_conv, _plain_upsample_conv, (3, 1, 2, 5)),   # 1 row: every neighbour is padding
    (resample_conv.conv_avg_pool, _plain_conv_avg_pool, (2, 4, 4, 3)),
    (resample_conv.conv_avg_pool, _plain_conv_avg_pool, (1, 8, 6, 2)),
    (resample_conv.conv_avg_pool, _plain_conv_avg_pool, (3, 2, 2, 5)),   # one output pixel
])
def test_fused_form_equals_the_plain_form_in_float64(fused, plain, shape):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=shape), tf.float64)
    w = tf.constant(rng.normal(size=(3, 3, shape[-1], 6)), tf.float64)
    np.testing.assert_allclose(fused(x, w), plain(x, w), atol=1e-12)


def test_derived_kernels_by_hand():
    # One input and output channel: the 4×4 pooled kernel is the 3×3 one convolved with a 2×2 box / 4,
    # and phase (0, 0) of the upsampling kernel sums the taps that land on each low-resolution neighbour.
    w = np.arange(1.0, 10.0).reshape(3, 3)
    k4 = resample_conv.conv_avg_pool_kernel(tf.constant(w.reshape(3, 3, 1, 1))).numpy()[..., 0, 0]
    box = np.zeros((4, 4))
    for a in (0, 1):
        for b in (0, 1):
            box[a:a + 3, b:b + 3] += w / 4
    np.testing.assert_allclose(k4, box)
    phases = resample_conv.upsample_conv_kernel(tf.constant(w.reshape(3, 3, 1, 1))).numpy()[:, :, 0, :]
    np.testing.assert_allclose(phases[..., 0], [[w[0, 0], w[0, 1] + w[0, 2]],
                                                [w[1, 0] + w[2, 0], w[1:, 1:].sum()]])  # phase (0, 0)
    np.testing.assert_allclose(phases[..., 3], [[w[:2, :2].sum(), w[:2, 2].sum()],
                                                [w[2, :2].sum(), w[2, 2]]])  # phase (1, 1)


def _copy_weights(source, target):
    for s, t in zip(source.weights, target.weights):
        assert s.path == t.path
        t.assign(s)


def _forward_and_grads(block, args, training):
    x = args[0]
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = block(*args, training=training)
        loss = tf.reduce_sum(y * tf.cos(y))  # a non-linear loss: non-uniform output gradients
    grads = tape.gradient(loss, [x] + block.trainable_weights)
    return y, [None if g is None else tf.convert_to_tensor(g) for g in grads]  # CBN tables: IndexedSlices


@pytest.mark.parametrize("kind", ["generator", "discriminator", "discriminator_first"])
def test_fused_blocks_equal_plain_blocks_forward_and_gradients(kind):
    rng = np.random.default_rng(2)
    x = tf.constant(rng.normal(size=(4, 8, 8, 16)), tf.float32)
    labels = tf.constant([0, 1, 2, 1])
    if kind == "generator":
        make = lambda fused: GeneratorBlock(8, 3, fused_resample=fused, name="block")  # noqa: E731
        args = (x, labels)
    else:
        make = lambda fused: DiscriminatorBlock(  # noqa: E731
            32, preactivation=kind == "discriminator", fused_resample=fused, name="block")
        args = (x,)
    fused, plain = make(True), make(False)
    plain(*args, training=False)
    fused(*args, training=False)
    _copy_weights(plain, fused)
    y_plain, g_plain = _forward_and_grads(plain, args, training=True)
    y_fused, g_fused = _forward_and_grads(fused, args, training=True)
    np.testing.assert_allclose(y_fused, y_plain, rtol=1e-5, atol=1e-5)
    assert len(g_fused) == len(g_plain) and all(g is not None for g in g_fused)
    # float32 rounding relative to the largest gradient (G's conv1 bias feeds a batch norm, so its exact
    # gradient is 0 and both forms give rounding noise there)
    scale = max(float(tf.reduce_max(tf.abs(g))) for g in g_plain)
    for gf, gp, weight in zip(g_fused, g_plain, [x] + plain.trainable_weights):
        np.testing.assert_allclose(gf, gp, rtol=1e-4, atol=1e-6 * scale, err_msg=getattr(weight, "path", "input"))
    # one power iteration each: the spectral-norm u advanced identically
    for wf, wp in zip(fused.non_trainable_weights, plain.non_trainable_weights):
        np.testing.assert_allclose(wf, wp, rtol=1e-6, atol=1e-7)


def test_fused_networks_equal_plain_networks_with_the_same_variables():
    config = tiny_config(ch=8)
    g_fused, g_plain = Generator(config), Generator(tiny_config(ch=8, fused_resample=False))
    d_fused, d_plain = Discriminator(config), Discriminator(tiny_config(ch=8, fused_resample=False))
    for network in (g_fused, g_plain, d_fused, d_plain):
        network.build()
    _copy_weights(g_plain, g_fused)  # same variable paths: checkpoints of either form restore in the other
    _copy_weights(d_plain, d_fused)
    z = tf.random.stateless_normal((4, config.z_dim), seed=[1, 2])
    labels = tf.constant([0, 1, 2, 0])
    images = g_plain((z, labels), training=True)
    np.testing.assert_allclose(g_fused((z, labels), training=True), images, atol=2e-5)
    np.testing.assert_allclose(d_fused((images, labels), training=True), d_plain((images, labels), training=True),
                               rtol=1e-4, atol=1e-4)


def test_config_without_the_field_gets_the_fused_form():
    config = tiny_config()
    del config["fused_resample"]
    assert model_fields(config)["fused_resample"] is True


def test_executed_flops_at_128_are_at_least_1_4x_below_nominal():
    spec = model_fields(load_preset("imagenet128"))
    nominal, executed = cost.train_step_flops(spec), cost.train_step_flops(spec, executed=True)
    assert nominal / executed >= 1.4
    assert cost.train_step_flops(dict(spec, fused_resample=False), executed=True) == nominal


def test_executed_macs_of_one_generator_block_by_hand():
    # imagenet128's first G block: 1024 -> 1024 channels, 4x4 -> 8x8.
    spec = model_fields(load_preset("imagenet128"))
    _, block0 = cost.generator_macs(spec, executed=True)[1]
    c = 1024
    first = 5 * 5 * 4 * c * 4 * c            # 2x2 valid conv, 4c filters, on the 6x6 padded 4x4 map
    second = 8 * 8 * 9 * c * c                # the second 3x3 conv at 8x8
    shortcut = 4 * 4 * c * c                  # 1x1 conv before upsampling
    assert block0 == first + second + shortcut
