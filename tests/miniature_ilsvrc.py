"""A miniature ILSVRC2012 in the layout of the real archives, for TFDS's own `imagenet2012` builder.

* `ILSVRC2012_img_train.tar` holds one tar per synset (`<wnid>.tar`), each holding `<wnid>_<n>.JPEG`.
* `ILSVRC2012_img_val.tar` holds `ILSVRC2012_val_<8 digits>.JPEG`; TFDS labels them from its own
  `validation_labels.txt` (the label of the i-th name in sorted order), so the first validation images
  here get the classes that file gives them.

Like the real archives it mixes in what breaks naive readers: a grayscale JPEG, a CMYK JPEG (under one of
the 22 names TFDS converts to RGB), and a PNG stored under the one `.JPEG` name TFDS re-encodes.

Every image is one solid colour, so a reader can check what it decoded: `expected_colour(wnid, n)`.
"""
from __future__ import annotations

import io
import os
import pathlib
import tarfile

import numpy as np
from PIL import Image

#: Synsets of the fixture: the first three of TFDS's labels.txt, plus the synsets that hold the CMYK and
#: the PNG images of the real archive (TFDS converts those files by name).
SYNSETS = ("n01440764", "n01443537", "n01484850", "n01739381", "n02105855")
CMYK_FILE = "n01739381_1309.JPEG"
PNG_FILE = "n02105855_2933.JPEG"
GRAY_FILE = "n01443537_2.JPEG"
IMAGES_PER_SYNSET = 3
#: The first validation labels in TFDS's validation_labels.txt (sorted validation file names).
VALIDATION_SYNSETS = ("n01751748", "n09193705", "n02105855", "n04263257")


def file_names(wnid: str) -> list[str]:
    """The training images of `wnid`: `<wnid>_1.JPEG` ..., with the special files in their synsets."""
    names = [f"{wnid}_{n}.JPEG" for n in range(1, IMAGES_PER_SYNSET + 1)]
    for special in (CMYK_FILE, PNG_FILE):
        if special.startswith(wnid):
            names[-1] = special
    return names


def expected_colour(file_name: str) -> tuple[int, int, int]:
    """The RGB colour image `file_name` was drawn in (grayscale images have R = G = B)."""
    seed = sum(ord(c) * (i + 1) for i, c in enumerate(file_name)) % 997
    colour = tuple(int(v) for v in np.random.default_rng(seed).integers(30, 226, 3))
    if file_name == GRAY_FILE:
        return (colour[0],) * 3
    return colour


def _size(file_name: str) -> tuple[int, int]:
    """(width, height): varied aspect ratios, like photos."""
    seed = sum(map(ord, file_name))
    return 40 + seed % 37, 36 + (seed * 7) % 29


def encode(file_name: str) -> bytes:
    """The bytes of image `file_name`, in the format its name stands for in the real archive."""
    colour, size, out = expected_colour(file_name), _size(file_name), io.BytesIO()
    if file_name == GRAY_FILE:
        Image.new("L", size, colour[0]).save(out, format="JPEG", quality=95)
    elif file_name == CMYK_FILE:
        Image.new("RGB", size, colour).convert("CMYK").save(out, format="JPEG", quality=95)
    elif file_name == PNG_FILE:
        Image.new("RGB", size, colour).save(out, format="PNG")
    else:
        Image.new("RGB", size, colour).save(out, format="JPEG", quality=95)
    return out.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def validation_names(num: int = len(VALIDATION_SYNSETS)) -> list[str]:
    return [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, num + 1)]


def write(manual_dir: str | os.PathLike, synsets=SYNSETS) -> pathlib.Path:
    """Writes the two archives into `manual_dir` (created); returns it."""
    manual_dir = pathlib.Path(manual_dir)
    manual_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(manual_dir / "ILSVRC2012_img_train.tar", "w") as train:
        for wnid in synsets:
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as synset_tar:
                for name in file_names(wnid):
                    _add(synset_tar, name, encode(name))
            _add(train, f"{wnid}.tar", inner.getvalue())
    with tarfile.open(manual_dir / "ILSVRC2012_img_val.tar", "w") as val:
        for name in validation_names():
            _add(val, name, encode(name))
    return manual_dir


def train_file_names(synsets=SYNSETS) -> list[str]:
    return [name for wnid in synsets for name in file_names(wnid)]
