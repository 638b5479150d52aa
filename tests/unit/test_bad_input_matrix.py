"""The bad-input matrix (tests/helpers/bad_inputs.py) covers every entry point, without a server."""

from __future__ import annotations

import io

from PIL import Image

from tests.helpers.bad_inputs import CASES
from tests.helpers.images import jpeg_declaring


def test_bad_input_matrix_covers_every_entry_point_with_forty_cases_when_listed() -> None:
    vision = {"ensemble", "ensemble_jpeg", "preprocessing", "yolov8", "postprocessing", "efficientnet_v2"}
    entry_points = vision | {"image_decoder", "gpt2", "gpt2_stream"}
    assert {c.model for c in CASES.values()} == entry_points
    assert len(CASES) >= 40
    assert Image.open(io.BytesIO(jpeg_declaring(12000, 12000))).size == (12000, 12000)  # the bomb really claims it
