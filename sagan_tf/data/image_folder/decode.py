"""Decoding one image file of any size and mode with Pillow, to uint8 RGB or L."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

from sagan_tf.run import files

__all__ = ["load_image"]

#: Pillow modes holding more than 8 bits per sample, rescaled to 8 bits (Pillow's own convert("L")
#: would clip everything above 255 to white).
_WIDE_GRAY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
#: Background that transparent pixels are composited onto: what image viewers show.
_BACKGROUND = (255, 255, 255, 255)


def load_image(path: str, channels: int, min_size: int) -> np.ndarray:
    """Decodes an image file to uint8 [H, W, channels].

    Large JPEGs are decoded directly at 1/2, 1/4 or 1/8 scale (Pillow's `draft`, which works on the
    DCT coefficients) as long as the short side stays >= `min_size`, so a huge photo costs little
    memory and time while the final resize still sees enough pixels. Other formats cannot be decoded
    at a reduced size. EXIF orientation is applied; for animations the first frame is used. The file
    is read whole through `tf.io.gfile`, so `path` may be a URI (file://, gs://, ram://, ...).
    """
    with Image.open(io.BytesIO(files.read_bytes(path))) as image:
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
