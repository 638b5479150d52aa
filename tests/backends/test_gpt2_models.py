"""gpt2_stream (the generation model) and gpt2 (the unary entry forwarding to it) from their built version folders,
through the stubbed pb_utils.

gpt2_stream runs the decoder in its own version folder with IO binding; its cache arrays are numpy on the cpu target
and torch tensors on the gpu target (on the GPU there). Here the gpu target's code runs with torch CPU tensors and
the CPU execution provider, and must give the cpu target's greedy text. gpt2's BLS requests are answered by a loaded
gpt2_stream, as Triton would route them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from builders import gpt2
from tests.backends.pb_utils_stub import (
    TRITONSERVER_RESPONSE_COMPLETE_FINAL,
    InferenceResponse,
    Request,
    TritonError,
    bls_model,
    decoupled_model,
    get_input_tensor_by_name,
    load_model,
    loaded,
    output,
)
from tritonyard_contract.protocol import untag_error_code

FINAL = TRITONSERVER_RESPONSE_COMPLETE_FINAL
PROMPTS = ["Now is the winter of our", "HAMLET\nTo be or not", "My lord, I"]
NEW_TOKENS = 12
COUNTS = ("num_input_tokens", "num_output_tokens", "prompt_tokens", "completion_tokens")


def text(value: bytes) -> np.ndarray:
    return np.array([[value]], dtype=np.object_)


def flag(value: bool) -> np.ndarray:
    return np.array([[value]], np.bool_)


def ask(prompt: str, max_tokens: int = NEW_TOKENS, **more: np.ndarray) -> Request:
    """A greedy request (no temperature: 0 is the default)."""
    return Request(text_input=text(prompt.encode()), max_tokens=np.array([[max_tokens]], np.int32), **more)


def whole(prompt: str, max_tokens: int = NEW_TOKENS, **more: np.ndarray) -> Request:
    """A request for one whole answer (stream false)."""
    return ask(prompt, max_tokens, stream=flag(False), **more)


def only(request: Request) -> tuple[InferenceResponse, int]:
    """The request's one send, (response, flags), once the final flag came."""
    request.sender.responses()
    [(response, flags)] = request.sender.sent
    return response, flags


def answer(request: Request) -> dict[str, object]:
    """A whole answer: exactly one response, sent with the final flag; its outputs as plain values."""
    response, flags = only(request)
    assert flags == FINAL and not response.has_error(), response.error() and response.error().message()
    values = {n: output(response, n).reshape(-1)[0] for n in ("text_output", "finish_reason")}
    return values | {n: int(output(response, n).reshape(-1)[0]) for n in COUNTS}


def generate(model, *requests: Request) -> list[dict[str, object]]:
    """Hand the requests to execute() together (they share the engine's batch) and collect the answers."""
    assert model.execute(list(requests)) is None  # answered through the response senders
    return [answer(r) for r in requests]


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Whether `condition()` came true within `timeout_s` (flags that the models' threads set)."""
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)
    return condition()


def error_of(request: Request) -> TritonError:
    response, flags = only(request)
    assert flags == FINAL and response.has_error()
    return response.error()


@pytest.fixture(scope="module")
def stream(gpt2_cpu_repo: Path) -> Iterator:
    """The cpu target's gpt2_stream: numpy cache arrays, the reference."""
    with loaded(gpt2_cpu_repo / "gpt2_stream") as model:
        assert model.params.cache_arrays == "numpy" and model.params.execution_provider == "cpu"
        yield model


# --- the gpu target's code (torch cache arrays, IO binding) on the CPU provider ---


def test_gpt2_stream_torch_cache_equals_numpy_cache_when_prompts_share_the_batch(gpt2_gpu_repo, stream) -> None:
    alone = [generate(stream, whole(p))[0] for p in PROMPTS]
    with loaded(gpt2_gpu_repo / "gpt2_stream", {"execution_provider": "cpu"}) as gpu_code:
        assert gpu_code.params.cache_arrays == "torch"
        import torch

        assert all(isinstance(p, torch.Tensor) for p in gpu_code.engine.decoder.empty_cache(1))
        together = generate(gpu_code, *(whole(p) for p in PROMPTS))
    assert together == alone
    assert all(a["num_output_tokens"] > 0 and a["finish_reason"] in (b"length", b"stop") for a in alone)


