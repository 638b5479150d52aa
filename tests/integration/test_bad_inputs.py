"""The bad-input matrix: malformed requests to every entry point and step model of a real tritonserver.

Every case must come back as the client's fault (HTTP 400, gRPC INVALID_ARGUMENT) with a message
naming the input. Afterwards every model still answers a good request and the server is ready.
"""

from __future__ import annotations

import io
import json
import queue
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from builders import catalog
from builders.contract import (
    CROP,
    DETECTIONS,
    FRAME,
    IMAGE_BYTES,
    INPUT_IDS,
    LETTERBOXED,
    MAX_TOKENS,
    STOP,
    TEXT_INPUT,
    TensorSpec,
)
from builders.triton_config import Ensemble, PythonModel
from serving.launcher import TritonServer
from tests.backends.test_image_decoder_model import BAD, encode, png_with_size, small_image

pytestmark = pytest.mark.integration

INVALID = {"http": "400", "grpc": "StatusCode.INVALID_ARGUMENT"}
DEFAULT_MAX_PROMPT_BYTES = 32 * 1024  # Gpt2Config's default, which the session repository is built with
Inputs = Callable[[], list[tuple[str, np.ndarray]]]  # built when the case runs: some frames are 99.5 MB


def jpeg_declaring(width: int, height: int) -> bytes:
    """A ~600-byte JPEG whose frame header claims width x height (a decompression bomb)."""
    data = bytearray(encode(Image.new("RGB", (16, 16), (1, 2, 3))))
    sof = data.find(b"\xff\xc0")  # baseline SOF0: FF C0, length(2), precision(1), height(2), width(2)
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def frame(fill: float = 0.0, pixel: float | None = None, dims: tuple[int, ...] = FRAME.dims) -> np.ndarray:
    """A batch-of-one frame filled with `fill`, with one pixel set to `pixel` when given."""
    x = np.full((1, *dims), fill, np.float32)
    if pixel is not None:
        x[0, 1, 1000, 2000] = pixel
    return x


def text(*values: bytes) -> np.ndarray:
    return np.array([list(values)], dtype=np.object_)


def one(name: str, array: np.ndarray) -> Inputs:
    return lambda: [(name, array)]


def scalar(value, dtype) -> np.ndarray:
    return np.array([[value]], dtype=dtype)


def spec_of(model: str):
    return next(s for s in catalog.all_specs("cpu") if s.name == model)


