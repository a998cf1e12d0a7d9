"""Turning generated images into grids and PNG files."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from sagan_tf.run.files import atomic_write_bytes

__all__ = ["to_uint8", "image_grid", "png_bytes", "save_png"]


def to_uint8(images: np.ndarray) -> np.ndarray:
    """float images in [-1, 1] → uint8 in [0, 255]."""
    images = np.asarray(images, np.float32)
    return np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


def image_grid(images: np.ndarray, rows: int) -> np.ndarray:
    """Tiles [N, H, W, C] images into one [rows·H, cols·W, C] image, row-major (N = rows·cols)."""
    images = np.asarray(images)
    n, h, w, c = images.shape
    if n % rows:
        raise ValueError(f"{n} images do not fill {rows} rows evenly.")
    cols = n // rows
    return images.reshape(rows, cols, h, w, c).transpose(0, 2, 1, 3, 4).reshape(rows * h, cols * w, c)


def png_bytes(image: np.ndarray) -> bytes:
    """Encodes one uint8 [H, W, C] image (C = 1 or 3) as PNG."""
    image = np.asarray(image)
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(path: str, image: np.ndarray) -> None:
    atomic_write_bytes(path, png_bytes(image))
