"""Synthetic 4K CLO frames whose truth is known (boxes and oil levels), for the demo, tests and load tests.

They come from the generator the stand-ins were trained on (`training.scenes`), drawn outside the data set's
splits, with one oiler at a pinned level so the demo's answer can be checked by eye.
"""

from __future__ import annotations

from PIL import Image

from training.scenes import Scene, render

DEMO_SEED = 0
DEMO_INDEX = 300_000  # scene indices of the data set's splits stay below this


def synthetic_scene(seed: int = 0, oil_level: float = 0.62) -> Scene:
    """A 3840x2160 frame with one oiler filled to `oil_level` (0..1) and distractors; `seed` picks the scene."""
    return render(DEMO_SEED, DEMO_INDEX + seed, count=1, level=oil_level)


def synthetic_frame(seed: int = 0, oil_level: float = 0.62) -> Image.Image:
    """The RGB image of `synthetic_scene(seed, oil_level)`."""
    return synthetic_scene(seed, oil_level).image
