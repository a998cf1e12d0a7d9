"""Config validation names the field, the value and what is allowed."""
import pytest

from sagan_tf.config import validate_config
from tests.helpers import load_preset, tiny_config


@pytest.mark.parametrize("preset", ["imagenet128", "imagenet64", "cifar10", "fashion_mnist"])
def test_presets_are_valid(preset):
    validate_config(load_preset(preset))


@pytest.mark.parametrize("field, value, message", [
    ("g_attention", [24], r"config\.g_attention=\[24\].*\[8, 16, 32\]"),
    ("d_attention", [32], r"config\.d_attention=\[32\].*\[8, 16\]"),
    ("init", "xavier", r"config\.init='xavier'.*'glorot', 'normal', 'orthogonal'"),
    ("mixed_precision", "fp8", r"config\.mixed_precision='fp8'.*float32"),
    ("resolution", 48, r"config\.resolution=48.*\[32, 64, 128, 256\]"),
    ("d_lr", -1e-4, r"config\.d_lr=-0\.0001.*positive"),
    ("loss", "wgan", r"config\.loss='wgan'.*hinge"),
    ("image_channels", 2, r"config\.image_channels=2"),
    ("n_dis", 0, r"config\.n_dis=0.*positive integer"),
    ("ch", 1, r"config\.ch=1.*multiple of 8"),
    ("g_ortho_reg", -1e-4, r"config\.g_ortho_reg=-0\.0001.*>= 0.*BigGAN uses 1e-4"),
])
def test_bad_values_are_named(field, value, message):
    config = tiny_config()
    config[field] = value
    with pytest.raises(ValueError, match=message):
        validate_config(config)


def test_batch_not_divisible_by_replicas_names_both_numbers():
    with pytest.raises(ValueError, match=r"batch_size=6.*replicas \(4\)"):
        validate_config(tiny_config(batch_size=6), num_replicas=4)
