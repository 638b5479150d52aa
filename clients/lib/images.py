"""Client-side image decoding for the vision pipeline: bytes -> RGB image -> the 4K frame.

The letterbox is the contract's (`tritonyard_contract.geometry`), the same code the server's
image_decoder uses, so a frame made here for `ensemble` is bit-identical to the one `ensemble_jpeg`
decodes from the same bytes. The server enforces its own size caps; this side only refuses what it
cannot turn into a frame, with the server's wording.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from tritonyard_contract.geometry import FRAME_H, FRAME_W, frame_letterbox, place_in_frame

ALLOWED_FORMATS = ("JPEG", "PNG")
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


class ImageError(ValueError):
    """The bytes are not an image the pipeline accepts; the message says why."""


def decode(data: bytes) -> Image.Image:
    """JPEG/PNG bytes to an RGB image."""
    if not data:
        raise ImageError("image is empty (0 bytes)")
    try:
        img = Image.open(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for garbage
        raise ImageError(f"not a decodable image: {exc}") from None
    if img.format not in ALLOWED_FORMATS:
        raise ImageError(f"format {img.format} is not accepted; send JPEG or PNG")
    if 0 in img.size:
        raise ImageError(f"image has zero size ({img.width}x{img.height})")
    if img.mode in ALPHA_MODES or "transparency" in img.info:
        raise ImageError(f"image has an alpha channel (mode {img.mode}); flatten it to RGB before sending")
    try:
        img.load()
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt data
        raise ImageError(f"corrupt {img.format} data: {exc}") from None
    return img if img.mode == "RGB" else img.convert("RGB")


def to_frame_u8(img: Image.Image) -> np.ndarray:
    """Letterbox an RGB image into the UINT8 [2160, 3840, 3] (HWC) frame."""
    if img.size == (FRAME_W, FRAME_H):
        return np.asarray(img)
    box = frame_letterbox(*img.size)
    return place_in_frame(np.asarray(img.resize((box.new_w, box.new_h), Image.Resampling.BILINEAR)), box)


def to_frame(img: Image.Image) -> np.ndarray:
    """Letterbox an RGB image into the FP32 [3, 2160, 3840] frame with pixel values 0..255 (`ensemble`'s input)."""
    # uint8 HWC -> CHW view -> one float32 copy in C order (a 4K frame is 99.5 MB: copy it once).
    return to_frame_u8(img).transpose(2, 0, 1).astype(np.float32, order="C")
