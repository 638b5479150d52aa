"""GPT-2 generation against a real tritonserver: parity with transformers, streaming, sampling,
stop strings, bad input and cancellation. The session's repository serves the trained stand-in (weights/gpt2)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from builders import gpt2, gpt2_load
from builders.nets.gpt2 import GPT2LMHeadModel, greedy_torch
from builders.triton_config import read_config
from clients import gpt2 as client
from clients.lib import payloads
from serving.launcher import TritonServer
from tests.helpers.gpt2_checkpoint import hf_greedy
from tritonyard_contract.tensors import MIN_TOKENS

pytestmark = pytest.mark.integration

PROMPTS = ["def main():", "The oil level in the", "import os\nimport sys\n\nclass Reader:", "x"]
SHAKESPEARE = ["Now is the winter of our", "HAMLET\nTo be or not to be", "My lord I"]
MULTIBYTE = ["Oil 🛢️ check ✅ passed:", "油位正常，请检查。", "mixed 油 and 😀"]


@pytest.fixture(scope="module")
def reference():
    """The very torch model the builder exported (deterministic), with its tokenizer and dims."""
    return gpt2_load.load(gpt2.Gpt2Config())


def expected_greedy(reference, prompt: str, new_tokens: int) -> tuple[list[int], str]:
    model, tokenizer, dims = reference
    ids = tokenizer.encode(prompt).ids
    out = [int(t) for t in greedy_torch(model, dims, [ids], new_tokens)[0]]
    if dims.eos_token_id in out:
        out = out[: out.index(dims.eos_token_id)]
    return out, tokenizer.decode(out)


def test_gpt2_equals_transformers_greedy_when_requests_run_alone(triton: TritonServer, reference) -> None:
    for prompt in PROMPTS[:2]:
        ids, text = expected_greedy(reference, prompt, 24)
        got = client.generate(triton.http_url, prompt, max_tokens=24)
        assert got.text == text
        assert got.completion_tokens == len(ids) and got.finish_reason in ("length", "stop")
        assert got.prompt_tokens == len(reference[1].encode(prompt).ids)


@pytest.fixture(scope="module")
def trained():
    """transformers' own loading of the trained stand-in, not the builder's: FP32 (the served decoder's precision;
    the file is FP16) and the tokenizer AutoTokenizer reads from the folder."""
    import torch
    from transformers import AutoTokenizer

    folder = gpt2_load.TRAINED_STAND_IN
    model = GPT2LMHeadModel.from_pretrained(folder, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(folder)


def test_gpt2_equals_transformers_generate_when_serving_the_trained_stand_in(
    triton: TritonServer, model_repo, trained
) -> None:
    """Served greedy text == generate on the committed checkpoint, and == the samples its metrics.json (and the
    docs) show."""
    served = read_config(model_repo / "gpt2_stream" / "config.pbtxt").parameters["vocab_size"].string_value
    assert served == str(len(trained[1])), "the session repository is not the trained stand-in"
    samples = json.loads((gpt2_load.TRAINED_STAND_IN / "metrics.json").read_text())["samples_greedy"]
    for prompt in [*samples, *SHAKESPEARE]:
        ids, text = hf_greedy(trained, prompt, 24)
        got = client.generate(triton.http_url, prompt, max_tokens=24)
        assert got.text == text, f"{prompt!r}: served {got.text!r}, generate {text!r}"
        assert got.completion_tokens == len(ids) and got.prompt_tokens == len(trained[1](prompt).input_ids)
        assert samples.get(prompt, text) == text
    pieces: list[str] = []
    streamed = client.stream(triton.grpc_url, SHAKESPEARE[0], on_piece=pieces.append, max_tokens=24)
    assert "".join(pieces) == streamed.text == hf_greedy(trained, SHAKESPEARE[0], 24)[1]


def test_gpt2_equals_transformers_greedy_when_four_prompts_share_the_batch(triton: TritonServer, reference) -> None:
    """Different prompt lengths arriving together: in-flight batching with left-padded caches."""
    lengths = [31, 17, 24, 9]
    expected = [expected_greedy(reference, p, n)[1] for p, n in zip(PROMPTS, lengths)]
    with ThreadPoolExecutor(4) as pool:
        got = list(
            pool.map(lambda pn: client.generate(triton.http_url, pn[0], max_tokens=pn[1]), zip(PROMPTS, lengths))
        )
    assert [g.text for g in got] == expected


@pytest.mark.parametrize("prompt", MULTIBYTE)
def test_gpt2_stream_pieces_join_to_gpt2_text_when_prompt_is_multibyte(
    triton: TritonServer, reference, prompt: str
) -> None:
    pieces: list[str] = []
    streamed = client.stream(triton.grpc_url, prompt, on_piece=pieces.append, max_tokens=20)
    whole = client.generate(triton.http_url, prompt, max_tokens=20)
    # Decoding all ids at once is the truth; a split character would show up as extra U+FFFD in the
    # pieces. Only an unfinished character at the very end is held back (a model can emit raw bytes).
    _, at_once = expected_greedy(reference, prompt, 20)
    assert "".join(pieces) == streamed.text == whole.text == at_once.rstrip("\ufffd")
    assert len(pieces) > 1 and streamed.finish_reason == whole.finish_reason


def test_gpt2_stream_answers_server_sent_events_when_called_over_http(triton: TritonServer) -> None:
    body = json.dumps({"text_input": "def main():", "max_tokens": 6}).encode()
    url = f"http://{triton.http_url}/v2/models/gpt2_stream/generate_stream"
    with urllib.request.urlopen(urllib.request.Request(url, body, method="POST"), timeout=60) as r:
        events = [json.loads(line[5:]) for line in r.read().decode().splitlines() if line.startswith("data:")]
    assert len(events) >= 2 and events[-1]["finish_reason"] == "length" and events[-1]["completion_tokens"] == 6
    text = "".join(e["text_output"] for e in events)
    assert text == client.generate(triton.http_url, "def main():", max_tokens=6).text


def test_gpt2_generate_endpoint_returns_text_when_called_with_json(triton: TritonServer) -> None:
    body = json.dumps({"text_input": "The oil level in the", "max_tokens": 5}).encode()
    url = f"http://{triton.http_url}/v2/models/gpt2/generate"
    with urllib.request.urlopen(urllib.request.Request(url, body, method="POST"), timeout=60) as r:
        answer = json.loads(r.read())
    assert answer["completion_tokens"] == 5 and answer["finish_reason"] == "length"
    assert answer["text_output"] == client.generate(triton.http_url, "The oil level in the", max_tokens=5).text


def test_gpt2_sampling_repeats_when_seed_is_fixed(triton: TritonServer) -> None:
    opts = {"max_tokens": 16, "temperature": 1.0, "top_p": 0.95}
    runs = [client.generate(triton.http_url, "def main():", seed=1234, **opts).text for _ in range(2)]
    assert runs[0] == runs[1]
    others = {client.generate(triton.http_url, "def main():", seed=s, **opts).text for s in range(5)}
    assert len(others) > 1, "different seeds should sample different text"


def test_gpt2_top_k_one_equals_greedy_when_temperature_is_high(triton: TritonServer) -> None:
    greedy = client.generate(triton.http_url, "The oil level in the", max_tokens=12)
    top1 = client.generate(triton.http_url, "The oil level in the", max_tokens=12, temperature=2.0, top_k=1, seed=9)
    assert top1.text == greedy.text


def test_gpt2_cuts_text_before_stop_string_when_it_appears(triton: TritonServer) -> None:
    full = client.generate(triton.http_url, "def main():", max_tokens=24).text
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    assert stop.strip(), f"pick a visible stop string from {full!r}"
    for call in (client.generate, client.stream):
        url = triton.http_url if call is client.generate else triton.grpc_url
        got = call(url, "def main():", max_tokens=24, stop=[stop, "never-appears"])
        assert got.finish_reason == "stop"
        assert got.text == full[: full.index(stop)] and stop not in got.text


def test_gpt2_baseline_client_loop_gives_the_same_tokens_when_greedy(triton: TritonServer, model_repo) -> None:
    tokenizer = model_repo / "gpt2_stream" / "1" / "tokenizer.json"
    base, _ = client.baseline(triton.http_url, "The oil level in the", tokenizer, max_tokens=16)
    assert base.text == client.generate(triton.http_url, "The oil level in the", max_tokens=16).text


BAD = [
    ({"text_input": ""}, "text_input"),
    ({"text_input": "   "}, "text_input"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": -3}, "max_tokens"),
    ({"max_tokens": 100_000}, "max_tokens"),
    ({"temperature": -0.5}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"text_input": "word " * 400, "max_tokens": 8}, "exceeds the context"),
    ({"beam_width": 2}, "beam_width: only 1 is supported"),
    ({"return_log_probs": True}, "return_log_probs: only False is supported"),
    ({"min_length": 9, "max_tokens": 4}, "min_length: must be between 0 and max_tokens"),
]


@pytest.mark.parametrize("override,needle", BAD, ids=[n for _, n in BAD])
def test_gpt2_refuses_request_when_an_input_is_invalid(triton: TritonServer, override: dict, needle: str) -> None:
    body = json.dumps({"text_input": "hello", **override}).encode()
    for model in ("gpt2", "gpt2_stream"):
        route = "generate" if model == "gpt2" else "generate_stream"
        req = urllib.request.Request(f"http://{triton.http_url}/v2/models/{model}/{route}", body, method="POST")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=60).read()
        assert info.value.code == 400 and needle in info.value.read().decode()
    assert client.generate(triton.http_url, "still serving", max_tokens=2).completion_tokens == 2


def test_gpt2_refuses_text_when_it_is_not_utf8(triton: TritonServer) -> None:
    http = httpclient.InferenceServerClient(triton.http_url)
    inp = httpclient.InferInput("text_input", [1, 1], "BYTES")
    inp.set_data_from_numpy(np.array([[b"\xff\xfe bad"]], dtype=np.object_), binary_data=True)
    with pytest.raises(InferenceServerException, match="text_input: is not valid UTF-8") as info:
        http.infer("gpt2", [inp])
    assert info.value.status() == "400"


def test_gpt2_stream_frees_its_slot_when_the_client_cancels(triton: TritonServer) -> None:
    began = time.monotonic()
    client.generate(triton.http_url, "after cancel", max_tokens=8)
    alone_s = time.monotonic() - began
    grpc = grpcclient.InferenceServerClient(triton.grpc_url)
    pieces: list = []
    grpc.start_stream(callback=lambda result=None, error=None: pieces.append((result, error)))
    # 240 new tokens: the prompt's 7 (the stand-in's BPE) and these fit its 256-token context.
    grpc.async_stream_infer("gpt2_stream", payloads.generate_inputs(grpcclient, "def main():", {"max_tokens": 240}))
    deadline = time.monotonic() + 30
    while not pieces and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pieces, "no piece arrived"
    grpc.stop_stream(cancel_requests=True)
    deadline = time.monotonic() + 10
    while "cancelled after" not in triton.log_tail() and time.monotonic() < deadline:
        time.sleep(0.05)
    line = next((x for x in triton.log_tail().splitlines() if "cancelled after" in x), "")
    assert line, "the server never noticed the cancelled stream"
    assert int(line.split("cancelled after ")[1].split()[0]) < 240, line
    began = time.monotonic()
    assert client.generate(triton.http_url, "after cancel", max_tokens=8).completion_tokens == 8
    assert time.monotonic() - began < 5 * alone_s + 1.0, "a request after the cancel was slowed down"


def test_gpt2_cancels_its_generation_when_the_unary_grpc_client_cancels(triton: TritonServer) -> None:
    """gpt2 forwards through BLS, which Triton 2.51 cannot cancel: gpt2 polls its client's request and sends
    gpt2_stream a cancel naming the forward, so the sequence leaves the batch long before its 240 tokens."""
    grpc = grpcclient.InferenceServerClient(triton.grpc_url)
    inputs = payloads.generate_inputs(grpcclient, "def main():", {"max_tokens": 240})
    inputs.append(payloads.tensor(grpcclient, MIN_TOKENS, np.array([[240]], np.int32)))  # no early end token
    request_id = f"unary-cancel-{time.monotonic_ns()}"  # gpt2 passes it on: gpt2_stream's log names it
    answers: list = []
    call = grpc.async_infer(
        "gpt2", inputs, callback=lambda result=None, error=None: answers.append(error), request_id=request_id
    )
    time.sleep(0.05)
    call.cancel()
    cancelled = f"request {request_id} cancelled after "
    deadline = time.monotonic() + 10
    while cancelled not in triton.log_tail() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = triton.log_tail()
    assert f"gpt2: client went away; cancelled forward of request {request_id}" in log, log
    line = next((x for x in log.splitlines() if cancelled in x), "")
    assert line, f"gpt2_stream never dropped the cancelled forward:\n{log}"
    assert int(line.split(cancelled)[1].split()[0]) < 240, line
    assert answers and answers[0] is not None  # the client saw its call cancelled, not an answer
    assert client.generate(triton.http_url, "after cancel", max_tokens=8).completion_tokens == 8
