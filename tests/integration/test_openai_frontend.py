"""The OpenAI-compatible frontend, driven by the official `openai` client (sync and async), in front of a real
tritonserver serving the GPT-2 models (the trained stand-in) and a real `python -m openai_frontend` process."""

from __future__ import annotations

import asyncio
import csv
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from clients import gpt2 as direct
from openai_frontend.process import Frontend
from serving.launcher import TritonServer, free_ports

pytestmark = pytest.mark.integration
MODEL = "gpt2"
ENGINE_BATCH = re.compile(r"gpt2_stream engine: batch of (\d+) after admitting")
PROMPT = "Now is the winter of our"
API_KEY = "sk-test-" + "k" * 32


@pytest.fixture(scope="module")
def gpt2_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """Only the GPT-2 models (about 30 s to build): 8 slots and max_pending 8, so a burst of 24 is partly refused."""
    from builders import gpt2

    repo = tmp_path_factory.mktemp("openai_gpt2_repo")
    gpt2.build(gpt2.Gpt2Config(max_slots=8, max_pending=8), repo)
    log = tmp_path_factory.mktemp("openai_triton") / "tritonserver.log"
    with TritonServer(repo, *free_ports(3), log_file=log, ready_timeout=600) as server:
        yield server


@pytest.fixture(scope="module")
def frontend(gpt2_triton: TritonServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Frontend]:
    log = tmp_path_factory.mktemp("openai_frontend") / "frontend.log"
    with Frontend(gpt2_triton.grpc_url, free_ports(1)[0], log_file=log) as server:
        yield server


@pytest.fixture()
def client(frontend: Frontend) -> openai.OpenAI:
    return openai.OpenAI(base_url=frontend.base_url, api_key="unused", max_retries=0, timeout=120)


def _stream_text(stream) -> tuple[str, list]:
    chunks = list(stream)
    pieces = [c.choices[0].text for c in chunks if c.choices]
    return "".join(pieces), chunks


def test_openai_models_lists_gpt2_when_asked(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")


def test_openai_completion_stream_joins_to_whole_text_when_temperature_is_zero(
    client: openai.OpenAI, gpt2_triton: TritonServer
) -> None:
    whole = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=24, temperature=0)
    stream = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=24, temperature=0, stream=True)
    joined, chunks = _stream_text(stream)
    assert joined == whole.choices[0].text and len(chunks) > 2
    assert joined == direct.stream(gpt2_triton.grpc_url, PROMPT, max_tokens=24, temperature=0.0).text
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason == "length"


def test_openai_chat_stream_joins_to_whole_text_when_temperature_is_zero(client: openai.OpenAI) -> None:
    messages = [{"role": "system", "content": "Speak as a king."}, {"role": "user", "content": "Who art thou?"}]
    kw = {"model": MODEL, "messages": messages, "max_completion_tokens": 20, "temperature": 0}
    whole = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(**kw, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    joined = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert joined == whole.choices[0].message.content and whole.choices[0].message.role == "assistant"
    assert whole.choices[0].finish_reason == chunks[-1].choices[0].finish_reason
    assert whole.choices[0].finish_reason in ("stop", "length")


def test_openai_usage_totals_match_triton_when_streaming_with_include_usage(
    client: openai.OpenAI, gpt2_triton: TritonServer
) -> None:
    truth = direct.stream(gpt2_triton.grpc_url, PROMPT, max_tokens=12, temperature=0.0)
    whole = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=12, temperature=0)
    assert (whole.usage.prompt_tokens, whole.usage.completion_tokens) == (truth.prompt_tokens, 12)
    assert whole.usage.total_tokens == truth.prompt_tokens + 12
    stream = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=12, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert all(c.usage is None for c in chunks[:-1])
    plain = list(client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=4, temperature=0, stream=True))
    assert all(c.usage is None for c in plain)


def test_openai_completion_cuts_before_stop_when_the_text_contains_it(client: openai.OpenAI) -> None:
    free = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=24, temperature=0).choices[0].text
    word = free.split()[2]
    cut = free[: free.index(word)]
    for stop in (word, [word, "never-appears-xyz"]):
        got = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=24, temperature=0, stop=stop)
        assert got.choices[0].text == cut and got.choices[0].finish_reason == "stop"
        assert got.usage.completion_tokens < 24


def test_openai_sampling_repeats_when_seed_is_fixed(client: openai.OpenAI) -> None:
    def sample(seed: int) -> str:
        kw = {"model": MODEL, "prompt": PROMPT, "max_tokens": 24, "temperature": 1.0, "top_p": 0.95, "seed": seed}
        return client.completions.create(**kw).choices[0].text

    assert sample(7) == sample(7)
    assert sample(-7) == sample(-7)  # any 64-bit seed: folded into uint64
    assert len({sample(s) for s in (1, 2, 3)}) > 1


