"""A deterministic synthetic 4K camera frame of a constant-level oiler, for demos and tests."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from python_backends.image_decoder.frames import FRAME_H, FRAME_W


def synthetic_frame(seed: int = 0, oil_level: float = 0.6) -> Image.Image:
    """A 3840x2160 RGB frame: a machine-gray background with noise and a glass oiler filled to `oil_level`."""
    rng = np.random.default_rng(seed)
    base = np.linspace(70, 130, FRAME_W, dtype=np.float32)[None, :, None].repeat(FRAME_H, 0).repeat(3, 2)
    noisy = np.clip(base + rng.normal(0, 6, (FRAME_H, FRAME_W, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(noisy, "RGB")
    draw = ImageDraw.Draw(img)
    x0, y0, w, h = 1500 + int(rng.integers(0, 400)), 500, 700, 1100
    draw.rectangle([x0 - 60, y0 - 120, x0 + w + 60, y0], fill=(60, 60, 65))  # cap
    draw.rectangle([x0, y0, x0 + w, y0 + h], fill=(200, 210, 215), outline=(40, 40, 40), width=12)  # glass
    top = y0 + int(h * (1 - oil_level))
    draw.rectangle([x0 + 12, top, x0 + w - 12, y0 + h - 12], fill=(190, 140, 30))  # oil
    draw.rectangle([x0 + 200, y0 + h, x0 + w - 200, y0 + h + 250], fill=(80, 80, 85))  # stem
    return img
