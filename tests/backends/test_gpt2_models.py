"""gpt2, gpt2_stream and gpt2_tokenizer from their built version folders, through the stubbed pb_utils.

The gpu target's generation loop calls gpt2_decoder through BLS once per step; here those BLS requests are answered
by onnxruntime running the built gpt2_decoder/1/model.onnx, after the checks Triton makes against its config. Its
greedy text must equal the cpu target's, which runs the same decoder in-process.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from builders import gpt2
from tests.backends.pb_utils_stub import (
    TRITONSERVER_MEMORY_CPU,
    TRITONSERVER_RESPONSE_COMPLETE_FINAL,
    InferenceRequest,
    InferenceResponse,
    Request,
    TritonError,
    bls_model,
    get_input_tensor_by_name,
    load_model,
    loaded,
    onnx_model,
    output,
)

FINAL = TRITONSERVER_RESPONSE_COMPLETE_FINAL
PROMPTS = ["def main():", "The oil level in the", "import os\nclass Reader:"]
NEW_TOKENS = 12


def text(value: bytes) -> np.ndarray:
    return np.array([[value]], dtype=np.object_)


def ask(prompt: str, max_tokens: int = NEW_TOKENS, **more: np.ndarray) -> Request:
    """A greedy request (no temperature: 0 is the default)."""
    return Request(text_input=text(prompt.encode()), max_tokens=np.array([[max_tokens]], np.int32), **more)


def only(request: Request) -> tuple[InferenceResponse, int]:
    """The request's one send, (response, flags), once the final flag came."""
    request.sender.responses()
    [(response, flags)] = request.sender.sent
    return response, flags


def answer(request: Request) -> dict[str, object]:
    """A non-decoupled answer: exactly one response, sent with the final flag; its outputs as plain values."""
    response, flags = only(request)
    assert flags == FINAL and not response.has_error(), response.error() and response.error().message()
    values = {n: output(response, n).reshape(-1)[0] for n in ("text_output", "finish_reason")}
    values |= {n: int(output(response, n).reshape(-1)[0]) for n in ("prompt_tokens", "completion_tokens")}
    return values


def generate(model, *requests: Request) -> list[dict[str, object]]:
    """Hand the requests to execute() together (they share the engine's batch) and collect the answers."""
    assert model.execute(list(requests)) is None  # answered through the response senders
    return [answer(r) for r in requests]


@pytest.fixture()
def decoder_bls(gpt2_gpu_repo: Path) -> Iterator[list[InferenceRequest]]:
    """BLS requests to gpt2_decoder answered by its built model.onnx; yields the requests received."""
    with bls_model("gpt2_decoder", onnx_model(gpt2_gpu_repo / "gpt2_decoder")) as calls:
        yield calls


@pytest.fixture(scope="module")
def in_process(gpt2_cpu_repo: Path) -> Iterator:
    """The cpu target's gpt2: the reference, with the decoder session in-process."""
    with loaded(gpt2_cpu_repo / "gpt2") as model:
        assert model.params.decoder_mode == "in_process"
        yield model


def test_gpt2_bls_path_equals_in_process_path_when_decoding_greedily(gpt2_gpu_repo, decoder_bls, in_process) -> None:
    with loaded(gpt2_gpu_repo / "gpt2") as bls:
        assert bls.params.decoder_mode == "bls"
        for prompt in PROMPTS:
            [got] = generate(bls, ask(prompt))
            [want] = generate(in_process, ask(prompt))
            assert got == want, prompt
            assert got["completion_tokens"] > 0 and got["finish_reason"] in (b"length", b"stop")
    # One BLS request per decoder step (a prefill, then one per new token after the first), each asking for
    # the logits and the whole cache, in host memory.
    assert len(decoder_bls) >= len(PROMPTS) * 2
    n_layer = bls.params.n_layer
    for call in decoder_bls:
        assert call.requested_output_names == ["logits"] + [
            f"present.{i}.{kv}" for i in range(n_layer) for kv in ("key", "value")
        ]
        assert call.preferred_memory.preferred_memory_type == TRITONSERVER_MEMORY_CPU