def decoder_inputs(**override: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """A valid one-token gpt2_decoder step with an empty cache, with some inputs replaced."""
    named = {t.name: good_value(t) for t in spec_of("gpt2_decoder").inputs}
    named.update({k: v.astype(np.float32) if k.startswith("past_") else v for k, v in override.items()})
    return list(named.items())


def good_value(spec: TensorSpec) -> np.ndarray:
    """A valid batch-of-one value for any input of the generated models."""
    if spec.name == IMAGE_BYTES.name:
        return text(encode(small_image()))
    if spec.dtype == "TYPE_STRING":
        return text(b"The oil level")
    dtype = {"TYPE_FP32": np.float32, "TYPE_INT64": np.int64, "TYPE_INT32": np.int32, "TYPE_UINT8": np.uint8}
    # A KV-cache past starts empty; other variable dims get one element (a 1-token decoder step).
    dims = [0 if d == -1 and spec.name.startswith("past_key_values.") else 1 if d == -1 else d for d in spec.dims]
    return np.zeros((1, *dims), dtype[spec.dtype])


@dataclass(frozen=True)
class Case:
    """One malformed request: where it goes, what it carries, and what the error must name."""

    model: str
    route: str  # http | grpc (tritonclient /infer) | generate | sse (JSON /generate, /generate_stream)
    payload: Inputs | dict  # named tensors for http/grpc, a JSON body for generate/sse
    names: str  # the input the message must name
    detail: str = ""  # more words the message must contain


GOOD_PROMPT = {"text_input": "The oil level"}
CASES: dict[str, Case] = {
    # --- ensemble: the FP32 frame (dtype and shape come from Triton core, pixels from the onnx model) ---
    "ensemble-dtype-uint8-http": Case(
        "ensemble", "http", lambda: [(FRAME.name, np.zeros((1, *FRAME.dims), np.uint8))], FRAME.name, "data-type"
    ),
    "ensemble-rank-3-grpc": Case("ensemble", "grpc", one(FRAME.name, frame(dims=(3, 2160))), FRAME.name, "shape"),
    "ensemble-width-off-by-one-http": Case(
        "ensemble", "http", lambda: [(FRAME.name, frame(dims=(3, 2160, 3839)))], FRAME.name, "shape"
    ),
    "ensemble-nan-pixel-http": Case("ensemble", "http", lambda: [(FRAME.name, frame(pixel=np.nan))], FRAME.name),
    "ensemble-inf-pixel-grpc": Case("ensemble", "grpc", lambda: [(FRAME.name, frame(pixel=np.inf))], FRAME.name),
    "ensemble-pixels-above-255-http": Case("ensemble", "http", lambda: [(FRAME.name, frame(300.0))], FRAME.name),
    "ensemble-no-input-http": Case("ensemble", "http", lambda: [], FRAME.name, "missing"),
    "ensemble-unknown-input-grpc": Case("ensemble", "grpc", one("frame", frame(dims=(1,))), "'frame'"),
    # --- ensemble_jpeg: encoded bytes, decoded server-side ---
    "jpeg-empty-http": Case("ensemble_jpeg", "http", one(IMAGE_BYTES.name, text(b"")), IMAGE_BYTES.name, "0 bytes"),
    "jpeg-not-an-image-grpc": Case(
        "ensemble_jpeg", "grpc", one(IMAGE_BYTES.name, text(BAD["not an image"][0])), IMAGE_BYTES.name, "decodable"
    ),
    "jpeg-truncated-http": Case(
        "ensemble_jpeg", "http", one(IMAGE_BYTES.name, text(BAD["truncated jpeg"][0])), IMAGE_BYTES.name, "corrupt"
    ),
    "jpeg-bomb-12000x12000-http": Case(
        "ensemble_jpeg", "http", one(IMAGE_BYTES.name, text(jpeg_declaring(12000, 12000))), IMAGE_BYTES.name, "pixels"
    ),
    "jpeg-bomb-60000x60000-grpc": Case(
        "ensemble_jpeg", "grpc", one(IMAGE_BYTES.name, text(jpeg_declaring(60000, 60000))), IMAGE_BYTES.name, "bomb"
    ),
    "png-bomb-http": Case(
        "ensemble_jpeg",
        "http",
        one(IMAGE_BYTES.name, text(png_with_size(100_000, 100_000))),
        IMAGE_BYTES.name,
        "above the limit of",
    ),
    "png-zero-size-grpc": Case(
        "ensemble_jpeg", "grpc", one(IMAGE_BYTES.name, text(png_with_size(0, 10))), IMAGE_BYTES.name
    ),
    "png-with-alpha-http": Case(
        "ensemble_jpeg", "http", one(IMAGE_BYTES.name, text(BAD["png with alpha"][0])), IMAGE_BYTES.name, "alpha"
    ),
    "gif-grpc": Case("ensemble_jpeg", "grpc", one(IMAGE_BYTES.name, text(BAD["gif"][0])), IMAGE_BYTES.name, "JPEG"),
    "jpeg-above-32-mib-http": Case(
        "ensemble_jpeg",
        "http",
        lambda: [(IMAGE_BYTES.name, text(b"\xff\xd8" + bytes(32 << 20)))],
        IMAGE_BYTES.name,
        "above the limit",
    ),
    "jpeg-dtype-int32-http": Case(
        "ensemble_jpeg", "http", one(IMAGE_BYTES.name, scalar(1, np.int32)), IMAGE_BYTES.name, "data-type"
    ),
    "jpeg-rank-1-grpc": Case(
        "ensemble_jpeg", "grpc", one(IMAGE_BYTES.name, np.array([b"x"], np.object_)), IMAGE_BYTES.name, "shape"
    ),
    # --- vision step models ---
    "preprocessing-nan-pixel-grpc": Case(
        "preprocessing", "grpc", lambda: [(FRAME.name, frame(pixel=np.nan))], FRAME.name
    ),
    "preprocessing-negative-inf-pixel-http": Case(
        "preprocessing", "http", lambda: [(FRAME.name, frame(pixel=-np.inf))], FRAME.name
    ),
    "preprocessing-dtype-fp16-http": Case(
        "preprocessing", "http", one(FRAME.name, np.zeros((1, 3, 2, 2), np.float16)), FRAME.name, "data-type"
    ),
    "postprocessing-missing-frame-http": Case(
        "postprocessing",
        "http",
        one(DETECTIONS.name, np.zeros((1, *DETECTIONS.dims), np.float32)),
        FRAME.name,
        "missing",
    ),
    "postprocessing-nan-frame-grpc": Case(
        "postprocessing",
        "grpc",
        lambda: [(FRAME.name, frame(np.nan)), (DETECTIONS.name, np.zeros((1, *DETECTIONS.dims), np.float32))],
        FRAME.name,
    ),
    "postprocessing-detections-off-by-one-http": Case(
        "postprocessing",
        "http",
        lambda: [(FRAME.name, frame()), (DETECTIONS.name, np.zeros((1, 300, 5), np.float32))],
        DETECTIONS.name,
        "shape",
    ),
    "yolov8-dtype-fp16-grpc": Case(
        "yolov8", "grpc", one(LETTERBOXED.name, np.zeros((1, *LETTERBOXED.dims), np.float16)), LETTERBOXED.name
    ),
    "yolov8-width-off-by-one-http": Case(
        "yolov8", "http", one(LETTERBOXED.name, np.zeros((1, 3, 640, 641), np.float32)), LETTERBOXED.name, "shape"
    ),
    "efficientnet-nan-crop-http": Case(
        "efficientnet_v2", "http", one(CROP.name, np.full((1, *CROP.dims), np.nan, np.float32)), CROP.name
    ),
    "efficientnet-inf-crop-grpc": Case(
        "efficientnet_v2", "grpc", one(CROP.name, np.full((1, *CROP.dims), np.inf, np.float32)), CROP.name
    ),
    "efficientnet-rank-3-http": Case(
        "efficientnet_v2", "http", one(CROP.name, np.zeros((1, 384, 384), np.float32)), CROP.name, "shape"
    ),
    "efficientnet-unknown-extra-input-grpc": Case(
        "efficientnet_v2",
        "grpc",
        lambda: [(CROP.name, np.zeros((1, *CROP.dims), np.float32)), ("oil", np.zeros((1, 1), np.float32))],
        "'oil'",
    ),
    "image-decoder-truncated-jpeg-grpc": Case(
        "image_decoder", "grpc", one(IMAGE_BYTES.name, text(BAD["truncated jpeg"][0])), IMAGE_BYTES.name, "corrupt"
    ),
    "image-decoder-jpeg-bomb-http": Case(
        "image_decoder", "http", one(IMAGE_BYTES.name, text(jpeg_declaring(12000, 12000))), IMAGE_BYTES.name, "pixels"
    ),
    "image-decoder-dtype-fp32-http": Case(
        "image_decoder", "http", one(IMAGE_BYTES.name, scalar(1.0, np.float32)), IMAGE_BYTES.name, "data-type"
    ),
    # --- gpt2 step models ---
    "tokenizer-invalid-utf8-http": Case(
        "gpt2_tokenizer", "http", one(TEXT_INPUT.name, text(b"\xc3\x28 bad")), TEXT_INPUT.name, "UTF-8"
    ),
    "tokenizer-oversized-text-grpc": Case(
        "gpt2_tokenizer",
        "grpc",
        one(TEXT_INPUT.name, text(b"x" * (DEFAULT_MAX_PROMPT_BYTES + 1))),
        TEXT_INPUT.name,
        "above the limit",
    ),
    "tokenizer-dtype-int64-http": Case(
        "gpt2_tokenizer", "http", one(TEXT_INPUT.name, scalar(7, np.int64)), TEXT_INPUT.name, "data-type"
    ),
    "detokenizer-id-outside-vocab-grpc": Case(
        "gpt2_detokenizer", "grpc", one(INPUT_IDS.name, np.array([[5, 10**9]], np.int64)), INPUT_IDS.name
    ),
    "detokenizer-negative-id-http": Case(
        "gpt2_detokenizer", "http", one(INPUT_IDS.name, np.array([[-1]], np.int64)), INPUT_IDS.name
    ),
    "detokenizer-dtype-fp32-http": Case(
        "gpt2_detokenizer", "http", one(INPUT_IDS.name, np.zeros((1, 3), np.float32)), INPUT_IDS.name, "data-type"
    ),
    "decoder-missing-past-grpc": Case(
        "gpt2_decoder", "grpc", one(INPUT_IDS.name, np.zeros((1, 1), np.int64)), "past_key_values.0.key", "missing"
    ),
    "decoder-dtype-int32-ids-http": Case(
        "gpt2_decoder",
        "http",
        lambda: decoder_inputs(input_ids=np.zeros((1, 1), np.int32)),
        INPUT_IDS.name,
        "data-type",
    ),
    "decoder-past-heads-off-by-one-grpc": Case(
        "gpt2_decoder",
        "grpc",
        lambda: decoder_inputs(**{"past_key_values.1.value": np.zeros((1, 5, 0, 32))}),
        "past_key_values.1.value",
        "shape",
    ),
    # --- gpt2 over /infer and /generate ---
    "gpt2-max-tokens-0-generate": Case("gpt2", "generate", {**GOOD_PROMPT, "max_tokens": 0}, MAX_TOKENS.name),
    "gpt2-max-tokens-negative-grpc": Case(
        "gpt2",
        "grpc",
        lambda: [(TEXT_INPUT.name, text(b"hi")), (MAX_TOKENS.name, scalar(-5, np.int32))],
        MAX_TOKENS.name,
    ),
    "gpt2-max-tokens-dtype-fp32-http": Case(
        "gpt2",
        "http",
        lambda: [(TEXT_INPUT.name, text(b"hi")), (MAX_TOKENS.name, scalar(2.0, np.float32))],
        MAX_TOKENS.name,
        "data-type",
    ),
    "gpt2-invalid-utf8-http": Case(
        "gpt2", "http", one(TEXT_INPUT.name, text(b"ok \xff\xfe")), TEXT_INPUT.name, "UTF-8"
    ),
    "gpt2-50-mb-prompt-http": Case(
        "gpt2", "http", lambda: [(TEXT_INPUT.name, text(b"a" * (50 << 20)))], TEXT_INPUT.name, "above the limit"
    ),
    "gpt2-oversized-prompt-generate": Case(
        "gpt2", "generate", {"text_input": "word " * 20_000}, TEXT_INPUT.name, "above the limit"
    ),
    "gpt2-prompt-beyond-context-generate": Case(
        "gpt2", "generate", {"text_input": "word " * 400, "max_tokens": 8}, TEXT_INPUT.name, "context"
    ),
    "gpt2-17-stop-strings-generate": Case("gpt2", "generate", {**GOOD_PROMPT, "stop": ["x"] * 17}, STOP.name),
    "gpt2-stop-string-too-long-grpc": Case(
        "gpt2", "grpc", lambda: [(TEXT_INPUT.name, text(b"hi")), (STOP.name, text(b"s" * 300))], STOP.name
    ),
    "gpt2-missing-text-http": Case("gpt2", "http", one(MAX_TOKENS.name, scalar(4, np.int32)), TEXT_INPUT.name),
    "gpt2-unknown-input-grpc": Case(
        "gpt2", "grpc", lambda: [(TEXT_INPUT.name, text(b"hi")), ("prompt", text(b"hi"))], "'prompt'"
    ),
    "gpt2-top-p-above-one-generate": Case("gpt2", "generate", {**GOOD_PROMPT, "top_p": 1.5}, "top_p"),
    # --- gpt2_stream over server-sent events (decoupled: no plain /infer) ---
    "stream-max-tokens-0-sse": Case("gpt2_stream", "sse", {**GOOD_PROMPT, "max_tokens": 0}, MAX_TOKENS.name),
    "stream-max-tokens-negative-sse": Case("gpt2_stream", "sse", {**GOOD_PROMPT, "max_tokens": -1}, MAX_TOKENS.name),
    "stream-oversized-prompt-sse": Case(
        "gpt2_stream", "sse", {"text_input": "x" * 100_000}, TEXT_INPUT.name, "above the limit"
    ),
    "stream-17-stop-strings-sse": Case("gpt2_stream", "sse", {**GOOD_PROMPT, "stop": ["x"] * 17}, STOP.name),
    "stream-empty-text-sse": Case("gpt2_stream", "sse", {"text_input": " "}, TEXT_INPUT.name, "empty"),
    "stream-temperature-negative-sse": Case("gpt2_stream", "sse", {**GOOD_PROMPT, "temperature": -1.0}, "temperature"),
}


def api_of(route: str):
    return httpclient if route == "http" else grpcclient


def infer(triton: TritonServer, model: str, route: str, named: list[tuple[str, np.ndarray]], outputs=()):
    """A tritonclient /infer call (binary tensors over HTTP); returns the result or raises."""
    api = api_of(route)
    binary = {"binary_data": True} if route == "http" else {}
    if route == "http":
        client = api.InferenceServerClient(triton.http_url, network_timeout=300)
    else:
        client = api.InferenceServerClient(triton.grpc_url)
    inputs = []
    for name, array in named:
        inp = api.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        inp.set_data_from_numpy(array, **binary)
        inputs.append(inp)
    try:
        return client.infer(model, inputs, outputs=[api.InferRequestedOutput(o, **binary) for o in outputs] or None)
    finally:
        client.close()


def post_json(triton: TritonServer, model: str, route: str, body: dict) -> tuple[int, str]:
    """POST to /generate or /generate_stream; (HTTP status, body)."""
    path = "generate" if route == "generate" else "generate_stream"
    req = urllib.request.Request(
        f"http://{triton.http_url}/v2/models/{model}/{path}", json.dumps(body).encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_server_refuses_request_naming_the_input_when_it_is_malformed(triton: TritonServer, case: Case) -> None:
    if case.route in ("generate", "sse"):
        status, message = post_json(triton, case.model, case.route, case.payload)
        assert status == 400, f"HTTP {status}: {message}"
    else:
        with pytest.raises(InferenceServerException) as info:
            infer(triton, case.model, case.route, case.payload())
        status, message = info.value.status(), info.value.message()
        assert status == INVALID[case.route], f"{status}: {message}"
    assert case.names in message, message
    assert case.detail in message, message


def test_bad_input_matrix_covers_every_entry_point_with_forty_cases() -> None:
    vision = {"ensemble", "ensemble_jpeg", "preprocessing", "yolov8", "postprocessing", "efficientnet_v2"}
    entry_points = vision | {
        "image_decoder",
        "gpt2",
        "gpt2_stream",
        "gpt2_tokenizer",
        "gpt2_detokenizer",
        "gpt2_decoder",
    }
    assert {c.model for c in CASES.values()} == entry_points
    assert len(CASES) >= 40
    assert Image.open(io.BytesIO(jpeg_declaring(12000, 12000))).size == (12000, 12000)  # the bomb really claims it


def test_gpt2_refuses_50_mb_prompt_quickly_when_it_is_above_the_limit(triton: TritonServer) -> None:
    """Refused on its length, before decoding or tokenizing: about the cost of moving the bytes."""
    prompt = text(b"a" * (50 << 20))
    began = time.monotonic()
    with pytest.raises(InferenceServerException, match="above the limit"):
        infer(triton, "gpt2", "grpc", [(TEXT_INPUT.name, prompt)])
    assert time.monotonic() - began < 15, "a 50 MB prompt should be refused without being tokenized"


STREAM_CASES = {
    "invalid-utf8": ([(TEXT_INPUT.name, text(b"\xff bad"))], TEXT_INPUT.name),
    "max-tokens-0": ([(TEXT_INPUT.name, text(b"hi")), (MAX_TOKENS.name, scalar(0, np.int32))], MAX_TOKENS.name),
    "17-stop-strings": ([(TEXT_INPUT.name, text(b"hi")), (STOP.name, text(*[b"x"] * 17))], STOP.name),
    "max-tokens-dtype-fp32": ([(TEXT_INPUT.name, text(b"hi")), (MAX_TOKENS.name, scalar(1.0, np.float32))],
                              MAX_TOKENS.name),
}  # fmt: skip


@pytest.mark.parametrize("named,names", list(STREAM_CASES.values()), ids=list(STREAM_CASES))
def test_gpt2_stream_names_the_input_when_grpc_stream_request_is_bad(triton: TritonServer, named, names) -> None:
    """A gRPC stream carries a per-request error as a message only (Triton sends no status code), so the
    message is what tells the client: it must name the input."""
    events: queue.Queue = queue.Queue()
    grpc = grpcclient.InferenceServerClient(triton.grpc_url)
    grpc.start_stream(callback=lambda result=None, error=None: events.put(error))
    inputs = []
    for name, array in named:
        inputs.append(grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype)))
        inputs[-1].set_data_from_numpy(array)
    try:
        grpc.async_stream_infer("gpt2_stream", inputs)
        error = events.get(timeout=60)
    finally:
        grpc.stop_stream()
        grpc.close()
    assert isinstance(error, InferenceServerException) and names in error.message(), error