@pytest.mark.parametrize(
    ("endpoint", "extra", "param"),
    [
        ("completions", {"n": 2}, "n"),
        ("completions", {"logprobs": 2}, "logprobs"),
        ("completions", {"best_of": 3}, "best_of"),
        ("chat", {"n": 3}, "n"),
        ("chat", {"logprobs": True}, "logprobs"),
        ("chat", {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
        ("completions", {"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ("completions", {"max_tokens": 100000}, "max_tokens"),
        ("chat", {"temperature": 3.0}, "temperature"),
    ],
)
def test_openai_refuses_with_400_when_a_parameter_is_unsupported(
    client: openai.OpenAI, endpoint: str, extra: dict, param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        if endpoint == "chat":
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], **extra)
        else:
            client.completions.create(model=MODEL, prompt="hi", **extra)
    error = info.value.body
    assert info.value.status_code == 400 and error["param"] == param and error["message"]
    assert error["type"] == "invalid_request_error"


def test_openai_answers_404_when_the_model_is_unknown(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.completions.create(model="gpt-4o", prompt="hi")
    assert info.value.body["code"] == "model_not_found"


def test_openai_async_streams_are_batched_in_the_server_when_eight_run_at_once(
    frontend: Frontend, gpt2_triton: TritonServer
) -> None:
    """8 concurrent streams (the 8 slots): all are in flight together, so each got its first piece before any
    finished (one after another, the 8th would start after the 7th ended), and Triton counts 8 gpt2_stream runs."""
    before = _stats(gpt2_triton, "gpt2_stream")
    prompts = [f"{PROMPT} {i}" for i in range(8)]

    async def one(client: openai.AsyncOpenAI, prompt: str) -> tuple[float, float, str]:
        stream = await client.completions.create(model=MODEL, prompt=prompt, max_tokens=48, temperature=0, stream=True)
        first, text = None, []
        async for chunk in stream:
            first = first or time.monotonic()
            text += [c.text for c in chunk.choices]
        return first, time.monotonic(), "".join(text)

    async def run() -> list:
        async with openai.AsyncOpenAI(base_url=frontend.base_url, api_key="x", max_retries=0, timeout=120) as c:
            return await asyncio.gather(*(one(c, p) for p in prompts))

    logged = len(ENGINE_BATCH.findall(gpt2_triton.log_file.read_text()))
    results = asyncio.run(run())
    assert max(first for first, _, _ in results) < min(last for _, last, _ in results), "streams did not overlap"
    after = _stats(gpt2_triton, "gpt2_stream")
    assert after["inference_count"] - before["inference_count"] == 8
    # The engine logs each batch it forms when sequences join: once the last stream joined, all 8 ran in one.
    sizes = [int(n) for n in ENGINE_BATCH.findall(gpt2_triton.log_file.read_text())[logged:]]
    assert sizes and max(sizes) == 8, f"engine batch sizes {sizes}"
    solo = openai.OpenAI(base_url=frontend.base_url, api_key="x", max_retries=0)
    assert (
        results[3][2]
        == solo.completions.create(model=MODEL, prompt=prompts[3], max_tokens=48, temperature=0).choices[0].text
    )


def _stats(triton: TritonServer, model: str) -> dict:
    r = httpx.get(f"http://{triton.http_url}/v2/models/{model}/stats", timeout=10)
    return r.json()["model_stats"][0]


def _disconnect_after_three_events(frontend: Frontend) -> None:
    body = {"model": MODEL, "prompt": "HAMLET\nTo be", "max_tokens": 240, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{frontend.base_url}/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        events = []
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
            if len(events) == 3:
                break  # leaving the block closes the connection mid-stream
    assert all(e["choices"][0]["finish_reason"] is None for e in events)


def _triton_cancel_line(triton: TritonServer, wait_s: float) -> str:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        line = next((x for x in triton.log_tail().splitlines() if "cancelled after" in x), "")
        if line:
            return line
        time.sleep(0.2)
    return ""


def test_openai_stream_cancel_frees_the_slot_when_the_client_disconnects(
    frontend: Frontend, gpt2_triton: TritonServer
) -> None:
    """The frontend cancels its gRPC stream at once; Triton's model drops the sequence at its next step. At
    ~250 tokens/s a starved frontend can notice after the 240 tokens are done, so up to three tries."""
    line = ""
    for _ in range(3):
        _disconnect_after_three_events(frontend)
        line = _triton_cancel_line(gpt2_triton, 10)
        if line:
            break
    assert line, "Triton never saw a cancelled stream"
    assert int(line.split("cancelled after ")[1].split()[0]) < 240, line
    left = [x for x in Path(frontend.log_file).read_text().splitlines() if "client left after" in x]
    assert left and int(left[-1].split("client left after ")[1].split()[0]) < 240
    client = openai.OpenAI(base_url=frontend.base_url, api_key="x", max_retries=0, timeout=60)
    assert client.completions.create(model=MODEL, prompt="after", max_tokens=8, temperature=0).usage.completion_tokens


def test_openai_answers_503_when_more_streams_than_slots_and_pending_arrive(frontend: Frontend) -> None:
    """max_slots 8 + max_pending 8: of 24 long streams at once, some are refused as overloaded (503, Retry-After)."""

    async def one(client: httpx.AsyncClient) -> int:
        body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 120, "temperature": 0, "stream": True}
        async with client.stream("POST", "/completions", json=body) as r:
            await r.aread()
            if r.status_code == 503:
                assert r.json()["error"]["code"] == "overloaded" and r.headers["retry-after"] == "1"
            return r.status_code

    async def run() -> list[int]:
        async with httpx.AsyncClient(base_url=frontend.base_url, timeout=120) as c:
            return await asyncio.gather(*(one(c) for _ in range(24)))

    codes = asyncio.run(run())
    assert set(codes) == {200, 503} and codes.count(200) >= 8, codes


def test_openai_requires_the_bearer_key_when_an_api_key_is_set(gpt2_triton: TritonServer, tmp_path: Path) -> None:
    with Frontend(gpt2_triton.grpc_url, free_ports(1)[0], api_key=API_KEY, log_file=tmp_path / "f.log") as server:
        bad = openai.OpenAI(base_url=server.base_url, api_key="wrong-key", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as info:
            bad.completions.create(model=MODEL, prompt="hi", max_tokens=2)
        assert info.value.status_code == 401 and info.value.body["code"] == "invalid_api_key"
        missing = httpx.post(f"{server.base_url}/completions", json={"model": MODEL, "prompt": "hi"})
        assert missing.status_code == 401 and missing.json()["error"]["type"] == "invalid_request_error"
        assert httpx.get(f"{server.base_url}/models").status_code == 401
        assert httpx.get(f"http://{server.host}:{server.port}/health").status_code == 200
        good = openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0)
        assert good.completions.create(model=MODEL, prompt="hi", max_tokens=2, temperature=0).usage.completion_tokens


def _locust_openai(frontend: Frontend, out: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    """locust_openai.py headless for 6 s with 2 users; (the run, locust's stats rows by (type, name))."""
    root = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, "-m", "locust", "-f", str(root / "loadtests" / "locust_openai.py"), "--headless"]
    cmd += ["-u", "2", "-r", "2", "-t", "6s", "--host", f"http://{frontend.host}:{frontend.port}"]
    cmd += ["--openai-max-tokens", "8", "--csv", str(out / "locust"), "--only-summary", *extra]
    run = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=180)
    rows = {(r["Type"], r["Name"]): r for r in csv.DictReader((out / "locust_stats.csv").open())}
    return run, rows


def test_openai_locust_target_streams_without_failures_when_run_headless(frontend: Frontend, tmp_path: Path) -> None:
    """No --answers: the locustfile computes the greedy reference texts itself, and every answer matches."""
    run, rows = _locust_openai(frontend, tmp_path)
    sse = rows[("sse", "openai /v1/completions")]
    assert run.returncode == 0, run.stderr[-2000:]
    assert int(sse["Request Count"]) > 0 and int(sse["Failure Count"]) == 0
    assert ("ttft", "openai /v1/completions") in rows and ("itl", "openai /v1/completions") in rows


def test_openai_locust_target_fails_every_request_when_the_reference_text_is_wrong(
    frontend: Frontend, tmp_path: Path
) -> None:
    from loadtests.references import OPENAI_PROMPTS

    wrong = {"gpt2": {"max_tokens": 8, "texts": {p: " not the greedy text" for p in OPENAI_PROMPTS}}}
    (tmp_path / "wrong.json").write_text(json.dumps(wrong))
    run, rows = _locust_openai(frontend, tmp_path, "--answers", str(tmp_path / "wrong.json"))
    sse = rows[("sse", "openai /v1/completions")]
    assert run.returncode == 1, run.stderr[-2000:]
    assert int(sse["Request Count"]) > 0 and int(sse["Failure Count"]) == int(sse["Request Count"])
    assert "wrong answer: generated" in (tmp_path / "locust_failures.csv").read_text()
