"""The float64 crop reference (tests/helpers/crop_reference.py) against boxes and pixels worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.crop_reference import CASES, OUT, SHRINK, H, W, crop_box, detections, reference_crop


@pytest.mark.parametrize("name", CASES)
def test_crop_box_is_the_hand_derived_box(name: str) -> None:
    """The reference's own box mapping against the boxes worked out by hand in CASES (no server)."""
    case = CASES[name]
    np.testing.assert_allclose(crop_box(detections(case)[0]), case.box, rtol=0, atol=1e-3)


def test_reference_crop_when_box_is_whole_pixels_at_scale_one() -> None:
    """A 384 px box sampled at 384 points lands on pixel centres: the reference must return the pixels as-is."""
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    det = np.zeros((300, 6), np.float32)
    det[0] = (100, 200, 100 + OUT / SHRINK, 200 + OUT / SHRINK, 1, 0)  # frame box 600..984, 360..744
    np.testing.assert_allclose(
        reference_crop(frame, det), frame[360:744, 600:984].transpose(2, 0, 1) / 255.0, atol=1e-12
    )
