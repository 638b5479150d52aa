"""The committed oil regressor on the demo frame, cropped at the labelled box: it reads the true level.

`make demo` reads the same oiler from the detected box, through the served pipeline; here the crop is cut at the
label, so the check does not depend on the detector.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from builders.nets.efficientnet_v2 import build_oil_regressor
from builders.vision import STAND_IN_OIL, stand_in_oil_input_px
from clients.synthetic import synthetic_scene
from training import oil

DEMO_LEVEL = 0.62


def _read(box: tuple[float, ...]) -> float:
    scene = synthetic_scene(0, DEMO_LEVEL)
    pixels = torch.from_numpy(np.asarray(scene.image.convert("RGB")).copy())[None]
    regressor, _ = build_oil_regressor(STAND_IN_OIL, input_px=stand_in_oil_input_px())
    return float(oil.predict(regressor, oil.crop_rows(pixels, [oil.to_letterbox(box)]))[0])


@pytest.mark.slow
def test_oil_stand_in_reads_demo_level_when_cropped_at_labelled_box():
    box = synthetic_scene(0, DEMO_LEVEL).oilers[0].box
    assert abs(_read(box) - 100 * DEMO_LEVEL) <= 5
