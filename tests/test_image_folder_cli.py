"""trainers.image_folder as a user runs it on their own photos: every offered resolution gets a working
architecture, empty classes and bad flags fail naming the value, the start-up summary and the class map
say what was found, classes are sampled and served by name, and flat folders train unconditionally."""
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from export import client
from export import saved_model as export_lib
from sagan_tf import sampling
from sagan_tf.data import image_folder as imf
from sagan_tf.run import class_map, run_dir
from tests.helpers import run_cli

TINY = ["--config.z_dim=8", "--config.batch_size=4", "--config.mixed_precision=float32",
        "--config.checkpoint_every=2", "--config.sample_every=2", "--config.log_every=1", "--train_steps=2"]


def _noise(rng, size):
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A class-per-folder tree with what real scrapes contain: PNG and JPEG of odd sizes, a nested folder, a
    truncated JPEG, a non-image file, an empty class folder, a loop link and a link leading out."""
    root = tmp_path_factory.mktemp("user")
    data, elsewhere = root / "photos", root / "elsewhere"
    rng = np.random.default_rng(0)
    for name in ("cats", "dogs", "empty_class", "dogs/puppies"):
        (data / name).mkdir(parents=True)
    elsewhere.mkdir()
    for i in range(3):
        _noise(rng, (40, 30)).save(data / "cats" / f"c{i}.png")
    for i in range(2):
        _noise(rng, (64, 48)).save(data / "cats" / f"c{i}.JPG", quality=90)
    _noise(rng, (50, 50)).save(data / "dogs" / "d0.jpg")
    _noise(rng, (33, 70)).save(data / "dogs" / "puppies" / "p0.png")
    _noise(rng, (20, 20)).save(elsewhere / "far.png")
    _noise(rng, (64, 64)).save(root / "full.jpg")
    (data / "dogs" / "broken.jpg").write_bytes((root / "full.jpg").read_bytes()[:300])
    (data / "cats" / "desktop.ini").write_text("[.ShellClassInfo]")
    (data / "empty_class" / "readme.txt").write_text("nothing here yet")
    os.symlink("..", data / "dogs" / "up")
    os.symlink(elsewhere, data / "cats" / "outside")
    return data


SUMMARY_32 = """\
Image folder {data}: 7 images in 2 classes
  label  class  images
      0  cats        5
      1  dogs        2
Dropped 1 class folder(s) without a readable image: empty_class
Skipped 5 path(s):
       1  unreadable (cannot be decoded): dogs/broken.jpg
       2  not an image (extension not in {extensions}): cats/desktop.ini, empty_class/readme.txt
       1  symlink leading outside the folder (not followed): cats/outside
       1  already found through another path (symlink): dogs/up
"""


@pytest.fixture(scope="module")
def run32(photos, tmp_path_factory):
    """(model_dir, CompletedProcess): --resolution=32 with no architecture flag but the width."""
    model_dir = str(tmp_path_factory.mktemp("runs") / "photos32")
    result = run_cli("trainers.image_folder", f"--data_dir={photos}", "--resolution=32", f"--model_dir={model_dir}",
                     "--drop_empty_classes", "--config.ch=4", *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    return model_dir, result


def _assert_serves_label_0_only(version_dir, generator):
    """An unconditional export: label 0 gives the generator's images, any other label is refused."""
    serve = tf.saved_model.load(version_dir).signatures["serving_default"]
    z = sampling.sample_noise(2, 8, seed=3)
    images = serve(z=tf.constant(z), label=tf.zeros([2], tf.int32))["images"].numpy()
    np.testing.assert_allclose(images, generator((z, np.zeros(2, np.int32)), training=False).numpy(), atol=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"label values must be in \[0, 1\)"):
        serve(z=tf.constant(z), label=tf.constant([0, 1], tf.int32))


@pytest.mark.slow  # trains or runs CLIs for tens of seconds (docs/testing.md)
def test_resolution_32_trains_out_of_the_box_and_reports_what_it_found(photos, run32):
    model_dir, result = run32
    expected = SUMMARY_32.format(data=photos, extensions=" ".join(imf.IMAGE_EXTENSIONS))
    assert expected in result.stdout, result.stdout
    assert f"Class name -> label map: {model_dir}/classes.json" in result.stdout
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    assert (config["resolution"], config["g_attention"], config["d_attention"]) == (32, [16], [16])
    assert (config["num_classes"], config["class_names"]) == (2, ["cats", "dogs"])
    with open(os.path.join(model_dir, "classes.json")) as f:
        assert json.load(f) == {"cats": 0, "dogs": 1}
    assert tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")).endswith("ckpt-2")
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(os.path.join(model_dir, "train")))
    sheet = np.asarray(Image.open(os.path.join(model_dir, "samples", "step_00000002.png")))
    assert sheet.shape == (2 * 32, 8 * 32, 3)  # one row per kept class


