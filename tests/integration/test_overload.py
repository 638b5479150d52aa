"""Overload against a real tritonserver whose queues are tiny: excess requests are refused fast with
UNAVAILABLE, accepted ones keep bounded latency, the server recovers, and retrying clients get through.

The repository is the session's models re-rendered through the builder with small limits: every
dynamically batched vision model holds 2 queued requests, and the GPT-2 engine 2 generating + 2 pending.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import statistics
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from PIL import Image
from tritonclient.utils import InferenceServerException

from builders import gpt2, repository, vision
from builders.triton_config import OnnxModel, QueueLimits, Target
from clients import gpt2 as gpt2_client
from clients.clo import CloClient
from clients.lib import payloads
from clients.lib.retry import RetryPolicy
from serving.launcher import TritonServer, free_ports
from tritonyard_contract import CROP, IMAGE_BYTES, PIPELINE_OUTPUTS

pytestmark = pytest.mark.integration

QUEUE = 2  # max_queue_size of every dynamically batched vision model
SLOTS, PENDING = 2, 2  # the GPT-2 engine: sequences generating, and waiting for a slot
BURST = 40
NEW_TOKENS = 240  # the stand-in's context is 256 tokens
PROMPT = "def main():"
QUEUE_FULL = "Exceeds maximum queue size"


@pytest.fixture(scope="module")
def server(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """The session's exported vision models with tiny queues, and a GPT-2 engine with a tiny backlog."""
    repo = tmp_path_factory.mktemp("overload_repository")
    target = Target("cpu", queue=QueueLimits(max_queue_size=QUEUE))
    for spec in vision.specs(vision.VisionConfig()):
        if isinstance(spec, OnnxModel):  # reuse the export; only the configs change
            shutil.copy2(model_repo / spec.name / "1" / "model.onnx", repository.version_dir(repo, spec.name))
        repository.add_model(repo, spec, target)
    gpt2.build(gpt2.Gpt2Config(max_slots=SLOTS, max_pending=PENDING), repo)
    log = tmp_path_factory.mktemp("overload_triton") / "tritonserver.log"
    with TritonServer(repo, *free_ports(3), log_file=log, ready_timeout=300) as srv:
        yield srv


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (360, 640, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


@dataclass
class Outcome:
    error: InferenceServerException | None
    latency_s: float


def burst(n: int, call: Callable[[httpclient.InferenceServerClient], object], url: str) -> list[Outcome]:
    """`n` calls released together, one HTTP client each (created beforehand, so they start at once)."""
    clients = [httpclient.InferenceServerClient(url, network_timeout=300) for _ in range(n)]
    gate = threading.Barrier(n)

    def one(client: httpclient.InferenceServerClient) -> Outcome:
        gate.wait()
        began = time.perf_counter()
        try:
            call(client)
            return Outcome(None, time.perf_counter() - began)
        except InferenceServerException as exc:
            return Outcome(exc, time.perf_counter() - began)
        finally:
            client.close()

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, clients))


def ensemble_jpeg(data: bytes) -> Callable[[httpclient.InferenceServerClient], object]:
    def call(client: httpclient.InferenceServerClient):
        inp = httpclient.InferInput(IMAGE_BYTES.name, [1, 1], "BYTES")
        inp.set_data_from_numpy(np.array([[data]], dtype=np.object_), binary_data=True)
        outputs = [httpclient.InferRequestedOutput(t.name, binary_data=True) for t in PIPELINE_OUTPUTS]
        result = client.infer("ensemble_jpeg", [inp], outputs=outputs)
        assert result.as_numpy(CROP.name).shape == (1, *CROP.dims)

    return call


def generate(client: httpclient.InferenceServerClient):
    result = client.infer("gpt2", payloads.generate_inputs(httpclient, PROMPT, {"max_tokens": NEW_TOKENS}))
    assert result.as_numpy("finish_reason").reshape(-1)[0] in (b"length", b"stop")


def alone_s(call: Callable[[httpclient.InferenceServerClient], object], url: str) -> float:
    """Service time of one request on an idle server (best of 3; the first also warms up)."""
    return min(burst(1, call, url)[0].latency_s for _ in range(3))


def split(outcomes: list[Outcome]) -> tuple[list[float], list[Outcome]]:
    return [o.latency_s for o in outcomes if o.error is None], [o for o in outcomes if o.error is not None]


