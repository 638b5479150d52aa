"""The served crop (postprocessing, postprocessing_u8) against the float64 crop-and-resize of
tests/helpers/crop_reference.py, which shares no code with builders/nets/frame_ops.py (its docstring has the rules).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.helpers.crop_reference import CASES, detections, make_frame, reference_crop
from tritonyard_contract import CROP, DETECTIONS, FRAME, FRAME_U8

pytestmark = pytest.mark.integration

# Both models place samples in float32. postprocessing goes through grid_sample's normalised grid (x*2/W - 1 and
# back), where one float32 step of the grid is ~1e-4 frame px; across a hard patch edge (up to 255 levels per pixel)
# that is up to ~1e-4 in 0..1: measured worst 6.2e-5 (mean 1e-7). postprocessing_u8 indexes pixels directly
# (x - 0.5, no normalisation): measured worst 2.4e-6, in the tiny box where 384 samples share two pixels.
ATOL = {"postprocessing": 1e-4, "postprocessing_u8": 1e-5}


@pytest.fixture(scope="module")
def frame_u8() -> np.ndarray:
    return make_frame()


@pytest.fixture(scope="module")
def http(triton) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(triton.http_url, network_timeout=600)
    yield client
    client.close()


def serve(http: httpclient.InferenceServerClient, model: str, frame_u8: np.ndarray, det: np.ndarray) -> np.ndarray:
    """One request with binary tensors; returns the [3, 384, 384] crop."""
    if model == "postprocessing":
        pixels = np.ascontiguousarray(frame_u8.transpose(2, 0, 1)[np.newaxis], dtype=np.float32)  # same values
        frame_in = httpclient.InferInput(FRAME.name, list(pixels.shape), "FP32")
    else:
        pixels = frame_u8[np.newaxis]
        frame_in = httpclient.InferInput(FRAME_U8.name, list(pixels.shape), "UINT8")
    frame_in.set_data_from_numpy(pixels, binary_data=True)
    det_in = httpclient.InferInput(DETECTIONS.name, list(det.shape), "FP32")
    det_in.set_data_from_numpy(det, binary_data=True)
    out = httpclient.InferRequestedOutput(CROP.name, binary_data=True)
    res = http.infer(model, [frame_in, det_in], outputs=[out])
    crop = res.as_numpy(CROP.name)
    assert crop.shape == (1, *CROP.dims) and crop.dtype == np.float32
    return crop[0]


@pytest.mark.parametrize("model", ["postprocessing", "postprocessing_u8"])
@pytest.mark.parametrize("name", CASES)
def test_served_crop_equals_reference_crop(http, frame_u8: np.ndarray, model: str, name: str) -> None:
    det = detections(CASES[name])
    got = serve(http, model, frame_u8, det).astype(np.float64)
    expected = reference_crop(frame_u8, det[0])
    err = np.abs(got - expected)
    worst = np.unravel_index(int(np.argmax(err)), err.shape)
    assert err.max() <= ATOL[model], (
        f"{model} {name}: max abs diff {err.max():.3g} at {worst} (got {got[worst]:.6f}, want {expected[worst]:.6f}),"
        f" mean {err.mean():.3g}"
    )
    # The crop is not trivially flat (a constant crop would hide a wrong box).
    assert expected.std() > 0.01 or name in ("tiny",)
