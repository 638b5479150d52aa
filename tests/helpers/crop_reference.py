"""A crop-and-resize written in float64: the reference for the served crop (postprocessing, postprocessing_u8).

Both models take the original 3840x2160 frame and YOLO's [300, 6] rows (x1, y1, x2, y2, score, class in 640x640
letterbox pixels), pick the best-scoring row, map it back to frame pixels and resample that box to 384x384 with
bilinear interpolation at pixel centres (grid_sample's align_corners=False, border clamp, no antialiasing), in 0..1.
With no row scoring above 0 the box is the centred 2160x2160 square.

The reference below shares no code with builders/nets/frame_ops.py: its own box mapping, its own bilinear taps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

W, H, OUT = 3840, 2160, 384
# The detector letterbox, by hand: 640/3840 = 1/6 < 640/2160, so the frame shrinks 6x to 640x360 and sits
# (640 - 360) / 2 = 140 rows down. Frame px = (letterbox px - (0, 140)) * 6.
SHRINK, PAD_Y = 6.0, 140.0


@dataclass(frozen=True)
class Case:
    rows: dict[int, tuple[float, float, float, float, float, float]]  # row index -> detection; other rows zero
    box: tuple[float, float, float, float]  # the frame-pixel box the crop must show (after clamping), by hand


CASES = {
    # One box: frame x 200*6 = 1200 .. 1800, y (250-140)*6 = 660 .. (330-140)*6 = 1140.
    "single": Case({0: (200, 250, 300, 330, 0.8, 0)}, (1200, 660, 1800, 1140)),
    # The best row (0.9) is neither first nor last; a higher class id must not matter.
    "best_not_first": Case(
        {
            0: (10, 150, 60, 200, 0.3, 0),
            3: (400, 300, 480, 420, 0.6, 1),
            7: (100.25, 180.5, 260.75, 470.125, 0.9, 2),
            8: (500, 200, 620, 260, 0.85, 0),
        },
        (601.5, 243, 1564.5, 1980.75),
    ),
    # Reaching into the gray band above the frame and past the left edge: clamped to x 0, y 0.
    "outside_top_left": Case({0: (-20, 100, 120, 260, 0.7, 0)}, (0, 0, 720, 720)),
    # Past the right and bottom edges: x2 = 700*6 = 4200 -> 3840, y2 = (560-140)*6 = 2520 -> 2160.
    "outside_bottom_right": Case({4: (560, 450, 700, 560, 0.7, 0)}, (3360, 1860, 3840, 2160)),
    # A tiny box, 1.5 x 1.2 frame px: 384 x 384 samples inside 2 x 2 pixels, a magnified bilinear ramp.
    "tiny": Case({0: (321.0, 321.0, 321.25, 321.2, 0.5, 0)}, (1926, 1086, 1927.5, 1087.2)),
    # Zero-width: x2 == x1, widened to one pixel so the crop is defined.
    "zero_width": Case({0: (100, 200, 100, 300, 0.5, 0)}, (600, 360, 601, 960)),
    # No row scores above 0: the centred 2160x2160 square, x (3840-2160)/2 = 840 .. 3000.
    "all_zero": Case({}, (840, 0, 3000, 2160)),
    # Boxes are there but with score 0: still the centred square.
    "scores_zero": Case({0: (100, 200, 300, 400, 0.0, 0), 5: (10, 150, 20, 160, 0.0, 1)}, (840, 0, 3000, 2160)),
}


def make_frame() -> np.ndarray:
    """UINT8 [2160, 3840, 3]: smooth gradients, stripes and rings, sharp-edged patches and a little noise."""
    rng = np.random.default_rng(2024)
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    r = 30 + 180 * x / W + 12 * np.sin(y / 37.0)
    g = 40 + 150 * y / H + 20 * np.sin(x / 5.3 + y / 9.1)  # stripes: steep, but smooth
    b = 128 + 90 * np.cos(np.hypot(x - 1900, y - 1000) / 23.0)  # rings
    img = np.stack([r, g, b], axis=-1)
    for _ in range(40):  # flat patches with hard edges
        x0, y0 = rng.integers(0, W - 200), rng.integers(0, H - 200)
        w, h = rng.integers(20, 200, 2)
        img[y0 : y0 + h, x0 : x0 + w] = rng.integers(0, 256, 3)
    img += rng.normal(0, 4, img.shape)
    img[:6, :] = 255  # the borders are where clamping shows
    img[:, -6:] = 0
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def detections(case: Case) -> np.ndarray:
    det = np.zeros((1, 300, 6), np.float32)
    for i, row in case.rows.items():
        det[0, i] = row
    return det


def crop_box(det: np.ndarray) -> tuple[float, float, float, float]:
    """The frame-pixel box the crop covers: best row mapped back, clamped into the frame, at least 1 px wide/tall."""
    rows = det.astype(np.float64)
    best = int(np.argmax(rows[:, 4]))
    if rows[best, 4] > 0:
        bx1, by1, bx2, by2 = rows[best, :4]
        x1, y1, x2, y2 = bx1 * SHRINK, (by1 - PAD_Y) * SHRINK, bx2 * SHRINK, (by2 - PAD_Y) * SHRINK
    else:
        side = min(W, H)
        x1, y1, x2, y2 = (W - side) / 2, (H - side) / 2, (W + side) / 2, (H + side) / 2
    x1, y1 = min(max(x1, 0.0), W - 1.0), min(max(y1, 0.0), H - 1.0)
    x2, y2 = max(min(max(x2, 0.0), W), x1 + 1), max(min(max(y2, 0.0), H), y1 + 1)
    return x1, y1, x2, y2


def taps(lo: float, hi: float, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample OUT points at the centres of OUT equal cells of [lo, hi) (continuous coordinates: pixel i spans
    [i, i+1), its centre is i + 0.5); return the two neighbouring pixel indices and the weight of the second,
    clamped to the border."""
    centres = lo + (np.arange(OUT) + 0.5) * (hi - lo) / OUT
    u = np.clip(centres - 0.5, 0, n - 1)  # position in pixel-index space; border: never outside the frame
    i0 = np.floor(u).astype(np.int64)
    return i0, np.minimum(i0 + 1, n - 1), u - i0


def reference_crop(frame: np.ndarray, det: np.ndarray) -> np.ndarray:
    """[3, 384, 384] float64 in 0..1: the best box of `det` ([300, 6]) resampled bilinearly from `frame` (HWC)."""
    x1, y1, x2, y2 = crop_box(det)
    xa, xb, wx = taps(x1, x2, W)
    ya, yb, wy = taps(y1, y2, H)
    img = frame.astype(np.float64)
    wx, wy = wx[None, :, None], wy[:, None, None]
    top = img[ya][:, xa] * (1 - wx) + img[ya][:, xb] * wx
    bottom = img[yb][:, xa] * (1 - wx) + img[yb][:, xb] * wx
    return (top * (1 - wy) + bottom * wy).transpose(2, 0, 1) / 255.0