def report(label: str, accepted: list[float], refused: list[Outcome], alone: float, bound: float) -> None:
    logging.getLogger("tritonyard.test").warning(
        "%s: alone %.2f s; %d accepted (max %.2f s, bound %.2f s); %d refused (median %.3f s, max %.3f s)",
        label,
        alone,
        len(accepted),
        max(accepted),
        bound,
        len(refused),
        statistics.median(o.latency_s for o in refused),
        max(o.latency_s for o in refused),
    )


def assert_refused_fast(refused: list[Outcome], accepted: list[float]) -> None:
    """A refusal must not wait for the queue: well under the time the admitted backlog took to drain."""
    limit = max(accepted) / 2  # generous: on 2 busy cores gpt2's refusals queue behind its Python stub
    assert statistics.median(o.latency_s for o in refused) < limit, f"refusals slower than {limit:.2f} s"


def stats(url: str, model: str) -> dict:
    client = httpclient.InferenceServerClient(url)
    try:
        return client.get_inference_statistics(model)["model_stats"][0]
    finally:
        client.close()


def test_ensemble_refuses_excess_fast_and_bounds_accepted_latency_when_a_step_queue_is_full(server, jpeg) -> None:
    call = ensemble_jpeg(jpeg)
    alone = alone_s(call, server.http_url)
    before = stats(server.http_url, "ensemble_jpeg")["inference_stats"]["success"]["count"]
    accepted, refused = split(burst(BURST, call, server.http_url))
    # Each accepted request waits behind at most a full queue and one batch per step, served one at a time.
    bound = 2 * (QUEUE + Target("cpu").max_batch_size + 1) * alone
    report("ensemble_jpeg", accepted, refused, alone, bound)
    assert len(refused) >= BURST // 2, f"only {len(refused)} of {BURST} refused with queues of {QUEUE}"
    for outcome in refused:  # the ensemble relays its step's UNAVAILABLE (HTTP 503), not a client error
        assert outcome.error.status() == "503" and QUEUE_FULL in outcome.error.message(), outcome.error
    assert accepted and max(accepted) < bound
    assert_refused_fast(refused, accepted)
    after = stats(server.http_url, "ensemble_jpeg")["inference_stats"]["success"]["count"]
    assert after - before == len(accepted)


def test_gpt2_refuses_excess_fast_and_bounds_accepted_latency_when_the_engine_backlog_is_full(server) -> None:
    alone = alone_s(generate, server.http_url)
    accepted, refused = split(burst(BURST, generate, server.http_url))
    # Ahead of an accepted request: at most SLOTS generating and PENDING waiting, i.e. two rounds.
    bound = 2 * (1 + PENDING / SLOTS + 1) * alone + 1.0
    report("gpt2", accepted, refused, alone, bound)
    assert len(refused) >= BURST // 2 and len(accepted) >= PENDING
    # Refused by gpt2_stream's engine backlog (through gpt2's BLS), or by gpt2's own bound on forwards in flight
    # (twice what the engine holds) when a burst outruns the engine's refusals.
    limits = {f"gpt2: overloaded, {n} requests already wait" for n in (PENDING, 2 * (SLOTS + PENDING))}
    for outcome in refused:
        assert outcome.error.status() == "503", outcome.error
        assert any(limit in outcome.error.message() for limit in limits), outcome.error.message()
    assert max(accepted) < bound
    assert_refused_fast(refused, accepted)


def test_step_model_refuses_request_when_it_waited_past_its_queue_timeout(server) -> None:
    """allow_timeout_override: a client's own timeout (here 1 ms) applies in the queue, and REJECT fails it."""
    crop = np.random.default_rng(1).random((1, *CROP.dims), dtype=np.float32)

    def infer(client: httpclient.InferenceServerClient, timeout_us: int | None = None):
        inp = httpclient.InferInput(CROP.name, list(crop.shape), "FP32")
        inp.set_data_from_numpy(crop, binary_data=True)
        return client.infer("efficientnet_v2", [inp], timeout=timeout_us)

    for _ in range(3):  # the blocker must already execute when the timed request arrives; retry if it did not
        with ThreadPoolExecutor(1) as pool:
            blocker = pool.submit(burst, 1, infer, server.http_url)
            time.sleep(0.05)  # the blocker is executing now: the timed request waits in the (empty) queue
            [timed] = burst(1, lambda c: infer(c, timeout_us=1000), server.http_url)
            assert blocker.result()[0].error is None, blocker.result()[0].error
        if timed.error is not None and "Request timeout expired" in timed.error.message():
            break
    else:
        pytest.fail(f"never saw the queue timeout; last outcome: {timed.error or 'served'}")
    assert timed.error.status() == "503"


