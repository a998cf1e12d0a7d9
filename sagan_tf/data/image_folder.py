"""A directory of images, one sub-folder per class, decoded with Pillow.

    data_dir/
      cat/    0001.jpg  0002.png  ...
      dog/    a.gif  b/c.bmp  ...

Class ids are the sorted sub-folder names (hidden entries ignored); files are found recursively inside
each class folder by extension (JPEG, PNG, BMP, GIF; case-insensitive). Files of any size and mode
(grayscale, RGBA, CMYK, palette, 16-bit) are converted to RGB or L, centre-cropped to a square and
resized to the requested resolution.

Unreadable files (empty, not an image, truncated) are found ONCE, when the dataset is built, by
decoding every file at the smallest size Pillow allows; they are left out of the example list and
reported in one log line. Dropping them before the shuffle, rather than filtering while training,
keeps the number of examples fixed, which exact resuming (`start_step`) depends on. The price is one
pass over the folder at start-up, spread over a thread pool.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import logging
import os

import numpy as np
import tensorflow as tf
from PIL import Image, ImageOps

from sagan_tf.data import common

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")

#: Pillow modes holding more than 8 bits per sample, rescaled to 8 bits (Pillow's own convert("L")
#: would clip everything above 255 to white).
_WIDE_GRAY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
#: Background that transparent pixels are composited onto: what image viewers show.
_BACKGROUND = (255, 255, 255, 255)
#: How many unreadable paths the log line quotes.
_EXAMPLES_IN_LOG = 3


@dataclasses.dataclass(frozen=True)
class ImageFolderIndex:
    """The readable images of a folder in their fixed, sorted order, and what was skipped."""

    paths: tuple[str, ...]
    labels: tuple[int, ...]
    class_names: tuple[str, ...]
    skipped: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.paths)


def image_folder_class_names(data_dir: str) -> list[str]:
    """Sorted names of the class sub-folders of `data_dir`; label `i` is `class_names[i]`.

    Raises:
      FileNotFoundError: `data_dir` does not exist.
      ValueError: `data_dir` has no (non-hidden) sub-folder.
    """
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"image folder {data_dir} does not exist or is not a directory")
    names = sorted(entry.name for entry in os.scandir(data_dir)
                   if entry.is_dir() and not entry.name.startswith("."))
    if not names:
        raise ValueError(f"image folder {data_dir} has no class sub-folders; put the images in one "
                         "sub-folder per class (a single sub-folder is fine for unlabelled data)")
    return names


def scan_image_folder(data_dir: str) -> ImageFolderIndex:
    """Lists the images under `data_dir`, checks that each one decodes, and returns the readable ones.

    Logs one warning line with the number of unreadable files and a few of their paths.

    Raises:
      FileNotFoundError / ValueError: see `image_folder_class_names`; ValueError also when no
        readable image is found.
    """
    class_names = image_folder_class_names(data_dir)
    candidates = [(path, label) for label, name in enumerate(class_names)
                  for path in _image_files(os.path.join(data_dir, name))]
    with concurrent.futures.ThreadPoolExecutor() as pool:  # Pillow releases the GIL while decoding
        readable = list(pool.map(_is_readable, [path for path, _ in candidates]))

    kept = [candidate for candidate, ok in zip(candidates, readable) if ok]
    skipped = tuple(path for (path, _), ok in zip(candidates, readable) if not ok)
    if skipped:
        logger.warning("Skipped %d unreadable image file(s) under %s, e.g. %s", len(skipped),
                       data_dir, ", ".join(skipped[:_EXAMPLES_IN_LOG]))
    if not kept:
        raise ValueError(f"image folder {data_dir} contains no readable {'/'.join(IMAGE_EXTENSIONS)} "
                         f"file in its class sub-folders ({len(skipped)} unreadable)")
    return ImageFolderIndex(paths=tuple(path for path, _ in kept),
                            labels=tuple(label for _, label in kept),
                            class_names=tuple(class_names), skipped=skipped)


def _image_files(class_dir: str) -> list[str]:
    """Image files anywhere under `class_dir`, sorted, hidden files and folders excluded."""
    found = []
    for root, dirs, files in os.walk(class_dir, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend(os.path.join(root, name) for name in files
                     if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS))
    return sorted(found)


def _is_readable(path: str) -> bool:
    """Whether `path` fully decodes (at the smallest size the format allows, to keep the scan cheap)."""
    try:
        load_image(path, channels=3, min_size=1)
    except Exception:  # noqa: BLE001 -- any failure to decode, whatever its type, means "skip it"
        return False
    return True


def load_image(path: str, channels: int, min_size: int) -> np.ndarray:
    """Decodes an image file to uint8 [H, W, channels].

    Large JPEGs are decoded directly at 1/2, 1/4 or 1/8 scale (Pillow's `draft`, which works on the
    DCT coefficients) as long as the short side stays >= `min_size`, so a huge photo costs little
    memory and time while the final resize still sees enough pixels. Other formats cannot be decoded
    at a reduced size. EXIF orientation is applied; for animations the first frame is used.
    """
    with Image.open(path) as image:
        if image.format == "JPEG":
            image.draft("RGB" if channels == 3 else "L", (min_size, min_size))
        image = ImageOps.exif_transpose(image)  # also forces the (lazy) decode
        array = np.asarray(_to_rgb_or_gray(image, channels), dtype=np.uint8)
    return array if array.ndim == 3 else array[..., np.newaxis]


def _to_rgb_or_gray(image: Image.Image, channels: int) -> Image.Image:
    """Converts any Pillow mode to "RGB" (channels=3) or "L" (channels=1).

    16-bit grayscale is rescaled to 8 bits, transparency is composited onto white, and everything
    else (palette, CMYK, bilevel, ...) goes through Pillow's own conversion to RGB.
    """
    if image.mode in _WIDE_GRAY_MODES:
        wide = np.asarray(image).astype(np.float64)
        image = Image.fromarray(np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8), "L")
    elif image.mode in _ALPHA_MODES or "transparency" in image.info:
        background = Image.new("RGBA", image.size, _BACKGROUND)
        image = Image.alpha_composite(background, image.convert("RGBA"))
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    target = "RGB" if channels == 3 else "L"
    return image if image.mode == target else image.convert(target)


def image_folder_dataset(data_dir: str, resolution: int, batch_size: int, image_channels: int = 3,
                         seed: int = 0, start_step: int = 0, random_flip: bool = False
                         ) -> tf.data.Dataset:
    """Infinite, shuffled, batched images of a class-per-folder directory.

    Yields `(images float32 [batch_size, resolution, resolution, image_channels] in [-1, 1], labels
    int32 [batch_size])`; `batch_size` is the GLOBAL batch size and labels index
    `image_folder_class_names(data_dir)`. Each epoch is a permutation of the file list keyed by
    `(seed, epoch)`; files are decoded after the shuffle, so resuming at `start_step` only skips
    paths (see `sagan_tf.data.common`).

    Auto-shard policy: DATA. The files are not a tf.data file source (they are opened by Pillow), so
    multi-worker training has each worker keep its share of every global batch.
    """
    common.check_pipeline_args(batch_size=batch_size, start_step=start_step,
                               image_channels=image_channels, resolution=resolution)
    index = scan_image_folder(data_dir)
    paths = tf.constant(index.paths)
    labels = tf.constant(index.labels, dtype=tf.int32)
    load = functools.partial(_load_for_tf, channels=image_channels, min_size=resolution)

    def decode(i: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image = tf.numpy_function(load, [tf.gather(paths, i)], tf.uint8, stateful=False)
        image.set_shape([None, None, image_channels])
        return common.center_crop_and_resize(image, resolution), tf.gather(labels, i)

    return common.build_pipeline(
        common.shuffled_indices(len(index), seed), decode, num_examples=len(index),
        batch_size=batch_size, seed=seed, start_step=start_step, random_flip=random_flip,
        auto_shard_policy=tf.data.experimental.AutoShardPolicy.DATA)


def _load_for_tf(path: bytes, channels: int, min_size: int) -> np.ndarray:
    """`load_image` for tf.numpy_function, which passes the path as bytes."""
    path = os.fsdecode(path)
    try:
        return load_image(path, channels, min_size)
    except Exception as e:  # noqa: BLE001 -- re-raised with the path, which TF would not show
        raise OSError(f"{path} passed the start-up scan but cannot be decoded any more: {e}") from e
