"""Image acceptance and the 4K frame, written once for the image_decoder model and the clients.

`decode` turns JPEG/PNG bytes into an RGB image or refuses them with an `ImageError` whose message says
why: the server passes its byte and pixel caps, a client passes none and refuses only what it cannot turn
into a frame, with the server's wording. `to_frame_u8` letterboxes the image with the contract's geometry,
so a frame a client makes for `ensemble` is bit-identical to the one `ensemble_jpeg` decodes server-side.

The standard library, numpy and Pillow: the package's `__init__` does not import this module, so the
rest of the contract never needs Pillow.
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
    """The bytes are not an image the pipeline accepts; the message says why."""


def decode(data: bytes, *, max_bytes: int | None = None, max_pixels: int | None = None) -> Image.Image:
    """Decode JPEG/PNG bytes to an RGB image, refusing what the pipeline cannot serve (over a cap, if given)."""
    if not data:
        raise ImageError("image is empty (0 bytes)")
    if max_bytes is not None and len(data) > max_bytes:
        raise ImageError(f"image is {len(data)} bytes, above the limit of {max_bytes}")
    img = _open(data, max_pixels)
    if img.format not in ALLOWED_FORMATS:
        raise ImageError(f"format {img.format} is not accepted; send JPEG or PNG")
    width, height = img.size
    if width == 0 or height == 0:
        raise ImageError(f"image has zero size ({width}x{height})")
    if max_pixels is not None and width * height > max_pixels:
        # Checked before decoding, so a tiny file that declares a huge canvas costs nothing.
        raise ImageError(f"image is {width}x{height} = {width * height} pixels, above the limit of {max_pixels}")
    if img.mode in ALPHA_MODES or "transparency" in img.info:
        raise ImageError(f"image has an alpha channel (mode {img.mode}); flatten it to RGB before sending")
    try:
        img.load()
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt data
        raise ImageError(f"corrupt {img.format} data: {exc}") from None
    return img if img.mode == "RGB" else img.convert("RGB")  # convert() copies even RGB to RGB


def _open(data: bytes, max_pixels: int | None) -> Image.Image:
    """Open lazily (the header only). With a pixel cap, Pillow's bomb warning is moot: the cap is checked next."""
    try:
        with warnings.catch_warnings():
            if max_pixels is not None:
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:  # Pillow's own guard, far above any camera frame
        if max_pixels is None:
            raise ImageError(f"not a decodable image: {exc}") from None
        raise ImageError(f"image is above the limit of {max_pixels} pixels ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for garbage
        raise ImageError(f"not a decodable image: {exc}") from None


def to_frame_u8(img: Image.Image) -> np.ndarray:
    """Letterbox an RGB image into the UINT8 [2160, 3840, 3] (HWC) frame that ensemble_jpeg carries."""
    if img.size == (FRAME_W, FRAME_H):
        return np.asarray(img)
    box = frame_letterbox(*img.size)
    return place_in_frame(np.asarray(img.resize((box.new_w, box.new_h), Image.Resampling.BILINEAR)), box)
