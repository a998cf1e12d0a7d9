"""sagan_tf.data.image_folder on generated files of every supported kind, plus three broken ones."""
import json
import logging
import os
import signal

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from sagan_tf.data import image_folder as imf
from sagan_tf.data.image_folder import scan as imf_scan

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
    index = imf.scan_image_folder(folder)
    assert index.class_names == ("animals", "plants")
    assert set(index.skipped) == {imf.UNREADABLE, imf.NOT_AN_IMAGE}
    assert sorted(os.path.basename(p) for p in index.skipped[imf.UNREADABLE]) == sorted(BROKEN)
    assert [os.path.basename(p) for p in index.skipped[imf.NOT_AN_IMAGE]] == ["notes.txt"]
    assert sorted(os.path.basename(p) for p in index.paths) == sorted(EXPECTED)
    assert [index.class_names[label] for label in index.labels] == [
        EXPECTED[os.path.basename(p)][0] for p in index.paths]
    assert index.class_counts() == [3, 3]
    assert imf.image_folder_class_names(folder) == ["animals", "plants"]
    with caplog.at_level(logging.WARNING, logger=imf.__name__):
        imf.image_folder_dataset(folder, RESOLUTION, 3)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "Skipped 3 unreadable" in warnings[0].getMessage()


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


# --- links, empty classes, flat folders, the summary (issues 16 and 22) -------------------------------------------

