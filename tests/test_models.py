"""Generator/Discriminator: reference parameter counts, shapes of every preset, serialisation, costs."""
import keras
import numpy as np
import pytest

from sagan_tf.config import default_config
from sagan_tf.models import Discriminator, Generator
from sagan_tf.models.architecture import model_fields
from sagan_tf.models.cost import discriminator_macs, generator_macs, train_step_flops
from tests.helpers import count_params, load_preset, run_cli, tiny_config


def _fast_init_config():
    """The 128² reference config with N(0, 0.02) init: counts do not depend on init, and orthogonal
    init of 40 M parameters is slow."""
    config = default_config()
    config.init = "normal"
    return config


def test_reference_parameter_counts_at_128():
    config = _fast_init_config()
    generator, discriminator = Generator(config), Discriminator(config)
    generator.build()
    discriminator.build()
    assert count_params(generator) == 42_078_852
    assert count_params(discriminator) == 39_463_618


def test_attention_at_64_matches_reference_approximation():
    config = _fast_init_config()
    config.g_attention, config.d_attention = [64], [64]
    generator, discriminator = Generator(config), Discriminator(config)
    generator.build()
    discriminator.build()
    assert abs(count_params(generator) - 42.02e6) < 0.01e6
    assert abs(count_params(discriminator) - 39.45e6) < 0.01e6


def test_reference_costs_per_image_at_128():
    spec = model_fields(default_config())
    assert sum(m for _, m in generator_macs(spec)) / 1e9 == pytest.approx(9.2, rel=0.01)
    # The reference code counts the D shortcut conv before pooling (4.7 GMAC); this one pools first (docs/architecture.md).
    assert sum(m for _, m in discriminator_macs(spec)) / 1e9 == pytest.approx(4.7, rel=0.02)
    assert train_step_flops(spec) / 1e9 == pytest.approx(159, rel=0.02)


@pytest.mark.parametrize("preset", ["imagenet128", "imagenet64", "cifar10", "fashion_mnist"])
def test_preset_shapes(preset):
    config = load_preset(preset)
    config.ch = 8  # shapes only depend on the table, not the width
    generator, discriminator = Generator(config), Discriminator(config)
    z = np.random.default_rng(0).normal(size=(2, config.z_dim)).astype(np.float32)
    labels = np.array([0, config.num_classes - 1])
    images = generator((z, labels)).numpy()
    size = config.resolution
    assert images.shape == (2, size, size, config.image_channels)
    assert images.dtype == np.float32 and np.abs(images).max() <= 1.0
    logits = discriminator((images, labels))
    assert logits.shape == (2,) and logits.dtype == "float32"
    assert len(generator.attention_layers) == len(config.g_attention)
    assert len(discriminator.attention_layers) == len(config.d_attention)


def test_resolution_256_from_the_table():
    config = default_config()
    config.update(dict(resolution=256, ch=8, g_attention=[64], d_attention=[64], num_classes=5))
    images = Generator(config)((np.zeros((1, 128), np.float32), np.array([2])))
    assert images.shape == (1, 256, 256, 3)
    assert Discriminator(config)((images, np.array([2]))).shape == (1,)


def test_projection_head_is_linear_plus_inner_product():
    config = tiny_config()
    discriminator = Discriminator(config)
    images = np.random.default_rng(1).normal(size=(3, 32, 32, 1)).astype(np.float32)
    labels = np.array([0, 2, 1])
    logits = discriminator((images, labels)).numpy()
    phi = discriminator.features(images).numpy()
    w_lin = discriminator.linear.normalized_kernel()[0].numpy()
    table = discriminator.embedding.normalized_kernel()[0].numpy()
    expected = phi @ w_lin[:, 0] + discriminator.linear.layer.bias.numpy()[0] + np.sum(table[labels] * phi, -1)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


