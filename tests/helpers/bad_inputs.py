"""The bad-input matrix: a malformed request for every entry point and step model, and what its error must name.

Each case is sent by tests/integration/test_bad_inputs.py; tests/unit/test_bad_input_matrix.py checks its coverage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from builders import catalog
from tests.helpers.images import BAD, encode, jpeg_declaring, png_with_size, small_image
from tritonyard_contract import (
    CROP,
    DETECTIONS,
    FRAME,
    IMAGE_BYTES,
    LETTERBOXED,
    MAX_TOKENS,
    STOP,
    TEXT_INPUT,
    TensorSpec,
)

DEFAULT_MAX_PROMPT_BYTES = 32 * 1024  # Gpt2Config's default, which the session repository is built with
Inputs = Callable[[], list[tuple[str, np.ndarray]]]  # built when the case runs: some frames are 99.5 MB


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
    # --- TensorRT-LLM's inputs that make no sense here, on both entries (gpt2 refuses through gpt2_stream) ---
    "gpt2-stream-true-generate": Case("gpt2", "generate", {**GOOD_PROMPT, "stream": True}, "stream", "answers once"),
    "gpt2-stream-dtype-int32-grpc": Case(
        "gpt2", "grpc", lambda: [(TEXT_INPUT.name, text(b"hi")), ("stream", scalar(1, np.int32))], "stream", "data-type"
    ),
    "gpt2-beam-width-2-grpc": Case(
        "gpt2", "grpc", lambda: [(TEXT_INPUT.name, text(b"hi")), ("beam_width", scalar(2, np.int32))], "beam_width"
    ),
    "gpt2-return-log-probs-http": Case(
        "gpt2",
        "http",
        lambda: [(TEXT_INPUT.name, text(b"hi")), ("return_log_probs", scalar(True, np.bool_))],
        "return_log_probs",
    ),
    "gpt2-bad-words-generate": Case("gpt2", "generate", {**GOOD_PROMPT, "bad_words": ["thee"]}, "bad_words"),
    "gpt2-min-tokens-above-max-generate": Case(
        "gpt2", "generate", {**GOOD_PROMPT, "max_tokens": 4, "min_tokens": 9}, "min_tokens"
    ),
    "stream-beam-width-2-sse": Case("gpt2_stream", "sse", {**GOOD_PROMPT, "beam_width": 2}, "beam_width"),
    "stream-end-id-outside-vocab-sse": Case("gpt2_stream", "sse", {**GOOD_PROMPT, "end_id": 10**6}, "end_id"),
    "stream-seed-differs-from-random-seed-sse": Case(
        "gpt2_stream", "sse", {**GOOD_PROMPT, "seed": 1, "random_seed": 2}, "seed", "random_seed"
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


STREAM_CASES = {
    "invalid-utf8": ([(TEXT_INPUT.name, text(b"\xff bad"))], TEXT_INPUT.name),
    "max-tokens-0": ([(TEXT_INPUT.name, text(b"hi")), (MAX_TOKENS.name, scalar(0, np.int32))], MAX_TOKENS.name),
    "17-stop-strings": ([(TEXT_INPUT.name, text(b"hi")), (STOP.name, text(*[b"x"] * 17))], STOP.name),
    "max-tokens-dtype-fp32": (
        [(TEXT_INPUT.name, text(b"hi")), (MAX_TOKENS.name, scalar(1.0, np.float32))],
        MAX_TOKENS.name,
    ),
}