def _png(path, colour=(0, 0, 0), size=(12, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _relative(index, reason):
    return [os.path.relpath(p, index.data_dir) for p in index.skipped.get(reason, ())]


class ScanTimeout(Exception):
    """Not an OSError (os.walk swallows those), so it escapes a runaway walk."""


def _within(seconds, fn):
    """fn() or a failure after `seconds` (SIGALRM interrupts a runaway walk, which runs in this thread)."""
    def expire(signum, frame):
        raise ScanTimeout(f"still scanning after {seconds} s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        return fn()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_a_link_to_the_parent_is_not_followed_into_a_cycle(tmp_path):
    _png(tmp_path / "cats" / "one.png")
    os.symlink("..", tmp_path / "cats" / "up")  # before the fix: 41 examples (the ELOOP depth) for one image
    index = imf.scan_image_folder(str(tmp_path))
    assert [os.path.relpath(p, tmp_path) for p in index.paths] == ["cats/one.png"]
    assert index.skipped == {imf.DUPLICATE: (str(tmp_path / "cats" / "up"),)}


def test_two_loop_links_finish_at_once_and_count_each_image_once(tmp_path):
    _png(tmp_path / "a" / "x.png")
    _png(tmp_path / "a" / "deep" / "y.png")
    os.symlink("..", tmp_path / "a" / "loop1")
    os.symlink("../..", tmp_path / "a" / "deep" / "loop2")  # before the fix: 2^40 paths, effectively a hang
    index = _within(20, lambda: imf.scan_image_folder(str(tmp_path)))
    assert sorted(os.path.relpath(p, tmp_path) for p in index.paths) == ["a/deep/y.png", "a/x.png"]
    assert _relative(index, imf.DUPLICATE) == ["a/deep/loop2", "a/loop1"]


def test_links_leading_out_are_not_followed_and_real_paths_win_over_links(tmp_path):
    data, outside = tmp_path / "data", tmp_path / "elsewhere"
    _png(outside / "o1.png")
    _png(outside / "o2.png")
    _png(data / "cats" / "c.png")
    _png(data / "dogs" / "2020" / "d.png")
    os.symlink(outside, data / "cats" / "more")                  # a directory outside
    os.symlink(outside / "o1.png", data / "cats" / "o1.png")     # a file outside
    os.symlink(outside, data / "birds")                          # a whole class outside
    os.symlink("../dogs/2020", data / "cats" / "best")           # inside, but dogs/2020 belongs to dogs
    os.symlink("../cats/c.png", data / "dogs" / "same.png")      # the same file twice
    os.symlink("missing.png", data / "dogs" / "dangling.png")    # a broken link
    index = imf.scan_image_folder(str(data))
    assert index.class_names == ("cats", "dogs")
    assert {os.path.relpath(p, data): index.class_names[label] for p, label in zip(index.paths, index.labels)} == {
        "cats/c.png": "cats", "dogs/2020/d.png": "dogs"}
    assert _relative(index, imf.LINK_OUTSIDE) == ["birds", "cats/more", "cats/o1.png"]
    assert _relative(index, imf.DUPLICATE) == ["cats/best", "dogs/same.png"]
    assert _relative(index, imf.UNREADABLE) == ["dogs/dangling.png"]


def test_an_empty_class_is_an_error_naming_it_or_dropped_on_request(tmp_path, caplog):
    _png(tmp_path / "apples" / "a.png", (255, 0, 0))
    (tmp_path / "bananas").mkdir()
    (tmp_path / "cherries").mkdir()
    (tmp_path / "cherries" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    _png(tmp_path / "dates" / "d.png", (0, 0, 255))
    with pytest.raises(ValueError) as error:
        imf.scan_image_folder(str(tmp_path))
    message = str(error.value)
    assert "['bananas', 'cherries'] hold no readable image" in message
    assert f"{tmp_path / 'bananas'} (no image files)" in message
    assert f"{tmp_path / 'cherries'} (1 unreadable file(s))" in message
    assert "drop_empty_classes" in message
    with caplog.at_level(logging.WARNING, logger=imf.__name__):
        index = imf.scan_image_folder(str(tmp_path), drop_empty_classes=True)
    assert index.class_names == ("apples", "dates") and index.dropped_classes == ("bananas", "cherries")
    assert [os.path.basename(p) for p in index.paths] == ["a.png", "d.png"] and index.labels == (0, 1)
    assert any("bananas, cherries" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_flat_folder_needs_unconditional_which_pools_every_image_with_label_0(tmp_path):
    _png(tmp_path / "top.png", (255, 255, 255))
    with pytest.raises(ValueError, match=f"{tmp_path} has no class sub-folders.*--unconditional"):
        imf.scan_image_folder(str(tmp_path))
    assert not imf.has_class_folders(str(tmp_path))
    _png(tmp_path / "sub" / "deeper.png")
    (tmp_path / "empty").mkdir()
    index = imf.scan_image_folder(str(tmp_path), unconditional=True)
    assert index.unconditional and index.class_names == () and index.labels == (0, 0)
    assert sorted(os.path.relpath(p, tmp_path) for p in index.paths) == ["sub/deeper.png", "top.png"]
    # In a class tree, the loose image is reported, not silently used or lost.
    assert _relative(imf.scan_image_folder(str(tmp_path), drop_empty_classes=True), imf.NOT_IN_CLASS) == ["top.png"]
    images, labels = next(iter(imf.image_folder_dataset(str(tmp_path), 4, 2, unconditional=True)))
    np.testing.assert_array_equal(labels.numpy(), [0, 0])
    np.testing.assert_allclose(sorted(images.numpy().mean(axis=(1, 2, 3))), [-1, 1])


def test_summary_lists_labels_counts_and_skips_by_reason(tmp_path):
    for i in range(20):
        _png(tmp_path / "many" / f"{i:02d}.png")
    _png(tmp_path / "few" / "only.png")
    (tmp_path / "few" / "broken.png").write_text("nope")
    (tmp_path / "many" / "notes.txt").write_text("text")
    os.symlink("..", tmp_path / "many" / "up")
    summary = imf.format_summary(imf.scan_image_folder(str(tmp_path)))
    assert summary.splitlines() == [
        f"Image folder {tmp_path}: 21 images in 2 classes",
        "  label  class  images",
        "      0  few         1  (few: < 10% of the largest class)",
        "      1  many       20",
        "Skipped 3 path(s):",
        "       1  unreadable (cannot be decoded): few/broken.png",
        f"       1  not an image (extension not in {' '.join(imf.IMAGE_EXTENSIONS)}): many/notes.txt",
        "       1  already found through another path (symlink): many/up",
    ]
    flat = tmp_path / "many"
    assert imf.format_summary(imf.scan_image_folder(str(flat), unconditional=True)).splitlines()[0] == (
        f"Image folder {flat}: 20 images, unconditional (num_classes=0, labels ignored)")


def test_recorded_class_names_select_folders_and_a_changed_count_fails(tmp_path):
    for name in ("a", "b", "c"):
        _png(tmp_path / name / "x.png")
    index = imf.scan_image_folder(str(tmp_path), class_names=["c", "a"])
    assert index.class_names == ("c", "a")
    assert [os.path.relpath(p, tmp_path) for p in index.paths] == ["c/x.png", "a/x.png"] and index.labels == (0, 1)
    assert _relative(index, imf.NOT_SELECTED) == ["b/x.png"]
    with pytest.raises(ValueError, match=r"no class folder\(s\) \['zebra'\]"):
        imf.scan_image_folder(str(tmp_path), class_names=["a", "zebra"])
    with pytest.raises(ValueError, match=f"num_classes=2 but image folder {tmp_path} has 3 class folders"):
        imf.image_folder_dataset(str(tmp_path), 4, 2, num_classes=2)


def test_resuming_a_run_with_other_class_folders_fails_naming_them(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"dataset": "image_folder", "num_classes": 2,
                                                 "class_names": ["cats", "dogs"]}))
    for name in ("cats", "dogs"):
        _png(tmp_path / "data" / name / "x.png")
    imf.check_same_classes_as_run(str(run), imf.scan_image_folder(str(tmp_path / "data")))  # same: fine
    _png(tmp_path / "data" / "birds" / "x.png")
    with pytest.raises(ValueError, match=r"trained on 2 classes \['cats', 'dogs'\] but .* now gives 3 classes "
                                         r"\['birds', 'cats', 'dogs'\] \(new: \['birds'\]; gone: none\)"):
        imf.check_same_classes_as_run(str(run), imf.scan_image_folder(str(tmp_path / "data")))


def test_a_second_scan_of_an_unchanged_folder_decodes_nothing(tmp_path, monkeypatch):
    _png(tmp_path / "c" / "a.png")
    _png(tmp_path / "c" / "b.png")
    imf.scan_image_folder(str(tmp_path))
    decoded = []
    real_check = imf_scan._is_readable
    monkeypatch.setattr(imf_scan, "_is_readable", lambda path: decoded.append(path) or real_check(path))
    assert len(imf.scan_image_folder(str(tmp_path))) == 2 and decoded == []
    (tmp_path / "c" / "b.png").write_text("now broken")  # a changed file is checked again
    index = imf.scan_image_folder(str(tmp_path))
    assert decoded == [str(tmp_path / "c" / "b.png")] and len(index) == 1