def test_unconditional_variant_ignores_labels():
    config = tiny_config(num_classes=0)
    generator, discriminator = Generator(config), Discriminator(config)
    z = np.random.default_rng(2).normal(size=(2, config.z_dim)).astype(np.float32)
    a = generator((z, np.array([0, 0]))).numpy()
    np.testing.assert_array_equal(a, generator((z, np.array([5, 7]))).numpy())
    assert discriminator.embedding is None
    np.testing.assert_array_equal(discriminator((a, np.array([0, 0]))).numpy(),
                                  discriminator((a, np.array([3, 1]))).numpy())


@pytest.mark.parametrize("init", ["orthogonal", "normal", "glorot"])
def test_initialisers_are_the_named_ones(init):
    config = tiny_config(init=init)
    generator = Generator(config)
    generator.build()
    kernel = generator.blocks[0].conv1.kernel.numpy().reshape(-1, 16)
    if init == "normal":
        assert kernel.std() == pytest.approx(0.02, rel=0.15)
    elif init == "orthogonal":
        np.testing.assert_allclose(kernel.T @ kernel, np.eye(16), atol=1e-4)
    else:
        limit = np.sqrt(6 / (9 * 16 + 9 * 16))
        assert np.abs(kernel).max() <= limit and kernel.std() == pytest.approx(limit / np.sqrt(3), rel=0.15)


@pytest.mark.parametrize("cls", [Generator, Discriminator])
def test_model_serialisation_round_trip(cls, tmp_path):
    config = tiny_config()
    model = cls(config)
    model.build()
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored) is cls and restored.get_config() == model.get_config()
    for a, b in zip(model.weights, restored.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    rng = np.random.default_rng(3)
    if cls is Generator:
        inputs = (rng.normal(size=(2, config.z_dim)).astype(np.float32), np.array([0, 1]))
    else:
        inputs = (rng.normal(size=(2, 32, 32, 1)).astype(np.float32), np.array([0, 1]))
    np.testing.assert_array_equal(model(inputs).numpy(), restored(inputs).numpy())


def test_attention_maps_returned_per_attention_layer():
    config = tiny_config(g_attention=[16, 32], d_attention=[16])
    generator = Generator(config)
    images, maps = generator((np.zeros((2, 8), np.float32), np.array([0, 1])), return_attention=True)
    assert [m.shape for m in maps] == [(2, 256, 64), (2, 1024, 256)]
    _, d_maps = Discriminator(config)((images, np.array([0, 1])), return_attention=True)
    assert [m.shape for m in d_maps] == [(2, 256, 64)]


def test_summary_cli_prints_reference_counts():
    result = run_cli("sagan_tf.summary", "--config=configs/imagenet128.py", "--config.init=normal")
    assert result.returncode == 0, result.stderr[-2000:]
    last = result.stdout.strip().splitlines()[-6:]
    assert last[0] == "generator_params=42078852"
    assert last[1] == "discriminator_params=39463618"
    assert last[2].startswith("generator_gmacs_per_image=") and float(last[2].split("=")[1]) == pytest.approx(9.216, abs=1e-3)
    assert last[3].startswith("discriminator_gmacs_per_image=")
    nominal, executed = (float(line.split("=")[1]) for line in last[4:])
    assert last[4].startswith("train_step_gflops_per_image_nominal=") and nominal == pytest.approx(157.15, abs=0.01)
    assert last[5].startswith("train_step_gflops_per_image_executed=") and nominal / executed >= 1.4
    assert "attention2" in result.stdout


def test_summary_cli_applies_overrides():
    result = run_cli("sagan_tf.summary", "--config=configs/cifar10.py", "--config.ch=8", "--config.num_classes=0")
    assert result.returncode == 0, result.stderr[-2000:]
    config = load_preset("cifar10")
    config.ch, config.num_classes = 8, 0
    generator, discriminator = Generator(config), Discriminator(config)
    generator.build()
    discriminator.build()
    lines = result.stdout.strip().splitlines()[-6:]
    assert lines[0] == f"generator_params={count_params(generator)}"
    assert lines[1] == f"discriminator_params={count_params(discriminator)}"