def test_gpt2_bls_path_equals_in_process_path_when_prompts_share_the_batch(
    gpt2_gpu_repo, decoder_bls, in_process
) -> None:
    with loaded(gpt2_gpu_repo / "gpt2") as bls:
        together = generate(bls, *(ask(p) for p in PROMPTS))
    alone = [generate(in_process, ask(p))[0] for p in PROMPTS]
    assert together == alone
    batches = [get_input_tensor_by_name(c, "input_ids").as_numpy().shape[0] for c in decoder_bls]
    assert max(batches) == len(PROMPTS)  # all three in one BLS call, left-padded to one cache length


@pytest.mark.parametrize("failing_call", [1, 3], ids=["prefill", "step"])
def test_gpt2_fails_each_request_with_the_decoder_error_when_a_bls_call_fails(gpt2_gpu_repo, failing_call) -> None:
    decoder, calls = onnx_model(gpt2_gpu_repo / "gpt2_decoder"), []

    def breaks(request: InferenceRequest) -> InferenceResponse:
        calls.append(request)
        if len(calls) >= failing_call:
            return InferenceResponse(error=TritonError("decoder fell over", TritonError.INTERNAL))
        return decoder(request)

    with bls_model("gpt2_decoder", breaks), loaded(gpt2_gpu_repo / "gpt2") as bls:
        requests = [ask(p) for p in PROMPTS[:2]]
        bls.execute(requests)
        for request in requests:
            response, flags = only(request)
            assert flags == FINAL and response.error().code() == TritonError.INTERNAL
            assert "decoder fell over" in response.error().message()


# --- gpt2_stream: the decoupled model's responses and flags ---


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_gpt2_stream_sends_pieces_then_one_final_response_when_generating(
    target, gpt2_cpu_repo, gpt2_gpu_repo, decoder_bls, in_process
) -> None:
    repo = {"cpu": gpt2_cpu_repo, "gpu": gpt2_gpu_repo}[target]
    [want] = generate(in_process, ask(PROMPTS[0]))
    with loaded(repo / "gpt2_stream") as stream:
        assert stream.streaming
        request = ask(PROMPTS[0])
        assert stream.execute([request]) is None
        responses = request.sender.responses()
    flags = [f for _, f in request.sender.sent]
    assert flags[-1] == FINAL and set(flags[:-1]) <= {0} and len(flags) > 2  # pieces, then one final response
    assert all(r is not None and not r.has_error() for r, _ in request.sender.sent)
    reasons = [output(r, "finish_reason").reshape(-1)[0] for r in responses]
    assert reasons[-1] == want["finish_reason"] and set(reasons[:-1]) == {b""}
    pieces = b"".join(output(r, "text_output").reshape(-1)[0] for r in responses)
    assert pieces == want["text_output"]
    assert int(output(responses[-1], "completion_tokens").reshape(-1)[0]) == want["completion_tokens"]


def test_gpt2_stream_sends_one_final_error_when_the_request_is_bad(gpt2_cpu_repo) -> None:
    with loaded(gpt2_cpu_repo / "gpt2_stream") as stream:
        request = ask(PROMPTS[0], max_tokens=0)
        stream.execute([request])
        response, flags = only(request)
    assert flags == FINAL and response.error().code() == TritonError.INVALID_ARG
    assert "max_tokens" in response.error().message()


class Gate:
    """A BLS handler that holds the decoder after `after` calls until released."""

    def __init__(self, handler, after: int) -> None:
        self.handler, self.after, self.calls = handler, after, 0
        self.holding, self.release = threading.Event(), threading.Event()

    def __call__(self, request: InferenceRequest) -> InferenceResponse:
        self.calls += 1
        if self.calls > self.after:
            self.holding.set()
            assert self.release.wait(30), "the test never released the decoder"
        return self.handler(request)


def test_gpt2_stream_ends_with_one_cancelled_error_when_the_client_cancels_mid_stream(gpt2_gpu_repo) -> None:
    gate = Gate(onnx_model(gpt2_gpu_repo / "gpt2_decoder"), after=3)  # a prefill and two steps run, then it waits
    with bls_model("gpt2_decoder", gate), loaded(gpt2_gpu_repo / "gpt2_stream") as stream:
        request = ask(PROMPTS[0], max_tokens=50)
        stream.execute([request])
        assert gate.holding.wait(30)
        request.cancel()
        gate.release.set()
        request.sender.responses()
    *pieces, (last, flags) = request.sender.sent
    assert pieces and all(f == 0 and not r.has_error() for r, f in pieces)  # the pieces before the cancel
    assert flags == FINAL and last.error().code() == TritonError.CANCELLED
    assert "cancelled after 3 tokens" in last.error().message()  # the fourth step's logits are dropped


