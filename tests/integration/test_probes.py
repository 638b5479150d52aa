"""The probes against a real tritonserver serving all three pipelines (ensemble_jpeg, gpt2, gpt2_stream):
the readiness probe in each state (good, busy, dead stub, hung stub), the supervisor with gpt2_stream
streams in flight, and a hung (SIGSTOPped) stub detected, killed and reloaded within the documented bound.

The server's queues are small so "busy" is reachable: every vision step holds 1 queued request, and the
GPT-2 engine 2 generating + 1 pending. Each test puts back what it broke (SIGCONT, unload + load).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from builders import gpt2
from clients import gpt2 as gpt2_client
from clients.lib.retry import NO_RETRY
from serving import readiness
from serving.launcher import TritonServer, free_ports
from serving.supervisor import HUNG_AFTER, Supervisor, TritonAdmin, scan_stubs
from tests.helpers.traffic import Traffic, infer, small_jpeg

pytestmark = pytest.mark.integration

VISION = ("image_decoder", "preprocessing_u8", "yolov8", "postprocessing_u8", "efficientnet_v2", "ensemble_jpeg")
MODELS = (*VISION, "gpt2_stream", "gpt2")
SLOTS, PENDING = 2, 1
PROMPT = "Now is the winter of our"
LONG = 200  # tokens: a held stream lasts seconds; the stand-in's context is 256
PROBE_TIMEOUT = 8.0  # above the vision queues' 5 s timeout, so a hung step also shows up as refusals
STUB_OF = {"ensemble_jpeg": "yolov8", "gpt2": "gpt2", "gpt2_stream": "gpt2_stream"}
RELOAD_BOUND_S = 30.0  # stopped/killed -> serving again, past hung_after; a few seconds here, generous for CI


def _set(config: Path, pattern: str, value: str) -> None:
    text, n = re.subn(pattern, lambda m: m.group(1) + value + m.group(2), config.read_text())
    assert n == 1, (config, pattern)
    config.unlink()  # the copy may share the file with the session's repository: never write through it
    config.write_text(text)


@pytest.fixture(scope="module")
def server(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    root = tmp_path_factory.mktemp("probes")
    for name in VISION:
        shutil.copytree(model_repo / name, root / "repo" / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in VISION[:-1]:
        _set(root / "repo" / name / "config.pbtxt", r"(max_queue_size: )\d+()", "1")
    # The GPT-2 engine built with a tiny backlog by the builder itself, so its warmup fits that backlog too.
    gpt2.build(gpt2.Gpt2Config(max_slots=SLOTS, max_pending=PENDING), root / "repo")
    # Triton 2.51 never finishes unloading an instance whose stub was killed: keep shutdown short.
    with TritonServer(
        root / "repo", *free_ports(3), log_file=root / "tritonserver.log", extra_args=("--exit-timeout-secs=2",)
    ) as triton:
        yield triton


def stub_pid(server: TritonServer, model: str) -> int:
    (pid,) = [pid for pid, stub in scan_stubs(server.process.pid)[0].items() if stub.model == model]
    return pid


def restore(server: TritonServer, *models: str) -> None:
    """Continue any stopped stub, reload `models`, and check every pipeline answers again."""
    for pid, stub in scan_stubs(server.process.pid)[0].items():
        if stub.stopped:
            os.kill(pid, signal.SIGCONT)
    admin = TritonAdmin(server.http_url, server.admin_key)
    for model in models:
        admin.unload(model)
        admin.load(model)
    if not admin.ready("ensemble_jpeg"):
        admin.load("ensemble_jpeg")
    result = readiness.check(server.http_url, timeout=60)
    assert result.ok, result.line


def test_readiness_passes_all_three_pipelines_when_the_server_is_healthy(server: TritonServer) -> None:
    result = readiness.check(server.http_url, timeout=60)
    assert result.ok and "busy" not in result.line, result.line
    assert re.fullmatch(r"ready: ensemble_jpeg oil .+; gpt2 .+ in .+s; gpt2_stream .+ in .+s", result.line)


def fill_engine(pool: ThreadPoolExecutor, start, pieces: list) -> list:
    """Streams started one by one: each of the SLOTS generating (a piece arrived), then PENDING waiting."""
    streams = []
    for i in range(SLOTS + PENDING):
        streams.append(pool.submit(start, i))
        deadline = time.monotonic() + 60
        while i < SLOTS and not pieces[i]:
            assert time.monotonic() < deadline and not streams[-1].done(), "the stream never started"
            time.sleep(0.02)
    time.sleep(0.2)  # the pending one has arrived (the stand-in writes 200 tokens in about 2 s: be quick)
    return streams


@pytest.mark.parametrize("pipeline", ["gpt2", "gpt2_stream"])
def test_readiness_says_busy_but_ready_when_the_gpt2_engine_is_full(server: TritonServer, pipeline: str) -> None:
    pieces: list[list[str]] = [[] for _ in range(SLOTS + PENDING)]

    def hold(i: int) -> gpt2_client.Generation:
        return gpt2_client.stream(server.grpc_url, PROMPT, pieces[i].append, retry_policy=NO_RETRY, max_tokens=LONG)

    with ThreadPoolExecutor(len(pieces)) as pool:
        held = fill_engine(pool, hold, pieces)
        result = readiness.check(server.http_url, (pipeline,), timeout=60)
        finished = [f.result(timeout=120) for f in held]
    assert result.ok and result.line.startswith(f"ready: {pipeline} busy (") and "overloaded" in result.line
    assert all(g.text and g.completion_tokens > 0 for g in finished)  # the held ones were not disturbed


def test_readiness_says_busy_but_ready_when_the_vision_queues_are_full(server: TritonServer) -> None:
    lines = []
    with Traffic(server.http_url, small_jpeg(), threads=6) as traffic:
        traffic.wait_for(lambda o: sum(x.ok for x in o) >= 2, 120, "2 answers under load")
        for _ in range(10):
            lines.append(readiness.check(server.http_url, ("ensemble_jpeg",), timeout=30))
            if "busy" in lines[-1].line:
                break
    assert all(r.ok for r in lines), [r.line for r in lines]
    assert "ensemble_jpeg busy (" in lines[-1].line, [r.line for r in lines]
    refused = {o.error for o in traffic.outcomes() if not o.ok}
    assert all("Exceeds maximum queue size" in e or "timeout" in e.lower() for e in refused), refused


@pytest.mark.parametrize("pipeline", ["ensemble_jpeg", "gpt2", "gpt2_stream"])
def test_readiness_fails_the_pipeline_when_its_stub_is_dead(server: TritonServer, pipeline: str) -> None:
    model = STUB_OF[pipeline]
    os.kill(stub_pid(server, model), signal.SIGKILL)
    try:
        health = httpclient.InferenceServerClient(server.http_url)
        assert health.is_model_ready(model)  # Triton's own view: wrong
        health.close()
        result = readiness.check(server.http_url, (pipeline,), timeout=PROBE_TIMEOUT)
        assert not result.ok and result.line.startswith(f"not ready: {pipeline}: "), result.line
        assert "not healthy" in result.line, result.line
    finally:
        restore(server, model)


@pytest.mark.parametrize("pipeline", ["ensemble_jpeg", "gpt2", "gpt2_stream"])
def test_readiness_fails_the_pipeline_when_its_stub_hangs(server: TritonServer, pipeline: str) -> None:
    model = STUB_OF[pipeline]
    os.kill(stub_pid(server, model), signal.SIGSTOP)
    try:
        # The first probe's request is taken by the stopped stub; the second waits behind it (and a vision
        # step's queue times it out after 5 s, which looks like capacity but nothing finishes meanwhile).
        results = [readiness.check(server.http_url, (pipeline,), timeout=PROBE_TIMEOUT) for _ in range(2)]
        for result in results:  # Triton's own health check may call the stopped stub unhealthy first
            assert not result.ok and result.line.startswith(f"not ready: {pipeline}: "), result.line
            assert any(w in result.line for w in ("timed out", "finished no request", "not healthy")), result.line
            assert "\n" not in result.line
    finally:
        restore(server, model)


@pytest.fixture
def supervisor(server: TritonServer) -> Iterator[Supervisor]:
    """The launcher's supervisor with its defaults, watching this server, for one test."""
    watcher = Supervisor(server.process.pid, TritonAdmin(server.http_url, server.admin_key))
    watcher.start()
    deadline = time.monotonic() + 30
    while not watcher._known:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    yield watcher
    watcher.stop()
    watcher.join(timeout=60)