@pytest.mark.xfail(strict=True, reason="Triton 2.51 /generate answers 500 'Unable to parse ...' for a JSON type error")
def test_generate_names_the_input_when_a_json_value_has_the_wrong_type(triton: TritonServer) -> None:
    status, message = post_json(triton, "gpt2", "generate", {**GOOD_PROMPT, "max_tokens": "ten"})
    assert status == 400 and MAX_TOKENS.name in message, f"HTTP {status}: {message}"


# --- after the matrix: nothing crashed, everything still serves ---


def good_request(triton: TritonServer, spec) -> None:
    if isinstance(spec, PythonModel) and spec.decoupled:
        status, body = post_json(triton, spec.name, "sse", {"text_input": "The oil level", "max_tokens": 2})
        assert status == 200 and '"finish_reason":"length"' in body, body
        return
    required = [t for t in spec.inputs if not (isinstance(spec, PythonModel) and t.name in spec.optional_inputs)]
    outputs = [t.name for t in spec.outputs]
    result = infer(triton, spec.name, "http", [(t.name, good_value(t)) for t in required], outputs)
    for out in spec.outputs:
        assert result.as_numpy(out.name) is not None, f"{spec.name}: no {out.name}"


def test_every_model_still_answers_a_good_request_when_the_matrix_has_run(triton: TritonServer) -> None:
    specs = catalog.all_specs("cpu")
    assert any(isinstance(s, Ensemble) for s in specs)
    for spec in specs:
        good_request(triton, spec)
    with urllib.request.urlopen(f"http://{triton.http_url}/v2/health/ready", timeout=5) as r:
        assert r.status == 200


