"""The vision pipeline against a real tritonserver: parity, batching and bad input."""

from __future__ import annotations

import io
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image
from tritonclient.utils import InferenceServerException

from builders.onnx_export import run as run_onnx
from builders.vision import TOLERANCE
from clients.clo import CloClient
from clients.lib import images
from clients.synthetic import synthetic_frame
from serving.launcher import TritonServer
from tests.helpers.images import BAD, encode, small_image
from tritonyard_contract import CROP, DETECTIONS, FRAME, IMAGE_BYTES, LETTERBOXED, OIL_PCT, PIPELINE_OUTPUTS

pytestmark = pytest.mark.integration

# Served and in-process runs use the same onnxruntime kernels; only thread scheduling differs.
ATOL = {DETECTIONS.name: 1e-3, CROP.name: 1e-5, OIL_PCT.name: 1e-3}


@pytest.fixture(scope="module")
def http(triton: TritonServer) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(triton.http_url, network_timeout=600)


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    buf = io.BytesIO()
    synthetic_frame(seed=3).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def onnx_chain(repo: Path, frame: np.ndarray) -> dict[str, np.ndarray]:
    """The four model.onnx files run one after another in-process: the reference for the ensemble."""
    model = lambda name: repo / name / "1" / "model.onnx"  # noqa: E731
    x = frame[np.newaxis]
    [letterboxed] = run_onnx(model("preprocessing"), {FRAME.name: x})
    [det] = run_onnx(model("yolov8"), {LETTERBOXED.name: letterboxed})
    [crop] = run_onnx(model("postprocessing"), {FRAME.name: x, DETECTIONS.name: det})
    [oil] = run_onnx(model("efficientnet_v2"), {CROP.name: crop})
    return {DETECTIONS.name: det[0], CROP.name: crop[0], OIL_PCT.name: oil[0]}


@pytest.mark.parametrize("protocol,shm", [("http", False), ("grpc", False), ("http", True)])
def test_ensemble_equals_onnx_chain_when_frame_is_sent(triton, model_repo, jpeg, protocol, shm) -> None:
    image = images.decode(jpeg)
    frame = images.to_frame(image)
    url = triton.http_url if protocol == "http" else triton.grpc_url
    client = CloClient(url, protocol, shm=shm)
    try:
        got = client.infer_frame(frame, image.size)
    finally:
        client.close()
    expected = onnx_chain(model_repo, frame)
    served = {DETECTIONS.name: got.detections, CROP.name: got.crop, OIL_PCT.name: np.array([got.oil_pct], np.float32)}
    for name, atol in ATOL.items():
        np.testing.assert_allclose(served[name], expected[name], atol=atol, rtol=0, err_msg=name)
    assert 0.0 <= got.oil_pct <= 100.0


def test_ensemble_jpeg_equals_ensemble_when_same_image_is_decoded_client_side(triton, jpeg) -> None:
    image = images.decode(jpeg)
    client = CloClient(triton.http_url)
    try:
        via_jpeg = client.infer_encoded(jpeg, image.size)
        via_frame = client.infer_frame(images.to_frame(image), image.size)
    finally:
        client.close()
    np.testing.assert_array_equal(via_jpeg.boxes, via_frame.boxes)
    # ensemble_jpeg crops from bytes with written-out bilinear sampling; ensemble uses grid_sample.
    np.testing.assert_allclose(via_jpeg.crop, via_frame.crop, atol=TOLERANCE["postprocessing_u8"], rtol=0)
    assert via_jpeg.oil_pct == pytest.approx(via_frame.oil_pct, abs=1e-2)


def _stats(client: httpclient.InferenceServerClient, model: str) -> tuple[int, int]:
    s = client.get_inference_statistics(model)["model_stats"][0]
    return int(s["inference_count"]), int(s["execution_count"])


@pytest.mark.parametrize("model,tensor", [("yolov8", LETTERBOXED), ("efficientnet_v2", CROP)])
def test_step_model_batches_requests_when_they_arrive_concurrently(triton, http, model, tensor) -> None:
    before = _stats(http, model)
    x = np.random.default_rng(0).random((1, *tensor.dims), dtype=np.float32)

    def call(_: int) -> np.ndarray:
        c = httpclient.InferenceServerClient(triton.http_url, network_timeout=300)
        inp = httpclient.InferInput(tensor.name, list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        out = c.infer(model, [inp]).as_numpy(_output_of(model))
        c.close()
        return out

    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(call, range(16)))
    after = _stats(http, model)
    inferences, executions = after[0] - before[0], after[1] - before[1]
    assert inferences == 16
    assert executions < inferences, f"{model}: {executions} executions for {inferences} inferences: no batching"
    for out in outs[1:]:  # batched or not, the same input gives the same answer
        np.testing.assert_allclose(out, outs[0], atol=1e-4, rtol=0)


