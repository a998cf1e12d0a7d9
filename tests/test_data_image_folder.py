"""sagan_tf.data.image_folder on generated files of every supported kind, plus three broken ones."""
import logging
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from sagan_tf.data import image_folder as imf

RESOLUTION = 8


def _model(rgb):
    return np.asarray(rgb, np.float64) / 127.5 - 1


# file name -> (class folder, expected colour in [-1, 1], tolerance). Colours are distinct so that each
# output image can be traced back to its file.
EXPECTED = {
    "rgb.jpg": ("animals", _model([200, 100, 50]), 0.03),
    "rgba.png": ("animals", _model([10, 200, 30]), 1e-6),
    # JPEG chroma subsampling bleeds a little red across the crop edge; a missed crop would be ~2 off.
    "big.jpg": ("animals", _model([0, 0, 255]), 0.06),
    "palette.gif": ("plants", _model([0, 128, 255]), 1e-6),
    "gray16.png": ("plants", _model([128, 128, 128]), 1e-6),
    "cmyk.jpg": ("plants", _model([255, 0, 0]), 0.03),
}
BROKEN = ("zero.jpg", "text.jpg", "truncated.jpg")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    animals, plants = root / "animals", root / "plants"
    animals.mkdir()
    plants.mkdir()
    (root / ".hidden").mkdir()  # not a class
    Image.new("RGB", (40, 30), (200, 100, 50)).save(animals / "rgb.jpg", quality=95)
    Image.new("RGBA", (20, 24), (10, 200, 30, 255)).save(animals / "rgba.png")
    # 3000x2000: red bands outside the centred 2000x2000 square, blue inside -> the crop must drop the red.
    big = np.zeros((2000, 3000, 3), np.uint8)
    big[:, :500] = big[:, 2500:] = (255, 0, 0)
    big[:, 500:2500] = (0, 0, 255)
    Image.fromarray(big).save(animals / "big.jpg", quality=90)
    Image.new("RGB", (16, 16), (0, 128, 255)).convert("P", palette=Image.Palette.ADAPTIVE).save(
        plants / "palette.gif")
    Image.fromarray(np.full((18, 12), 32896, np.uint16)).save(plants / "gray16.png")  # 32896/257 = 128
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(plants / "cmyk.jpg")
    (plants / "notes.txt").write_text("not an image extension: ignored, not counted")
    # Broken files.
    (plants / "zero.jpg").write_bytes(b"")
    (plants / "text.jpg").write_text("this is not a JPEG")
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "noise.jpg")
    data = (root / "noise.jpg").read_bytes()
    (animals / "truncated.jpg").write_bytes(data[:len(data) // 2])
    os.remove(root / "noise.jpg")
    return str(root)


def _one_epoch(folder, **kwargs):
    ds = imf.image_folder_dataset(folder, RESOLUTION, 3, seed=0, **kwargs)
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in ds.take(2)])  # 6 readable files
    return np.concatenate(images), np.concatenate(labels)


def test_scan_skips_and_counts_the_broken_files(folder, caplog):
    with caplog.at_level(logging.WARNING, logger=imf.__name__):
        index = imf.scan_image_folder(folder)
    assert index.class_names == ("animals", "plants")
    assert sorted(os.path.basename(p) for p in index.skipped) == sorted(BROKEN)
    assert sorted(os.path.basename(p) for p in index.paths) == sorted(EXPECTED)
    assert [index.class_names[label] for label in index.labels] == [
        EXPECTED[os.path.basename(p)][0] for p in index.paths]
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "Skipped 3 unreadable" in warnings[0].getMessage()
    assert imf.image_folder_class_names(folder) == ["animals", "plants"]


def test_every_readable_file_gives_its_colour_and_label(folder):
    images, labels = _one_epoch(folder)
    assert images.shape == (6, RESOLUTION, RESOLUTION, 3) and images.dtype == np.float32
    assert labels.dtype == np.int32
    assert images.min() >= -1 and images.max() <= 1
    class_names = imf.image_folder_class_names(folder)
    unmatched = dict(EXPECTED)
    for image, label in zip(images, labels):
        mean = image.reshape(-1, 3).mean(axis=0)
        name = min(unmatched, key=lambda n: np.abs(unmatched[n][1] - mean).max())
        folder_name, colour, tolerance = unmatched.pop(name)
        np.testing.assert_allclose(image, np.broadcast_to(colour, image.shape), atol=tolerance, err_msg=name)
        assert class_names[label] == folder_name, name
    assert not unmatched


def test_grayscale_output_uses_luma(folder):
    images, _ = _one_epoch(folder, image_channels=1)
    assert images.shape == (6, RESOLUTION, RESOLUTION, 1)
    expected_values = [_model(round(0.299 * r + 0.587 * g + 0.114 * b))
                       for r, g, b in ([200, 100, 50], [10, 200, 30], [0, 0, 255], [0, 128, 255],
                                       [128, 128, 128], [255, 0, 0])]
    means = sorted(images.mean(axis=(1, 2, 3)))
    np.testing.assert_allclose(means, sorted(expected_values), atol=0.03)


def test_transparent_pixels_become_white(tmp_path):
    Image.new("RGBA", (4, 4), (10, 20, 30, 0)).save(tmp_path / "clear.png")
    np.testing.assert_array_equal(imf.load_image(str(tmp_path / "clear.png"), 3, 1), np.full((4, 4, 3), 255))


def test_large_jpeg_is_decoded_at_reduced_size(folder):
    image = imf.load_image(os.path.join(folder, "animals", "big.jpg"), 3, RESOLUTION)
    assert image.shape == (250, 375, 3)  # 1/8 scale, still >= RESOLUTION on the short side


@pytest.mark.parametrize("start_step", [1, 2])  # batches of 4 over 6 files: both straddle epochs
def test_resume_with_flips_matches_uninterrupted(folder, start_step):
    def batches(step, n):
        ds = imf.image_folder_dataset(folder, RESOLUTION, 4, seed=5, random_flip=True, start_step=step)
        return [(x.numpy(), y.numpy()) for x, y in ds.take(n)]
    full = batches(0, start_step + 2)
    resumed = batches(start_step, 2)
    for (fx, fy), (rx, ry) in zip(full[start_step:], resumed):
        np.testing.assert_array_equal(fx, rx)
        np.testing.assert_array_equal(fy, ry)


def test_flip_is_deterministic_and_happens(tmp_path):
    (tmp_path / "c").mkdir()
    half = np.zeros((8, 8, 3), np.uint8)
    half[:, :4] = 255  # white left half
    Image.fromarray(half).save(tmp_path / "c" / "half.png")
    ds = imf.image_folder_dataset(str(tmp_path), 8, 16, seed=1, random_flip=True)
    images = next(iter(ds))[0].numpy()
    left_white = images[:, 0, 0, 0] == 1
    assert 0 < left_white.sum() < 16
    np.testing.assert_array_equal(next(iter(imf.image_folder_dataset(
        str(tmp_path), 8, 16, seed=1, random_flip=True)))[0].numpy(), images)
    assert ds.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.DATA


def test_empty_and_missing_folders_raise_naming_the_path(tmp_path):
    with pytest.raises(ValueError, match=str(tmp_path)):
        imf.image_folder_dataset(str(tmp_path), 8, 2)  # no class folders
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(ValueError, match=f"{tmp_path}.*no readable"):
        imf.image_folder_dataset(str(tmp_path), 8, 2)
    with pytest.raises(FileNotFoundError, match="does_not_exist"):
        imf.image_folder_dataset(str(tmp_path / "does_not_exist"), 8, 2)