# --- a bad request inside a dynamic batch fails alone ---


def _stats(http: httpclient.InferenceServerClient, model: str) -> tuple[int, int]:
    s = http.get_inference_statistics(model)["model_stats"][0]
    return int(s["inference_count"]), int(s["execution_count"])


@pytest.mark.parametrize(
    "model,name,good,bad",
    [
        ("image_decoder", IMAGE_BYTES.name, text(encode(small_image())), text(BAD["truncated jpeg"][0])),
        ("efficientnet_v2", CROP.name, np.full((1, *CROP.dims), 0.5, np.float32),
         np.full((1, *CROP.dims), np.nan, np.float32)),
    ],
    ids=["image_decoder-truncated-jpeg", "efficientnet_v2-nan-crop"],
)  # fmt: skip
def test_step_model_serves_the_good_requests_when_a_bad_one_shares_their_batch(triton, model, name, good, bad) -> None:
    http = httpclient.InferenceServerClient(triton.http_url)
    payloads = [good, bad, good, good]

    def call(array: np.ndarray):
        try:
            return infer(triton, model, "http", [(name, array)])
        except InferenceServerException as exc:
            return exc

    for _ in range(5):  # sharing a batch depends on arrival timing; a few rounds make it certain
        before = _stats(http, model)
        with ThreadPoolExecutor(len(payloads)) as pool:
            results = list(pool.map(call, payloads))
        after = _stats(http, model)
        refused = results[1]
        assert isinstance(refused, InferenceServerException) and refused.status() == "400"
        assert name in refused.message()
        assert not any(isinstance(r, Exception) for r in results[:1] + results[2:]), results
        if after[1] - before[1] < after[0] - before[0]:
            break
    else:
        pytest.fail(f"{model}: the bad and the good requests never shared a dynamic batch")
    assert http.is_server_ready()