def wait_reload(supervisor: Supervisor, model: str, since: float, bound: float):
    while not [r for r in supervisor.reloads if r.model == model]:
        assert time.monotonic() - since < bound, f"{model} not reloaded within {bound:.0f}s"
        time.sleep(0.05)
    (reload,) = [r for r in supervisor.reloads if r.model == model]
    return reload


def test_supervisor_kills_and_reloads_a_hung_stub_within_the_bound(
    server: TritonServer, supervisor: Supervisor
) -> None:
    victim = stub_pid(server, "yolov8")
    os.kill(victim, signal.SIGSTOP)
    stopped = time.monotonic()
    with ThreadPoolExecutor(1) as pool:
        client = httpclient.InferenceServerClient(server.http_url, network_timeout=120)
        caught = pool.submit(infer, client, small_jpeg())  # in flight on the stopped stub
        try:
            reload = wait_reload(supervisor, "yolov8", stopped, HUNG_AFTER + RELOAD_BOUND_S)
            with pytest.raises(InferenceServerException):
                caught.result(timeout=60)  # ends with an error, does not hang
        finally:
            client.close()
            if not supervisor.reloads:
                restore(server, "yolov8")
    (pid, instance, killed) = supervisor.hung_kills[0]
    assert (pid, instance) == (victim, "yolov8_0_0")
    assert HUNG_AFTER <= killed - stopped < HUNG_AFTER + 2.0  # first seen stopped one poll later
    assert reload.ok and "hung (stopped for" in reload.reason and "ensemble_jpeg" in reload.dependents
    assert stub_pid(server, "yolov8") != victim
    assert readiness.check(server.http_url, ("ensemble_jpeg",), timeout=60).ok
    sys.stdout.write(
        f"stopped -> killed {killed - stopped:.2f}s -> serving again {reload.finished - stopped:.2f}s "
        f"(reload {reload.seconds:.2f}s)\n"
    )


