"""Decode an encoded image and letterbox it into the pipeline's 3840x2160 UINT8 HWC frame (server side).

Shipped beside image_decoder's model.py with the contract package, whose geometry places the image:
the CLO client letterboxes with the same geometry (clients/lib/images.py), so a frame it decodes for
`ensemble` is bit-identical to the one `ensemble_jpeg` decodes here. Only the stdlib, numpy and Pillow.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

from tritonyard_contract.geometry import FRAME_H, FRAME_W, frame_letterbox, place_in_frame

ALLOWED_FORMATS = ("JPEG", "PNG")
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


class ImageError(ValueError):
    """The bytes are not an image this pipeline accepts; the message says why."""


def decode(data: bytes, *, max_bytes: int, max_pixels: int) -> Image.Image:
    """Decode JPEG/PNG bytes to an RGB image, refusing what the pipeline cannot serve safely."""
    if not data:
        raise ImageError("image is empty (0 bytes)")
    if len(data) > max_bytes:
        raise ImageError(f"image is {len(data)} bytes, above the limit of {max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # max_pixels below is the cap
            img = Image.open(io.BytesIO(data))  # lazy: reads the header only
    except Image.DecompressionBombError as exc:  # Pillow's own guard, far above any camera frame
        raise ImageError(f"image is above the limit of {max_pixels} pixels ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for garbage
        raise ImageError(f"not a decodable image: {exc}") from None
    if img.format not in ALLOWED_FORMATS:
        raise ImageError(f"format {img.format} is not accepted; send JPEG or PNG")
    width, height = img.size
    if width == 0 or height == 0:
        raise ImageError(f"image has zero size ({width}x{height})")
    if width * height > max_pixels:
        # Checked before decoding, so a tiny file that declares a huge canvas costs nothing.
        raise ImageError(f"image is {width}x{height} = {width * height} pixels, above the limit of {max_pixels}")
    if img.mode in ALPHA_MODES or "transparency" in img.info:
        raise ImageError(f"image has an alpha channel (mode {img.mode}); flatten it to RGB before sending")
    try:
        img.load()
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt data
        raise ImageError(f"corrupt {img.format} data: {exc}") from None
    return img if img.mode == "RGB" else img.convert("RGB")  # convert() copies even RGB to RGB


def to_frame_u8(img: Image.Image) -> np.ndarray:
    """Letterbox an RGB image into the UINT8 [2160, 3840, 3] (HWC) frame that ensemble_jpeg carries."""
    if img.size == (FRAME_W, FRAME_H):
        return np.asarray(img)
    box = frame_letterbox(*img.size)
    return place_in_frame(np.asarray(img.resize((box.new_w, box.new_h), Image.Resampling.BILINEAR)), box)
