"""Decode an encoded image and fit it into the pipeline's 3840x2160 frame (UINT8 HWC or FP32 CHW).

Shipped beside image_decoder's model.py, and imported by the CLO client, so a frame decoded
client-side for `ensemble` is bit-identical to the one `ensemble_jpeg` decodes server-side.
Only the stdlib, numpy and Pillow are used.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

FRAME_W, FRAME_H = 3840, 2160
PAD_VALUE = 114  # letterbox gray, as ultralytics pads
ALLOWED_FORMATS = ("JPEG", "PNG")
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


class ImageError(ValueError):
    """The bytes are not an image this pipeline accepts; the message says why."""


def fit_geometry(width: int, height: int) -> tuple[float, int, int, int, int]:
    """Scale and centred padding that fit width x height into the frame: (scale, pad_x, pad_y, new_w, new_h)."""
    scale = min(FRAME_W / width, FRAME_H / height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    return scale, (FRAME_W - new_w) // 2, (FRAME_H - new_h) // 2, new_w, new_h


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
    if img.size != (FRAME_W, FRAME_H):
        _, pad_x, pad_y, new_w, new_h = fit_geometry(*img.size)
        canvas = Image.new("RGB", (FRAME_W, FRAME_H), (PAD_VALUE,) * 3)
        canvas.paste(img.resize((new_w, new_h), Image.Resampling.BILINEAR), (pad_x, pad_y))
        img = canvas
    return np.asarray(img)


def to_frame(img: Image.Image) -> np.ndarray:
    """Letterbox an RGB image into the FP32 [3, 2160, 3840] frame with pixel values 0..255."""
    # uint8 HWC -> CHW view -> one float32 copy in C order (a 4K frame is 99.5 MB: copy it once).
    return to_frame_u8(img).transpose(2, 0, 1).astype(np.float32, order="C")
