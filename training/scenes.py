"""Synthetic CLO scenes: 4K frames of constant-level oilers on machinery, with exact labels.

A scene is fully determined by (seed, index): the same pair always draws the same frame and labels. Two oiler
kinds are drawn, as inspection robots see them: cylindrical sight glasses and spheric bulbs, each with a metal cap
and base, filled with oil of some tint to a level in 0..1 of the glass's inner height. Frames vary the machinery
background, lighting, distractors (gauges, pipes, bottles without oil), blur, noise and JPEG quality.

Only numpy and Pillow are used, so clients and tests can draw frames whose truth is known.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageChops, ImageDraw

FRAME_W, FRAME_H = 3840, 2160
KINDS = ("sight_glass", "bulb")
TINTS = {  # oil colours as seen through glass, RGB
    "amber": (196, 140, 32),
    "honey": (214, 170, 60),
    "brown": (120, 72, 24),
    "red": (170, 50, 30),
    "green": (110, 150, 40),
}


@dataclass(frozen=True)
class Oiler:
    """One labelled oiler: its box in frame pixels (x1, y1, x2, y2) and its oil level in 0..1."""

    box: tuple[float, float, float, float]
    level: float
    kind: str
    tint: str


@dataclass
class Scene:
    """A rendered frame (RGB, 3840x2160) with its labels, before JPEG encoding."""

    image: Image.Image
    oilers: list[Oiler] = field(default_factory=list)
    jpeg_quality: int = 90

    def jpeg(self) -> bytes:
        """The frame as the camera would store it: JPEG at this scene's quality (its artefacts are part of it)."""
        buf = io.BytesIO()
        self.image.save(buf, "JPEG", quality=self.jpeg_quality)
        return buf.getvalue()

    def best_level(self, box: tuple[float, float, float, float] | None) -> float | None:
        """The level (0..1) of the oiler that `box` overlaps most (IoU), or None when none overlaps."""
        if box is None or not self.oilers:
            return None
        ious = [iou(box, o.box) for o in self.oilers]
        best = int(np.argmax(ious))
        return self.oilers[best].level if ious[best] > 0 else None


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two x1, y1, x2, y2 boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _rgb(rng: np.random.Generator, base: tuple[int, ...], spread: int, tint: int = 8) -> tuple[int, int, int]:
    """`base` shifted by one brightness step in +-spread and a small per-channel tint."""
    shift = int(rng.integers(-spread, spread + 1))
    return tuple(int(np.clip(c + shift + rng.integers(-tint, tint + 1), 0, 255)) for c in base)