def test_gpt2_stream_refuses_to_start_when_cuda_is_asked_with_host_cache_arrays(gpt2_cpu_repo) -> None:
    with pytest.raises(ValueError, match="cache_arrays must be torch"):
        load_model(gpt2_cpu_repo / "gpt2_stream", {"execution_provider": "cuda"})


# --- gpt2_stream: responses and flags ---


def test_gpt2_stream_sends_pieces_then_one_final_response_when_streaming(stream) -> None:
    [want] = generate(stream, whole(PROMPTS[0]))
    request = ask(PROMPTS[0])  # stream defaults to true here
    assert stream.execute([request]) is None
    responses = request.sender.responses()
    flags = [f for _, f in request.sender.sent]
    assert flags[-1] == FINAL and set(flags[:-1]) <= {0} and len(flags) > 2  # pieces, then one final response
    reasons = [output(r, "finish_reason").reshape(-1)[0] for r in responses]
    assert reasons[-1] == want["finish_reason"] and set(reasons[:-1]) == {b""}
    assert b"".join(output(r, "text_output").reshape(-1)[0] for r in responses) == want["text_output"]
    last = responses[-1]
    assert int(output(last, "num_output_tokens").reshape(-1)[0]) == want["num_output_tokens"]


def test_gpt2_stream_prepends_the_prompt_when_exclude_input_in_output_is_false(stream) -> None:
    [plain, with_input] = generate(stream, whole(PROMPTS[1]), whole(PROMPTS[1], exclude_input_in_output=flag(False)))
    assert with_input["text_output"] == PROMPTS[1].encode() + plain["text_output"]
    assert with_input["num_output_tokens"] == plain["num_output_tokens"]


def test_gpt2_stream_accepts_genai_perf_inputs_when_they_come_together(stream) -> None:
    """What genai-perf 0.0.16 sends (--backend tensorrtllm --streaming, fixed output length, --extra-inputs
    ignore_eos:true): text_input, max_tokens, exclude_input_in_output, stream, min_length and ignore_eos."""
    n = 40
    request = ask(
        PROMPTS[2],
        n,
        exclude_input_in_output=flag(True),
        stream=flag(True),
        min_length=np.array([[n]], np.int32),
        ignore_eos=flag(True),
    )
    stream.execute([request])
    responses = request.sender.responses()
    assert all(not r.has_error() for r in responses)
    assert int(output(responses[-1], "num_output_tokens").reshape(-1)[0]) == n
    assert int(output(responses[-1], "num_input_tokens").reshape(-1)[0]) > 0


def test_gpt2_stream_keeps_generating_until_min_tokens_when_end_id_comes_first(stream) -> None:
    first = stream.tokenizer.encode(generate(stream, whole(PROMPTS[0], 1))[0]["text_output"].decode()).ids[0]
    end = np.array([[first]], np.int32)
    [stopped, held] = generate(
        stream, whole(PROMPTS[0], end_id=end), whole(PROMPTS[0], end_id=end, min_tokens=np.array([[3]], np.int32))
    )
    assert (stopped["num_output_tokens"], stopped["finish_reason"]) == (0, b"stop")
    assert held["num_output_tokens"] >= 3