def test_server_recovers_fully_when_the_load_stops(server, jpeg) -> None:
    for call in (ensemble_jpeg(jpeg), generate):
        burst(BURST, call, server.http_url)  # overload once more, then stop
    began = time.perf_counter()
    for call in (ensemble_jpeg(jpeg), generate):
        [outcome] = burst(1, call, server.http_url)
        assert outcome.error is None, outcome.error
    assert time.perf_counter() - began < 30
    with urllib.request.urlopen(f"http://{server.http_url}/v2/health/ready", timeout=5) as r:
        assert r.status == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5) as r:
        pending = [line for line in r.read().decode().splitlines() if line.startswith("nv_inference_pending_request")]
    assert pending and all(line.endswith(" 0") for line in pending), pending  # every queue drained
    [jpeg_pipeline] = [s for s in vision.specs(vision.VisionConfig()) if s.name == "ensemble_jpeg"]
    for step in jpeg_pipeline.steps:
        s = stats(server.http_url, step.model)
        assert s["inference_count"] >= s["execution_count"] > 0  # ran, batched, and counted sanely


def flood(
    call: Callable[[httpclient.InferenceServerClient], object], url: str, seconds: float
) -> list[threading.Thread]:
    """16 clients, each sending back to back for `seconds`, in the background."""
    deadline = time.monotonic() + seconds

    def run() -> None:
        client = httpclient.InferenceServerClient(url, network_timeout=300)
        while time.monotonic() < deadline:
            try:
                call(client)
            except InferenceServerException:
                pass  # refused: that is the point; send the next one
        client.close()

    threads = [threading.Thread(target=run, daemon=True) for _ in range(16)]
    for thread in threads:
        thread.start()
    return threads


def generate_stream(url: str) -> Callable[[httpclient.InferenceServerClient], object]:
    """gpt2_stream over server-sent events (refusals come back as HTTP 400 there: Triton 2.51's /generate_stream
    maps a model's errors to 400, so only the message says "overloaded")."""

    def call(_: httpclient.InferenceServerClient) -> None:
        body = json.dumps({"text_input": PROMPT, "max_tokens": NEW_TOKENS}).encode()
        req = urllib.request.Request(f"http://{url}/v2/models/gpt2_stream/generate_stream", body, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=300) as r:
                r.read()
        except urllib.error.HTTPError as exc:
            assert "overloaded" in exc.read().decode()

    return call


PATIENT = RetryPolicy(retries=12, base_delay_s=0.2, max_delay_s=2.0, deadline_s=60.0)


def test_retrying_clients_get_through_when_the_overload_passes(server, jpeg, caplog) -> None:
    caplog.set_level(logging.INFO, logger="tritonyard.client")
    clo = CloClient(server.http_url, retry_policy=PATIENT)
    for call, retrying, served in (
        (ensemble_jpeg(jpeg), lambda: clo.infer_encoded(jpeg, (640, 360)), lambda r: r.crop.shape == CROP.dims),
        (
            generate,
            lambda: gpt2_client.generate(server.http_url, PROMPT, retry_policy=PATIENT, max_tokens=8),
            lambda r: r.completion_tokens > 0,
        ),
        # A gRPC stream reports the refusal without a status code: the client recognises the message.
        (
            generate_stream(server.http_url),
            lambda: gpt2_client.stream(server.grpc_url, PROMPT, retry_policy=PATIENT, max_tokens=8),
            lambda r: r.completion_tokens > 0,
        ),
    ):
        caplog.clear()
        load = flood(call, server.http_url, seconds=3.0)
        time.sleep(0.3)  # the queues are full now
        result = retrying()
        for thread in load:
            thread.join()
        retries = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert retries, "the client was never refused: the flood did not fill the queue"
        assert all(QUEUE_FULL in m or "overloaded" in m for m in retries), retries
        assert served(result)
    clo.close()


def test_retrying_client_fails_at_once_when_the_request_is_bad(server, caplog) -> None:
    caplog.set_level(logging.INFO, logger="tritonyard.client")
    client = CloClient(server.http_url, retry_policy=PATIENT)
    with pytest.raises(InferenceServerException) as info:
        client.infer_encoded(b"not an image", (1, 1))
    assert info.value.status() == "400" and IMAGE_BYTES.name in info.value.message()
    assert not [r for r in caplog.records if "refused" in r.getMessage()]
    client.close()