def _background(rng: np.random.Generator) -> Image.Image:
    """Painted machinery: a lit gradient, panels, pipes, bolts and cables."""
    paint = _rgb(
        rng, [(90, 95, 100), (60, 90, 120), (70, 110, 80), (150, 150, 140), (110, 70, 50)][rng.integers(5)], 25
    )
    # Lighting: a linear ramp in a random direction, applied on a small grid and upsampled (cheap at 4K).
    gy, gx = np.mgrid[0:27, 0:48].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * gx / 48 + np.sin(angle) * gy / 27) * rng.uniform(0.2, 0.7)
    light = rng.uniform(0.6, 1.25) + ramp - ramp.mean()
    small = np.clip(np.asarray(paint, np.float32)[None, None, :] * light[..., None], 0, 255).astype(np.uint8)
    img = Image.fromarray(small, "RGB").resize((FRAME_W, FRAME_H), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(4, 12)):  # panels and housings
        x, y = rng.integers(-400, FRAME_W), rng.integers(-400, FRAME_H)
        w, h = rng.integers(200, 1600), rng.integers(200, 1200)
        shade = _rgb(rng, paint, 45)
        draw.rectangle(
            [x, y, x + w, y + h], fill=shade, outline=_rgb(rng, (40, 40, 40), 20), width=int(rng.integers(2, 10))
        )
    for _ in range(rng.integers(1, 5)):  # pipes: long bars with a highlight
        horizontal = rng.random() < 0.5
        t, pos = int(rng.integers(40, 180)), int(rng.integers(0, FRAME_H if horizontal else FRAME_W))
        col = _rgb(rng, (120, 120, 125), 50)
        hi = tuple(min(255, c + 50) for c in col)
        if horizontal:
            draw.rectangle([0, pos, FRAME_W, pos + t], fill=col)
            draw.rectangle([0, pos + t // 4, FRAME_W, pos + t // 3], fill=hi)
        else:
            draw.rectangle([pos, 0, pos + t, FRAME_H], fill=col)
            draw.rectangle([pos + t // 4, 0, pos + t // 3, FRAME_H], fill=hi)
    for _ in range(rng.integers(5, 30)):  # bolts
        x, y, r = rng.integers(0, FRAME_W), rng.integers(0, FRAME_H), rng.integers(8, 40)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=_rgb(rng, (70, 70, 70), 30))
    for _ in range(rng.integers(0, 4)):  # cables
        pts = [(int(rng.integers(0, FRAME_W)), int(rng.integers(0, FRAME_H))) for _ in range(4)]
        draw.line(pts, fill=_rgb(rng, (25, 25, 25), 20), width=int(rng.integers(10, 40)), joint="curve")
    return img


def _distractor(draw: ImageDraw.ImageDraw, rng: np.random.Generator, box: tuple[int, int, int, int]) -> None:
    """Things that look a little like oilers but are not: a round gauge, an empty bottle, a stubby pipe."""
    x1, y1, x2, y2 = box
    kind = rng.integers(3)
    if kind == 0:  # pressure gauge: white dial, rim, needle
        draw.ellipse(box, fill=(235, 235, 230), outline=(30, 30, 30), width=max(4, (x2 - x1) // 25))
        cx, cy, r = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2
        a = rng.uniform(0, 2 * np.pi)
        draw.line([(cx, cy), (cx + 0.8 * r * np.cos(a), cy + 0.8 * r * np.sin(a))], fill=(200, 20, 20), width=8)
    elif kind == 1:  # empty glass bottle: no cap band, no oil
        draw.rounded_rectangle(box, radius=(x2 - x1) // 3, fill=(190, 205, 210), outline=(80, 90, 95), width=6)
    else:  # short capped pipe stub, metal all through
        draw.rectangle(box, fill=_rgb(rng, (140, 140, 145), 30), outline=(50, 50, 50), width=6)
        draw.rectangle([x1 - 20, y1, x2 + 20, y1 + (y2 - y1) // 6], fill=(60, 60, 65))


def _draw_oiler(
    img: Image.Image, rng: np.random.Generator, box: tuple[int, int, int, int], kind: str, level: float, tint: str
) -> None:
    """Cap on top, glass in the middle with oil up to `level` of its inner height, base below; fills `box`."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    draw = ImageDraw.Draw(img)
    metal = _rgb(rng, (75, 75, 80), 25)
    cap_h, base_h = int(h * rng.uniform(0.08, 0.14)), int(h * rng.uniform(0.10, 0.18))
    glass_top, glass_bot = y1 + cap_h, y2 - base_h
    stem_w = int(w * rng.uniform(0.35, 0.55))
    draw.rectangle([x1 + (w - stem_w) // 2, glass_bot, x1 + (w + stem_w) // 2, y2], fill=metal)  # base / stem
    draw.rectangle([x1 + w // 3, y2 - base_h // 3, x2 - w // 3, y2], fill=tuple(c - 20 for c in metal))
    oil = np.asarray(TINTS[tint], np.float32) * rng.uniform(0.8, 1.1)
    oil_rgb = tuple(int(c) for c in np.clip(oil, 0, 255))
    empty = _rgb(rng, (200, 212, 218), 15)
    rim = max(4, w // 40)
    if kind == "sight_glass":
        gx1, gx2 = x1 + int(w * 0.08), x2 - int(w * 0.08)
        draw.rectangle([gx1, glass_top, gx2, glass_bot], fill=empty, outline=(35, 35, 35), width=rim)
        inner_top, inner_bot = glass_top + rim, glass_bot - rim
        surface = inner_bot - level * (inner_bot - inner_top)
        if level > 0:
            draw.rectangle([gx1 + rim, surface, gx2 - rim, inner_bot], fill=oil_rgb)
            draw.line(
                [(gx1 + rim, surface), (gx2 - rim, surface)],
                fill=tuple(c // 2 for c in oil_rgb),
                width=max(3, rim // 2),
            )
        draw.rectangle(
            [gx1 + (gx2 - gx1) // 6, inner_top, gx1 + (gx2 - gx1) // 6 + max(6, w // 25), inner_bot],
            fill=(245, 248, 250),
        )
    else:  # spheric bulb, its vertical diameter is the glass height
        d = min(glass_bot - glass_top, w)
        cx = (x1 + x2) / 2
        by1 = glass_top + (glass_bot - glass_top - d) / 2
        bulb = [cx - d / 2, by1, cx + d / 2, by1 + d]
        draw.ellipse(bulb, fill=empty, outline=(35, 35, 35), width=rim)
        inner_top, inner_bot = by1 + rim, by1 + d - rim
        if level > 0:  # oil below the surface line, inside the circle: draw the disc clipped by a mask
            ox, oy = int(bulb[0]), int(by1)  # a mask of the bulb's size, pasted at its corner
            mask = Image.new("L", (int(d) + 2, int(d) + 2), 0)
            mdraw = ImageDraw.Draw(mask)
            mdraw.ellipse([bulb[0] + rim - ox, inner_top - oy, bulb[2] - rim - ox, inner_bot - oy], fill=255)
            surface = inner_bot - level * (inner_bot - inner_top)
            mdraw.rectangle([0, 0, mask.width, surface - oy], fill=0)
            img.paste(Image.new("RGB", mask.size, oil_rgb), (ox, oy), mask)
        draw.ellipse([cx - d * 0.28, by1 + d * 0.15, cx - d * 0.18, by1 + d * 0.45], fill=(245, 248, 250))
        draw.rectangle([x1 + (w - stem_w) // 2, glass_top, x1 + (w + stem_w) // 2, by1 + rim], fill=metal)
        glass_bot = int(by1 + d)
    draw.rectangle([x1, y1, x2, glass_top], fill=metal, outline=(30, 30, 30), width=rim)  # cap


def _place(
    rng: np.random.Generator, taken: list[tuple[int, int, int, int]], h: int, w: int
) -> tuple[int, int, int, int] | None:
    for _ in range(30):
        x, y = int(rng.integers(0, FRAME_W - w)), int(rng.integers(0, FRAME_H - h))
        box = (x, y, x + w, y + h)
        if all(iou(box, t) == 0 and not _near(box, t) for t in taken):
            return box
    return None


def _near(a: tuple[int, ...], b: tuple[int, ...], gap: int = 40) -> bool:
    return not (a[2] + gap < b[0] or b[2] + gap < a[0] or a[3] + gap < b[1] or b[3] + gap < a[1])


def render(seed: int, index: int, *, count: int | None = None, level: float | None = None) -> Scene:
    """Draw scene `index` of the data set `seed`. `count` and `level` pin what is otherwise random (the demo's)."""
    rng = np.random.default_rng([seed, index])
    img = _background(rng)
    draw = ImageDraw.Draw(img)
    n = int(rng.choice([0, 1, 1, 1, 2, 2, 3])) if count is None else count
    taken: list[tuple[int, int, int, int]] = []
    oilers: list[Oiler] = []
    for _ in range(n):
        h = int(FRAME_H * rng.uniform(0.10, 0.60))
        kind = KINDS[int(rng.integers(2))]
        w = int(h * (rng.uniform(0.40, 0.70) if kind == "sight_glass" else rng.uniform(0.60, 0.85)))
        box = _place(rng, taken, h, w)
        if box is None:
            continue
        taken.append(box)
        lvl = float(rng.uniform(0, 1)) if level is None else level
        tint = list(TINTS)[int(rng.integers(len(TINTS)))]
        _draw_oiler(img, rng, box, kind, lvl, tint)
        oilers.append(Oiler(tuple(float(v) for v in box), lvl, kind, tint))
    for _ in range(int(rng.integers(0, 4))):
        side = int(FRAME_H * rng.uniform(0.06, 0.3))
        box = _place(rng, taken, side, int(side * rng.uniform(0.5, 1.0)))
        if box is not None:
            taken.append(box)
            _distractor(draw, rng, box)
    blur = int(rng.choice([1, 1, 2, 3, 4]))  # optics: downsample by this factor and back (a cheap, even blur)
    if blur > 1:
        img = img.reduce(blur).resize((FRAME_W, FRAME_H), Image.Resampling.BILINEAR)
    sigma = float(rng.uniform(1, 9))  # sensor noise: luma, 2-pixel grain (a quarter of the draws of full-size noise)
    grain = rng.standard_normal((FRAME_H // 2, FRAME_W // 2), dtype=np.float32) * sigma + 128
    noise = Image.fromarray(np.clip(grain, 0, 255).astype(np.uint8), "L").resize(
        (FRAME_W, FRAME_H), Image.Resampling.NEAREST
    )
    noise = Image.merge("RGB", (noise, noise, noise))
    img = ImageChops.add(img, noise, scale=1.0, offset=-128)
    return Scene(img, oilers, int(rng.integers(60, 96)))