# --- input limits of gpt2 and gpt2_tokenizer ---


class NoTokenizer:
    def encode(self, text: str):
        raise AssertionError("an oversized prompt must be refused before tokenizing")


def test_tokenizer_refuses_prompt_when_it_is_above_max_prompt_bytes(gpt2_cpu_repo) -> None:
    model = load_model(gpt2_cpu_repo / "gpt2_tokenizer", parameters={"max_prompt_bytes": "64"})
    ok, big, bad = model.execute(
        [Request(text_input=text(b"x" * 64)), Request(text_input=text(b"x" * 65)), Request(text_input=text(b"\xff"))]
    )
    assert not ok.has_error() and output(ok, "input_ids").shape[0] == 1
    assert big.error().code() == TritonError.INVALID_ARG
    assert big.error().message() == "text_input: 65 bytes, above the limit of 64"
    assert bad.error().message() == "text_input: is not valid UTF-8"


def test_tokenizer_refuses_to_start_when_max_prompt_bytes_is_not_positive(gpt2_cpu_repo) -> None:
    with pytest.raises(ValueError, match="max_prompt_bytes"):
        load_model(gpt2_cpu_repo / "gpt2_tokenizer", parameters={"max_prompt_bytes": "0"})


def test_generate_params_read_limits_when_config_has_them_or_not(gpt2_cpu_repo) -> None:
    built = gpt2.Gpt2Config()
    with loaded(gpt2_cpu_repo / "gpt2") as model:
        assert (model.params.max_pending, model.params.max_prompt_bytes) == (built.max_pending, built.max_prompt_bytes)
    with loaded(gpt2_cpu_repo / "gpt2", {"max_pending": "3", "max_prompt_bytes": "9"}) as model:
        assert (model.params.max_pending, model.params.max_prompt_bytes, model.params.max_slots) == (3, 9, 8)
    with loaded(gpt2_cpu_repo / "gpt2", {"max_pending": None, "max_prompt_bytes": None}) as model:  # an older config
        assert (model.params.max_pending, model.params.max_prompt_bytes) == (32, 32 * 1024)
    with pytest.raises(ValueError, match="max_pending"):
        load_model(gpt2_cpu_repo / "gpt2", parameters={"max_pending": "0"})


def test_generate_refuses_prompt_before_tokenizing_when_it_is_above_max_prompt_bytes(gpt2_cpu_repo) -> None:
    with loaded(gpt2_cpu_repo / "gpt2", {"max_prompt_bytes": "100"}) as model:
        model.tokenizer = NoTokenizer()
        huge, missing = Request(text_input=text(b"a" * 5_000_000)), Request(max_tokens=np.array([[4]], np.int32))
        model.execute([huge, missing])
    response, flags = only(huge)
    error = response.error()
    assert flags == FINAL and error.code() == TritonError.INVALID_ARG
    assert error.message() == "text_input: 5000000 bytes, above the limit of 100"
    assert only(missing)[0].error().message() == "text_input: is required"


def test_generate_answers_unavailable_when_the_engine_backlog_is_full(gpt2_gpu_repo) -> None:
    gate = Gate(onnx_model(gpt2_gpu_repo / "gpt2_decoder"), after=0)  # the first prefill holds the engine
    with bls_model("gpt2_decoder", gate), loaded(gpt2_gpu_repo / "gpt2", {"max_pending": "4"}) as model:
        first = ask(PROMPTS[0], max_tokens=2)
        model.execute([first])
        assert gate.holding.wait(30)
        waiting = [ask(PROMPTS[1], max_tokens=2) for _ in range(5)]
        model.execute(waiting)  # 4 wait for a slot; the fifth finds the backlog full
        gate.release.set()
        finished = [answer(r) for r in [first, *waiting[:4]]]
    assert all(f["completion_tokens"] > 0 for f in finished)
    response, flags = only(waiting[4])
    error = response.error()
    assert flags == FINAL and error.code() == TritonError.UNAVAILABLE
    assert error.message() == "gpt2: overloaded, 4 requests already wait for a generation slot; retry later"