@pytest.mark.skip(reason="open: Triton 2.51 leaves gRPC streams of a killed gpt2_stream stub open; the client hangs")
def test_supervisor_fails_inflight_gpt2_streams_cleanly_and_serves_later_ones_when_the_engine_stub_dies(
    server: TritonServer, supervisor: Supervisor
) -> None:
    reference = gpt2_client.stream(server.grpc_url, PROMPT, retry_policy=NO_RETRY, max_tokens=LONG).text
    short = gpt2_client.stream(server.grpc_url, PROMPT, retry_policy=NO_RETRY, max_tokens=24).text
    pieces: list[list[str]] = [[] for _ in range(SLOTS + PENDING)]

    def flight(i: int) -> gpt2_client.Generation:
        return gpt2_client.stream(
            server.grpc_url, PROMPT, pieces[i].append, retry_policy=NO_RETRY, timeout_s=60, max_tokens=LONG
        )

    with ThreadPoolExecutor(len(pieces)) as pool:
        streams = fill_engine(pool, flight, pieces)
        victim = stub_pid(server, "gpt2_stream")
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        outcomes = [f.exception(timeout=120) or f.result() for f in streams]
        ended = time.monotonic() - killed
    reload = wait_reload(supervisor, "gpt2_stream", killed, RELOAD_BOUND_S)

    failed = [o for o in outcomes if isinstance(o, Exception)]
    assert failed, outcomes  # at least one was cut off mid-generation
    assert all(isinstance(o, InferenceServerException) for o in failed), outcomes  # an error, not a timeout
    assert all(reference.startswith("".join(p)) for p in pieces)  # what arrived before the error was right
    assert all(o.text == reference for o in outcomes if not isinstance(o, Exception))
    assert reload.ok and f"stub pid {victim}" in reload.reason

    with ThreadPoolExecutor(3) as pool:
        later = [pool.submit(gpt2_client.stream, server.grpc_url, PROMPT, max_tokens=24) for _ in range(2)]
        later.append(pool.submit(gpt2_client.generate, server.http_url, PROMPT, max_tokens=24))
        assert [f.result(timeout=120).text for f in later] == [short] * 3
    sys.stdout.write(
        f"engine stub killed under {len(outcomes)} streams: {len(failed)} failed with "
        f"{sorted({str(o)[:80] for o in failed})} within {ended:.2f}s; serving again "
        f"{reload.finished - killed:.2f}s after the kill; 3 later requests gave the reference text\n"
    )