BAD = [
    ("max_tokens", {"max_tokens": np.array([[0]], np.int32)}, "max_tokens: must be between 1 and"),
    ("beam_width", {"beam_width": np.array([[2]], np.int32)}, "beam_width: only 1 is supported, got 2"),
    ("num_return_sequences", {"num_return_sequences": np.array([[3]], np.int32)}, "num_return_sequences: only 1"),
    ("return_log_probs", {"return_log_probs": flag(True)}, "return_log_probs: only False is supported"),
    ("repetition_penalty", {"repetition_penalty": np.array([[1.3]], np.float32)}, "repetition_penalty: only 1.0"),
    ("bad_words", {"bad_words": np.array([[b"thee"]], np.object_)}, "bad_words: not supported"),
    ("min_tokens", {"min_tokens": np.array([[99]], np.int32)}, "min_tokens: must be between 0 and max_tokens"),
    ("end_id", {"end_id": np.array([[10**6]], np.int32)}, "end_id: must be a token id"),
    (
        "seed",
        {"seed": np.array([[1]], np.uint64), "random_seed": np.array([[2]], np.uint64)},
        "seed: random_seed is the same setting",
    ),
    ("stop_words", {"stop_words": np.array([[b"x" * 300]], np.object_)}, "stop_words: each stop string"),
]