def _output_of(model: str) -> str:
    return {"yolov8": DETECTIONS.name, "efficientnet_v2": OIL_PCT.name}[model]


def _assert_refused(call, *needles: str, status: str = "400") -> None:
    with pytest.raises(InferenceServerException) as info:
        call()
    message = str(info.value)
    for needle in needles:
        assert needle in message, message
    assert info.value.status() in (status, "StatusCode.INVALID_ARGUMENT"), message


@pytest.mark.parametrize(
    "dtype,dims,needle",
    [
        ("FP16", FRAME.dims, "data-type"),
        ("FP32", (3, 1080, 1920), "shape"),
        ("FP32", (3, 0, 0), "shape"),
    ],
)
def test_ensemble_refuses_frame_when_dtype_or_shape_is_wrong(triton, http, dtype, dims, needle) -> None:
    np_dtype = {"FP16": np.float16, "FP32": np.float32}[dtype]
    inp = httpclient.InferInput(FRAME.name, [1, *dims], dtype)
    inp.set_data_from_numpy(np.zeros((1, *dims), np_dtype), binary_data=True)
    _assert_refused(lambda: http.infer("ensemble", [inp]), FRAME.name, needle)
    assert http.is_server_ready() and http.is_model_ready("ensemble")


def _jpeg_input(data: bytes, api=httpclient):
    inp = api.InferInput(IMAGE_BYTES.name, [1, 1], "BYTES")
    inp.set_data_from_numpy(
        np.array([[data]], dtype=np.object_), **({"binary_data": True} if api is httpclient else {})
    )
    return inp


# The bad images the served caps refuse ("too many bytes" in BAD is over the model tests' 2 MB cap, not 32 MiB).
REFUSED = ["empty", "not an image", "truncated jpeg", "png with alpha", "zero size", "pixel bomb"]


@pytest.mark.parametrize("name", REFUSED)
def test_ensemble_jpeg_refuses_image_when_it_is_bad(triton, http, name) -> None:
    data, message = BAD[name]
    _assert_refused(lambda: http.infer("ensemble_jpeg", [_jpeg_input(data)]), IMAGE_BYTES.name, message)
    assert http.is_server_ready() and http.is_model_ready("ensemble_jpeg")


def test_ensemble_jpeg_refuses_bad_image_over_grpc_with_invalid_argument(triton) -> None:
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    with pytest.raises(InferenceServerException) as info:
        client.infer("ensemble_jpeg", [_jpeg_input(b"", grpcclient)])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT" and IMAGE_BYTES.name in str(info.value)


def test_ensemble_jpeg_serves_good_requests_when_batched_with_a_bad_one(triton, http) -> None:
    good = [encode(small_image(seed=s)) for s in range(3)]
    bad = BAD["truncated jpeg"][0]

    def call(data: bytes):
        c = httpclient.InferenceServerClient(triton.http_url, network_timeout=300)
        try:
            return c.infer(
                "ensemble_jpeg",
                [_jpeg_input(data)],
                outputs=[httpclient.InferRequestedOutput(t.name, binary_data=True) for t in PIPELINE_OUTPUTS],
            )
        except InferenceServerException as exc:
            return exc
        finally:
            c.close()

    batched = False
    for _ in range(5):  # batching depends on arrival timing; a few rounds make it certain
        before = _stats(http, "image_decoder")
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(call, [good[0], bad, good[1], good[2]]))
        after = _stats(http, "image_decoder")
        assert isinstance(results[1], InferenceServerException) and IMAGE_BYTES.name in str(results[1])
        for r in (results[0], results[2], results[3]):
            assert not isinstance(r, Exception), r
            assert r.as_numpy(DETECTIONS.name).shape == (1, *DETECTIONS.dims)
        if after[1] - before[1] < after[0] - before[0]:
            batched = True
            break
    assert batched, "the bad and good requests never shared a dynamic batch"
    assert http.is_server_ready()


def test_ensemble_jpeg_serves_png_of_any_size_when_it_has_no_alpha(triton, http) -> None:
    data = encode(Image.new("RGB", (801, 333), (90, 90, 90)), "PNG")
    result = http.infer("ensemble_jpeg", [_jpeg_input(data)])
    assert result.as_numpy(CROP.name).shape == (1, *CROP.dims)


def test_server_stays_ready_when_bad_requests_were_served(triton, http) -> None:
    for name in REFUSED:  # sent here, so the test does not rely on the refusal tests having run first
        _assert_refused(lambda data=BAD[name][0]: http.infer("ensemble_jpeg", [_jpeg_input(data)]), IMAGE_BYTES.name)
    start = time.monotonic()
    while not http.is_server_ready() and time.monotonic() - start < 10:
        time.sleep(0.2)
    assert http.is_server_ready()
    assert all(http.is_model_ready(m) for m in ("ensemble", "ensemble_jpeg", "image_decoder"))
