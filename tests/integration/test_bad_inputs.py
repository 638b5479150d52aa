"""The bad-input matrix (tests/helpers/bad_inputs.py) against a real tritonserver.

Every case must come back as the client's fault (HTTP 400, gRPC INVALID_ARGUMENT) with a message naming the input.
After the whole matrix every model still answers a good request and the server is ready.

No test relies on another having run: the matrix is sent once by the module fixture `matrix_outcomes`, and every
test that looks at its outcome or its aftermath asks for that fixture.
"""

from __future__ import annotations

import json
import queue
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from builders import catalog
from builders.triton_config import Ensemble, PythonModel
from serving.launcher import TritonServer
from tests.helpers.bad_inputs import CASES, GOOD_PROMPT, STREAM_CASES, Case, good_value, text
from tests.helpers.images import BAD, encode, small_image
from tritonyard_contract import CROP, IMAGE_BYTES, MAX_TOKENS, TEXT_INPUT

pytestmark = pytest.mark.integration

INVALID = {"http": "400", "grpc": "StatusCode.INVALID_ARGUMENT"}


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


def send(triton: TritonServer, case: Case) -> tuple[str, str]:
    """Send one case; (status, message) of the refusal, or ("served", ...) when the server accepted it."""
    if case.route in ("generate", "sse"):
        status, message = post_json(triton, case.model, case.route, case.payload)
        return str(status), message
    try:
        infer(triton, case.model, case.route, case.payload())
    except InferenceServerException as exc:
        return str(exc.status()), exc.message()
    return "served", f"{case.model} answered the malformed request"


@pytest.fixture(scope="module")
def matrix_outcomes(triton: TritonServer) -> dict[str, tuple[str, str]]:
    """Every case sent once, in order: case id -> (status, message)."""
    return {name: send(triton, case) for name, case in CASES.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_server_refuses_request_naming_the_input_when_it_is_malformed(
    matrix_outcomes: dict[str, tuple[str, str]], name: str
) -> None:
    case = CASES[name]
    status, message = matrix_outcomes[name]
    expected = "400" if case.route in ("generate", "sse") else INVALID[case.route]
    assert status == expected, f"{status}: {message}"
    assert case.names in message, message
    assert case.detail in message, message


def test_gpt2_refuses_50_mb_prompt_quickly_when_it_is_above_the_limit(triton: TritonServer) -> None:
    """Refused on its length, before decoding or tokenizing: about the cost of moving the bytes."""
    prompt = text(b"a" * (50 << 20))
    began = time.monotonic()
    with pytest.raises(InferenceServerException, match="above the limit"):
        infer(triton, "gpt2", "grpc", [(TEXT_INPUT.name, prompt)])
    assert time.monotonic() - began < 15, "a 50 MB prompt should be refused without being tokenized"


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


def test_every_model_still_answers_a_good_request_when_the_matrix_has_run(
    triton: TritonServer, matrix_outcomes: dict[str, tuple[str, str]]
) -> None:
    assert matrix_outcomes.keys() == CASES.keys()  # the whole matrix was sent before the good requests
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
        (
            "efficientnet_v2",
            CROP.name,
            np.full((1, *CROP.dims), 0.5, np.float32),
            np.full((1, *CROP.dims), np.nan, np.float32),
        ),
    ],
    ids=["image_decoder-truncated-jpeg", "efficientnet_v2-nan-crop"],
)
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