@pytest.mark.parametrize("inputs,needle", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_gpt2_stream_refuses_only_the_bad_request_when_an_input_is_invalid(stream, inputs, needle) -> None:
    bad, good = (
        ask(PROMPTS[0], **inputs)
        if "max_tokens" not in inputs
        else Request(text_input=text(PROMPTS[0].encode()), **inputs),
        whole(PROMPTS[1], 3),
    )
    stream.execute([bad, good])
    error = error_of(bad)
    assert error.code() == TritonError.INVALID_ARG and needle in error.message(), error.message()
    assert answer(good)["num_output_tokens"] > 0


def test_gpt2_stream_accepts_inputs_when_they_are_set_to_their_no_op_values(stream) -> None:
    [want] = generate(stream, whole(PROMPTS[0]))
    no_op = {
        "beam_width": np.array([[1]], np.int32),
        "num_return_sequences": np.array([[1]], np.int32),
        "length_penalty": np.array([[1.0]], np.float32),
        "presence_penalty": np.array([[0.0]], np.float32),
        "return_log_probs": flag(False),
        "return_num_input_tokens": flag(True),
        "return_num_output_tokens": flag(True),
        "pad_id": np.array([[0]], np.int32),
        "bad_words": np.zeros((1, 0), np.object_),
        "random_seed": np.array([[7]], np.uint64),
    }
    assert generate(stream, whole(PROMPTS[0], **no_op)) == [want]


# --- cancellation and the backlog bound (the decoder held mid-generation) ---


class Gate:
    """Wraps a model's decoder: after `after` runs it holds until released."""

    def __init__(self, model, after: int) -> None:
        self.decoder, self.after, self.calls = model.engine.decoder, after, 0
        self.holding, self.release = threading.Event(), threading.Event()
        self.inner, self.decoder.run = self.decoder.run, self.run

    def run(self, *args):
        self.calls += 1
        if self.calls > self.after:
            self.holding.set()
            assert self.release.wait(30), "the test never released the decoder"
        return self.inner(*args)


def test_gpt2_stream_ends_with_one_cancelled_error_when_the_client_cancels_mid_stream(gpt2_cpu_repo) -> None:
    with loaded(gpt2_cpu_repo / "gpt2_stream") as model:
        gate = Gate(model, after=3)  # a prefill and two steps run, then it waits
        request = ask(PROMPTS[0], max_tokens=50, min_tokens=np.array([[50]], np.int32))
        model.execute([request])
        assert gate.holding.wait(30)
        request.cancel()
        [seq] = model.engine.batch.seqs
        assert wait_until(seq.sink.is_cancelled), "the cancel watch never polled the request"
        gate.release.set()
        request.sender.responses()
    *pieces, (last, flags) = request.sender.sent
    assert pieces and all(f == 0 and not r.has_error() for r, f in pieces)  # the pieces before the cancel
    assert flags == FINAL and last.error().code() == TritonError.CANCELLED
    assert "cancelled after 3 tokens" in last.error().message()  # the fourth step's logits are dropped


def test_gpt2_stream_answers_unavailable_naming_the_entry_when_the_backlog_is_full(gpt2_cpu_repo) -> None:
    with loaded(gpt2_cpu_repo / "gpt2_stream", {"max_pending": "4"}) as model:
        gate = Gate(model, after=0)  # the first prefill holds the engine
        first = whole(PROMPTS[0], 2)
        model.execute([first])
        assert gate.holding.wait(30)
        waiting = [whole(PROMPTS[1], 2) for _ in range(5)]
        waiting[4]._parameters = '{"entry_model": "gpt2"}'  # came through gpt2's BLS
        model.execute(waiting)  # 4 wait for a slot; the fifth finds the backlog full
        gate.release.set()
        finished = [answer(r) for r in [first, *waiting[:4]]]
    assert all(f["num_output_tokens"] > 0 for f in finished)
    error = error_of(waiting[4])
    assert error.code() == TritonError.UNAVAILABLE
    # The code travels in the message too: gpt2's Triton gives a BLS caller only INTERNAL (server#7804).
    assert untag_error_code(error.message()) == (
        "UNAVAILABLE",
        "gpt2: overloaded, 4 requests already wait for a generation slot; retry later",
    )


# --- limits ---


class NoTokenizer:
    def encode(self, text: str):
        raise AssertionError("an oversized prompt must be refused before tokenizing")


def test_generate_params_read_limits_when_config_has_them_or_not(gpt2_cpu_repo) -> None:
    built = gpt2.Gpt2Config()
    with loaded(gpt2_cpu_repo / "gpt2_stream") as model:
        assert (model.params.max_pending, model.params.max_prompt_bytes) == (built.max_pending, built.max_prompt_bytes)
    with loaded(gpt2_cpu_repo / "gpt2_stream", {"max_pending": "3", "max_prompt_bytes": "9"}) as model:
        assert (model.params.max_pending, model.params.max_prompt_bytes, model.params.max_slots) == (3, 9, 8)
    with loaded(gpt2_cpu_repo / "gpt2_stream", {"max_pending": None, "max_prompt_bytes": None}) as model:
        assert (model.params.max_pending, model.params.max_prompt_bytes) == (32, 32 * 1024)
    with pytest.raises(ValueError, match="max_pending"):
        load_model(gpt2_cpu_repo / "gpt2_stream", parameters={"max_pending": "0"})


def test_generate_refuses_prompt_before_tokenizing_when_it_is_above_max_prompt_bytes(gpt2_cpu_repo) -> None:
    with loaded(gpt2_cpu_repo / "gpt2_stream", {"max_prompt_bytes": "100"}) as model:
        model.tokenizer = NoTokenizer()
        huge, missing = Request(text_input=text(b"a" * 5_000_000)), Request(max_tokens=np.array([[4]], np.int32))
        bad_utf8 = Request(text_input=text(b"\xff"))
        model.execute([huge, missing, bad_utf8])
    assert error_of(huge).message() == "text_input: 5000000 bytes, above the limit of 100"
    assert error_of(huge).code() == TritonError.INVALID_ARG
    assert error_of(missing).message() == "text_input: is required"
    assert error_of(bad_utf8).message() == "text_input: is not valid UTF-8"


# --- gpt2: the unary entry, forwarding through decoupled BLS ---


@pytest.fixture()
def routed(stream) -> Iterator[list]:
    """BLS requests to gpt2_stream answered by the loaded gpt2_stream; yields the requests received."""
    with bls_model("gpt2_stream", decoupled_model(stream)) as calls:
        yield calls


def test_gpt2_answers_with_gpt2_stream_whole_text_when_forwarding_through_bls(gpt2_cpu_repo, stream, routed) -> None:
    alone = [generate(stream, whole(p))[0] for p in PROMPTS]
    with loaded(gpt2_cpu_repo / "gpt2") as entry:
        assert generate(entry, *(ask(p) for p in PROMPTS)) == alone
    assert len(routed) == len(PROMPTS)
    for call in routed:
        assert get_input_tensor_by_name(call, "stream").as_numpy().tolist() == [[False]]
        assert call.parameters["entry_model"] == "gpt2" and set(call.parameters) == {"entry_model", "forward_id"}
    assert len({call.parameters["forward_id"] for call in routed}) == len(PROMPTS)  # one id per forward
    assert not stream.forwards  # each forgotten once answered


def test_gpt2_cancels_its_gpt2_stream_sequence_when_its_client_cancels(gpt2_cpu_repo) -> None:
    with (
        loaded(gpt2_cpu_repo / "gpt2_stream") as generator,
        bls_model("gpt2_stream", decoupled_model(generator)) as calls,
    ):
        gate = Gate(generator, after=3)  # a prefill and two steps run, then it waits
        with loaded(gpt2_cpu_repo / "gpt2", {"cancel_poll_ms": "10"}) as entry:
            request = ask(PROMPTS[0], max_tokens=50, min_tokens=np.array([[50]], np.int32))
            entry.execute([request])
            assert gate.holding.wait(30)
            [sink] = generator.forwards.values()
            request.cancel()
            assert wait_until(sink.is_cancelled), "gpt2 never cancelled its forward"
            gate.release.set()
            error = error_of(request)
        assert wait_until(lambda: not generator.engine.batch.seqs) and not generator.forwards  # the slot is free
    assert error.code() == TritonError.CANCELLED and "cancelled after 3 tokens" in error.message()
    forward, cancel = calls  # the forward, then one cancel request naming it
    assert cancel.parameters["cancel_forward_id"] == forward.parameters["forward_id"]


def test_gpt2_stream_answers_not_found_when_a_cancel_names_no_forward_in_flight(stream) -> None:
    request = Request(text_input=text(b""))
    request._parameters = '{"entry_model": "gpt2", "cancel_forward_id": "gone"}'
    stream.execute([request])
    error = error_of(request)
    assert error.code() == TritonError.NOT_FOUND and error.message().endswith("no forward gone in flight")


def test_gpt2_refuses_only_that_request_when_stream_is_true(gpt2_cpu_repo, routed) -> None:
    with loaded(gpt2_cpu_repo / "gpt2") as entry:
        streaming, fine = ask(PROMPTS[0], stream=flag(True)), ask(PROMPTS[1], 3, stream=flag(False))
        entry.execute([streaming, fine])
        assert answer(fine)["num_output_tokens"] > 0
    error = error_of(streaming)
    assert error.code() == TritonError.INVALID_ARG and error.message().startswith("stream: gpt2 answers once")


def test_gpt2_passes_on_gpt2_stream_error_and_code_when_the_request_is_bad(gpt2_cpu_repo, routed) -> None:
    with loaded(gpt2_cpu_repo / "gpt2") as entry:
        bad = ask(PROMPTS[0], beam_width=np.array([[4]], np.int32))
        entry.execute([bad])
        error = error_of(bad)
    assert error.code() == TritonError.INVALID_ARG and error.message().startswith("beam_width: only 1")


def test_gpt2_answers_internal_when_gpt2_stream_is_not_loaded(gpt2_cpu_repo) -> None:
    with loaded(gpt2_cpu_repo / "gpt2") as entry:
        request = ask(PROMPTS[0])
        entry.execute([request])
        error = error_of(request)
    assert "gpt2_stream" in error.message() and "not ready" in error.message()


def test_gpt2_answers_unavailable_when_max_in_flight_forwards_already_wait(gpt2_cpu_repo) -> None:
    release = threading.Event()

    def slow(request):
        release.wait(30)
        return [InferenceResponse(error=TritonError("released", TritonError.INTERNAL))]

    with bls_model("gpt2_stream", slow), loaded(gpt2_cpu_repo / "gpt2", {"max_in_flight": "2"}) as entry:
        requests = [ask(PROMPTS[0]) for _ in range(3)]
        entry.execute(requests)
        error = error_of(requests[2])  # the first two wait on the engine
        release.set()
        assert [error_of(r).message() for r in requests[:2]] == ["released", "released"]
    assert error.code() == TritonError.UNAVAILABLE and "gpt2: overloaded, 2 requests" in error.message()
