"""Config validation names the field, the value and what is allowed; presets round-trip through config.json."""
import json

import pytest

from sagan_tf.config import validate_config
from tests.helpers import load_preset, tiny_config


PRESETS = ["imagenet128", "imagenet64", "cifar10", "fashion_mnist", "fashion_mnist_ttur2x"]


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_are_valid(preset):
    validate_config(load_preset(preset))


@pytest.mark.parametrize("preset", PRESETS)
def test_a_preset_round_trips_through_the_run_config(preset, tmp_path):
    """What a run records in config.json (and a resume, an export or an evaluation reads back) is the preset:
    every field, with JSON's lists where the preset has tuples."""
    from sagan_tf.run.run_dir import read_config, write_config
    config = load_preset(preset)
    write_config(str(tmp_path), config)
    assert read_config(str(tmp_path)).to_dict() == json.loads(json.dumps(config.to_dict()))
    validate_config(read_config(str(tmp_path)))


def test_the_ttur2x_preset_is_the_default_with_twice_the_paper_rates():
    default, fast = load_preset("fashion_mnist").to_dict(), load_preset("fashion_mnist_ttur2x").to_dict()
    assert (fast["g_lr"], fast["d_lr"]) == (2 * default["g_lr"], 2 * default["d_lr"]) == (2e-4, 8e-4)
    changed = {key for key in default if default[key] != fast[key]}
    assert changed == {"g_lr", "d_lr", "train_steps"} and set(fast) == set(default)


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
    ("augment", "translation,colour", r"config\.augment='translation,colour'.*\['colour'\].*'translation', 'cutout'"),
])
def test_bad_values_are_named(field, value, message):
    config = tiny_config()
    config[field] = value
    with pytest.raises(ValueError, match=message):
        validate_config(config)


def test_batch_not_divisible_by_replicas_names_both_numbers():
    with pytest.raises(ValueError, match=r"batch_size=6.*replicas \(4\)"):
        validate_config(tiny_config(batch_size=6), num_replicas=4)


def test_each_constant_has_one_home():
    """The config validates against what the owning modules define, and says so in their words: the losses
    of sagan_tf.losses; the query-block rule of the attention layer (one message from the layer, the
    networks' model fields and the config); the fields a resume keeps, derived from the model fields; the
    "tfds:" form of config.dataset, parsed by sagan_tf.data alone."""
    from sagan_tf import losses
    from sagan_tf.data import is_tfds, real_images, tfds_name
    from sagan_tf.layers.arguments import check_query_block
    from sagan_tf.models.architecture import MODEL_FIELDS, RESUME_FIXED_FIELDS, model_fields

    for name in losses.LOSSES:
        validate_config(tiny_config(loss=name))
    messages = set()
    for check in (lambda: check_query_block(-1, "config.attention_query_block"),
                  lambda: model_fields(tiny_config(attention_query_block=-1)),
                  lambda: validate_config(tiny_config(attention_query_block=-1))):
        with pytest.raises(ValueError, match=r"config\.attention_query_block=-1 is not allowed") as raised:
            check()
        messages.add(str(raised.value))
    assert len(messages) == 1, messages
    assert set(RESUME_FIXED_FIELDS) == set(MODEL_FIELDS) - {"init", "sync_bn"}
    assert is_tfds("tfds:cifar10") and not is_tfds("cifar10")
    assert tfds_name("tfds:imagenet2012:5.1.0") == "imagenet2012:5.1.0"
    assert real_images.canonical_dataset_name("tfds:cifar10:3.0.2/plain") == "cifar10"


def test_configs_load_names_an_unknown_preset_and_the_known_ones():
    import configs
    assert configs.load("fashion_mnist_ttur2x").to_dict() == load_preset("fashion_mnist_ttur2x").to_dict()
    with pytest.raises(ValueError, match=r"no preset 'nope'.*'cifar10', 'fashion_mnist', 'fashion_mnist_ttur2x'"):
        configs.load("nope")