@pytest.mark.slow  # trains or runs CLIs for tens of seconds (docs/testing.md)
def test_a_class_is_sampled_and_served_by_name(run32, tmp_path):
    model_dir, _ = run32
    out = tmp_path / "dogs.png"
    result = run_cli("trainers.sample", f"--model_dir={model_dir}", "--class_name=dogs", "--columns=3", f"--out={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "labels: 1=dogs" in result.stdout
    assert np.asarray(Image.open(out)).shape == (32, 3 * 32, 3)  # one row: the one class asked for
    result = run_cli("trainers.sample", f"--model_dir={model_dir}", "--class_name=wolves", f"--out={out}")
    assert result.returncode != 0
    assert "--class_name=wolves: unknown class name(s) ['wolves']" in result.stderr
    assert "known: cats, dogs" in result.stderr
    # The export carries the map; the client turns names into labels with it.
    version_dir = export_lib.export_run(model_dir, str(tmp_path / "export"))
    assert class_map.read_class_map(os.path.join(version_dir, "assets.extra", "classes.json")) == ["cats", "dogs"]
    assert client.labels_from_names("dogs,cats,dogs", version_dir) == [1, 0, 1]
    assert client.labels_from_names("cats", os.path.join(model_dir, "classes.json")) == [0]
    with pytest.raises(ValueError, match=r"unknown class name\(s\) \['cat'\].*known: cats, dogs"):
        client.labels_from_names("cat", version_dir)
    with pytest.raises(ValueError, match="--class_name needs --classes"):
        client.labels_from_names("cats", None)


def test_resuming_with_changed_class_folders_fails_naming_them(photos, run32, tmp_path):
    model_dir, _ = run32
    changed = tmp_path / "photos"
    for name in ("cats", "dogs", "owls"):
        (changed / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(changed / name / "x.png")
    before = {name: os.path.getmtime(os.path.join(model_dir, name)) for name in ("config.json", "classes.json")}
    result = run_cli("trainers.image_folder", f"--data_dir={changed}", "--resolution=32", f"--model_dir={model_dir}",
                     "--config.ch=4", *TINY[:-1], "--train_steps=4")
    assert result.returncode != 0
    assert "trained on 2 classes ['cats', 'dogs']" in result.stderr
    assert "3 classes ['cats', 'dogs', 'owls'] (new: ['owls']; gone: none)" in result.stderr
    assert before == {name: os.path.getmtime(os.path.join(model_dir, name)) for name in before}


@pytest.mark.parametrize("flags, message", [
    # No --drop_empty_classes: the empty class folder is named (it held only a text file).
    ((), r"class folder\(s\) \['empty_class'\] hold no readable image: \S+/empty_class \(no image files\)"),
    # An explicit placement wins over the resolution's default: d_attention=(32,) is kept (and is invalid at
    # 32; G, checked first, got the default (16,)). Were it replaced by the default, the run would start.
    (("--drop_empty_classes", "--config.d_attention=(32,)"), r"config.d_attention=\[32\] is not allowed"),
    (("--drop_empty_classes", "--config.num_classes=5"),
     r"--config.num_classes=5, but \S+ gives 2 classes \(\['cats', 'dogs'\]\): the class count comes from the folder"),
])
def test_bad_folders_and_flags_fail_naming_the_value(photos, tmp_path, flags, message):
    model_dir = tmp_path / "untouched"
    result = run_cli("trainers.image_folder", f"--data_dir={photos}", f"--model_dir={model_dir}", "--resolution=32",
                     "--config.ch=4", *TINY, *flags)
    assert result.returncode != 0
    assert re.search(message, result.stderr), result.stderr[-2000:]
    assert not model_dir.exists()


@pytest.mark.slow  # trains or runs CLIs for tens of seconds (docs/testing.md)
def test_an_unconditional_generator_samples_and_exports_taking_label_0(tmp_path):
    """num_classes=0 through sampling and the export (training it through the CLI is the slow test below)."""
    from sagan_tf.models import Generator
    from sagan_tf.models.architecture import model_fields
    from tests.helpers import tiny_config
    generator = Generator(model_fields(tiny_config(num_classes=0)), dtype="float32", name="ema_generator")
    generator.build()
    sheet = sampling.class_sheet(generator, [0], 3, z_dim=8, num_classes=0, seed=1)
    assert sheet.images.shape == (1, 3, 32, 32, 1) and sheet.labels.tolist() == [[0, 0, 0]]
    with pytest.raises(ValueError, match=r"labels \[1\] are outside \[0, 1\)"):
        sampling.class_sheet(generator, [1], 3, z_dim=8, num_classes=0)
    version_dir = export_lib.export_generator(generator, str(tmp_path / "export"), class_names=[])
    assert not os.path.exists(os.path.join(version_dir, "assets.extra", "classes.json"))
    with open(os.path.join(version_dir, "assets.extra", "sagan_export.json")) as f:
        assert json.load(f)["limits"]["label_range"] == [0, 1]
    _assert_serves_label_0_only(version_dir, generator)
    with pytest.raises(export_lib.ExportError, match="2 class names for a generator with num_classes=0"):
        export_lib.export_generator(generator, str(tmp_path / "export"), class_names=["a", "b"])


@pytest.mark.slow
def test_resolution_64_flat_folder_trains_unconditionally_samples_and_exports(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    rng = np.random.default_rng(1)
    for i in range(5):
        _noise(rng, (80, 64)).save(flat / f"img{i}.jpg")
    model_dir = str(tmp_path / "run64")
    result = run_cli("trainers.image_folder", f"--data_dir={flat}", "--resolution=64", f"--model_dir={model_dir}",
                     "--config.ch=8", *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Image folder {flat}: 5 images, unconditional (num_classes=0, labels ignored)" in result.stdout
    assert "No class sub-folders: training unconditionally (num_classes=0)." in result.stdout
    config = run_dir.read_config(model_dir)
    assert (config.resolution, list(config.g_attention), list(config.d_attention)) == (64, [32], [32])
    assert (config.num_classes, list(config.class_names)) == (0, [])
    assert not os.path.exists(os.path.join(model_dir, "classes.json"))
    assert np.asarray(Image.open(os.path.join(model_dir, "samples", "step_00000002.png"))).shape == (64, 8 * 64, 3)

    restored = run_dir.load_ema_generator(model_dir)
    sheet = sampling.class_sheet(restored.generator, [0], 2, z_dim=8, num_classes=0, seed=3)
    assert restored.step == 2 and sheet.images.shape == (1, 2, 64, 64, 3)
    with pytest.raises(ValueError, match="has no class names"):
        class_map.labels_for_names(["cats"], class_map.run_class_names(model_dir, config), model_dir)

    # The export takes label 0 (the one an unconditional generator accepts), rejects others, has no class map.
    version_dir = export_lib.export_run(model_dir, str(tmp_path / "export"))
    assert not os.path.exists(os.path.join(version_dir, "assets.extra", "classes.json"))
    _assert_serves_label_0_only(version_dir, restored.generator)


def test_every_offered_resolution_default_is_valid_and_matches_the_presets():
    from sagan_tf.config import default_config, validate_config
    from sagan_tf.models.architecture import DEFAULT_ATTENTION, RESOLUTIONS
    from tests.helpers import load_preset
    assert sorted(DEFAULT_ATTENTION) == list(RESOLUTIONS)
    for preset in ("cifar10", "imagenet64", "imagenet128"):
        config = load_preset(preset)
        assert DEFAULT_ATTENTION[config.resolution] == tuple(config.g_attention) == tuple(config.d_attention), preset
    for resolution in RESOLUTIONS:  # the trainer's starting point (ImageNet-128 preset) with only the resolution
        config = default_config()
        config.update(dict(resolution=resolution, g_attention=DEFAULT_ATTENTION[resolution],
                           d_attention=DEFAULT_ATTENTION[resolution]))
        validate_config(config)


def test_class_map_round_trip_and_bad_maps(tmp_path):
    path = class_map.write_class_map(str(tmp_path), ["b", "a", "ç"])
    with open(path, encoding="utf-8") as f:
        assert json.load(f) == {"b": 0, "a": 1, "ç": 2}
    assert class_map.read_class_map(path) == ["b", "a", "ç"]
    assert class_map.find_class_map(str(tmp_path)) == path
    (tmp_path / "bad.json").write_text('{"a": 0, "b": 2}')
    with pytest.raises(ValueError, match=r"bad.json: labels must be 0..1, each once; got \[0, 2\]"):
        class_map.read_class_map(str(tmp_path / "bad.json"))
