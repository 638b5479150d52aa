"""Vision benchmark pieces: the transports one frame can take, the in-process floor, closed-loop runs.

Every sender checks what came back against the reference run of the same ONNX files in-process (the
detections, the crop and the oil level, besides shapes and finite values), so a wrong answer is counted
as an error and never as a fast success. FP32 frames are checked against the FP32 chain, JPEG bytes
against the chain ensemble_jpeg runs (the decoder's UINT8 frame through the `_u8` steps).
"""

from __future__ import annotations

import http.client
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from clients.lib import payloads
from clients.lib.shm import SharedRegion
from loadtests.vision_reference import Expected, InProcessChain, Reference, WrongAnswer, check_outputs
from tritonyard_contract import FRAME, IMAGE_BYTES, PIPELINE_OUTPUTS

__all__ = ["Expected", "InProcessChain", "Reference", "WrongAnswer", "check_outputs"]  # re-exported for the benches
_request_ids = itertools.count()


@dataclass
class Run:
    """One measured configuration: latencies of the requests that succeeded, and the errors."""

    label: str
    concurrency: int
    wall_s: float
    latencies_s: list[float]
    errors: int = 0
    payload_bytes: int | None = None
    first_error: str = ""

    @property
    def requests(self) -> int:
        return len(self.latencies_s)

    @property
    def throughput(self) -> float:
        return self.requests / self.wall_s if self.wall_s > 0 else 0.0

    def pct_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q) * 1000) if self.latencies_s else float("nan")

    def as_dict(self) -> dict:
        return {
            "label": self.label,
            "concurrency": self.concurrency,
            "requests": self.requests,
            "errors": self.errors,
            "wall_s": round(self.wall_s, 3),
            "throughput_per_s": round(self.throughput, 3),
            "p50_ms": round(self.pct_ms(50), 1),
            "p90_ms": round(self.pct_ms(90), 1),
            "p99_ms": round(self.pct_ms(99), 1),
            "payload_bytes": self.payload_bytes,
            "first_error": self.first_error,
        }


# --- senders: one per worker thread, each sends the reference frame once per call -----------------


@dataclass
class Sender:
    """Sends the reference frame once per call; `close` releases its client (in the thread that used it:
    tritonclient's HTTP client is gevent-based and bound to its thread)."""

    send: Callable[[], None]
    close: Callable[[], None] = lambda: None

    def __call__(self) -> None:
        self.send()


SenderFactory = Callable[[], Sender]


def _triton_outputs(api, binary: bool) -> list:
    """Requested outputs; `binary` False asks for JSON numbers (the KServe v2 examples' way)."""
    return [api.InferRequestedOutput(t.name, binary_data=binary) for t in PIPELINE_OUTPUTS]


Marks = list  # (request_id, client start ns, answer received ns) per request, CLOCK_MONOTONIC like Triton's trace


def _infer_checked(client, model: str, inputs: Callable[[], list], outputs: list, want: Expected, marks) -> None:
    """One request under a fresh request id (Triton's trace records it); the answer is checked after the clock
    stops. `inputs` runs inside the timed span: it is the client's share of the work (e.g. writing the frame)."""
    rid = f"bench-{next(_request_ids)}"
    started = time.monotonic_ns()
    res = client.infer(model, inputs(), outputs=outputs, request_id=rid)
    answered = time.monotonic_ns()
    check_outputs(*(res.as_numpy(t.name) for t in PIPELINE_OUTPUTS), want)
    if marks is not None:
        marks.append((rid, started, answered))


def http_sender(url: str, ref: Reference, *, binary: bool, marks: Marks | None = None) -> Sender:
    """FP32 frame to `ensemble` over REST: binary tensors, or JSON numbers as the KServe v2 examples send."""
    import tritonclient.http as api

    client = api.InferenceServerClient(url, network_timeout=600, connection_timeout=600)
    batch = ref.frame[np.newaxis]

    def inputs() -> list:
        inp = api.InferInput(FRAME.name, list(batch.shape), "FP32")
        inp.set_data_from_numpy(batch, binary_data=binary)  # JSON: tritonclient writes every float as text
        return [inp]

    outputs = _triton_outputs(api, binary)
    return Sender(lambda: _infer_checked(client, "ensemble", inputs, outputs, ref.fp32, marks), client.close)


def grpc_sender(url: str, ref: Reference, marks: Marks | None = None) -> Sender:
    import tritonclient.grpc as api

    client = api.InferenceServerClient(url)
    inputs = lambda: [payloads.frame_input(api, ref.frame)]  # noqa: E731
    outputs = payloads.outputs(api)
    return Sender(lambda: _infer_checked(client, "ensemble", inputs, outputs, ref.fp32, marks), client.close)


def shm_sender(url: str, ref: Reference, marks: Marks | None = None) -> Sender:
    """FP32 frame through system shared memory; each call writes the frame into the region first,
    as a client with a new frame every time must."""
    import tritonclient.http as api

    client = api.InferenceServerClient(url, network_timeout=600)
    batch = ref.frame[np.newaxis]
    try:
        region = SharedRegion(client, batch.nbytes, prefix="bench")  # freed by itself if registration fails
    except BaseException:
        client.close()
        raise

    def inputs() -> list:
        region.write(batch)
        return [payloads.shm_frame_input(api, region.name, batch.nbytes, batch.shape)]

    def close() -> None:
        try:
            region.close()
        finally:
            client.close()

    outputs = payloads.outputs(api)
    return Sender(lambda: _infer_checked(client, "ensemble", inputs, outputs, ref.fp32, marks), close)


def jpeg_sender(url: str, ref: Reference, marks: Marks | None = None) -> Sender:
    """The camera's JPEG bytes to `ensemble_jpeg`, which decodes server-side."""
    import tritonclient.http as api

    client = api.InferenceServerClient(url, network_timeout=600)
    inputs = lambda: [payloads.image_input(api, ref.jpeg)]  # noqa: E731
    outputs = payloads.outputs(api)
    return Sender(lambda: _infer_checked(client, "ensemble_jpeg", inputs, outputs, ref.from_jpeg, marks), client.close)


def fastapi_sender(url: str, ref: Reference, *, jpeg: bool) -> Sender:
    """The FastAPI baseline: the raw FP32 frame (the same bytes as Triton's binary HTTP body) or the same JPEG;
    it answers the three outputs as raw float32 bytes (loadtests/baselines/fastapi_server), checked like ours."""
    from loadtests.baselines.fastapi_server import parse_answer

    host, port = url.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=600)
    body = ref.jpeg if jpeg else ref.frame.tobytes()
    path, want = ("/infer_jpeg", ref.from_jpeg) if jpeg else ("/infer", ref.fp32)

    def send() -> None:
        conn.request("POST", path, body, {"Content-Type": "application/octet-stream"})
        resp = conn.getresponse()
        payload = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {payload[:200]!r}")
        try:
            det, crop, oil = parse_answer(payload)
        except ValueError as exc:
            raise WrongAnswer(str(exc)) from None
        check_outputs(det, crop, oil, want)

    return Sender(send, conn.close)


def request_bytes(kind: str, ref: Reference) -> int:
    """Bytes on the wire for one request body of each transport (headers excluded)."""
    import tritonclient.http as api

    batch = ref.frame[np.newaxis]
    if kind in ("http_json", "http_binary", "shm"):
        inp = api.InferInput(FRAME.name, list(batch.shape), "FP32")
        if kind == "shm":
            inp.set_shared_memory("region", batch.nbytes)
        else:
            inp.set_data_from_numpy(batch, binary_data=kind == "http_binary")
        body, _ = api.InferenceServerClient.generate_request_body([inp], _triton_outputs(api, kind != "http_json"))
        return len(body)
    if kind == "grpc":
        from tritonclient.grpc import service_pb2

        req = service_pb2.ModelInferRequest(model_name="ensemble", raw_input_contents=[batch.tobytes()])
        req.inputs.add(name=FRAME.name, datatype="FP32", shape=list(batch.shape))
        return req.ByteSize()
    if kind == "jpeg":
        inp = api.InferInput(IMAGE_BYTES.name, [1, 1], "BYTES")
        inp.set_data_from_numpy(np.array([[ref.jpeg]], dtype=np.object_), binary_data=True)
        body, _ = api.InferenceServerClient.generate_request_body([inp], _triton_outputs(api, True))
        return len(body)
    raise ValueError(kind)


# --- closed-loop load -------------------------------------------------------------------------------


@dataclass
class _Tally:
    """What the workers of one closed-loop run share: requests left to send, and what came back."""

    remaining: int
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""
    ends: list[float] = field(default_factory=list)  # when each worker that warmed up sent its last request
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> bool:
        """Claim one of the remaining requests; False when none is left."""
        with self.lock:
            if self.remaining <= 0:
                return False
            self.remaining -= 1
            return True

    def fail(self, message: str) -> None:
        with self.lock:
            self.errors += 1
            self.first_error = self.first_error or message

    def succeed(self, latency_s: float) -> None:
        with self.lock:
            self.latencies.append(latency_s)

    def finish(self) -> None:
        with self.lock:
            self.ends.append(time.perf_counter())


def _send_until_done(send: Sender, tally: _Tally) -> None:
    """Send back to back while requests remain."""
    while tally.take():
        t0 = time.perf_counter()
        try:
            send()
        except Exception as exc:  # noqa: BLE001 - a failed or wrong response is an error, never a success
            tally.fail(str(exc)[:300])
            continue
        tally.succeed(time.perf_counter() - t0)


def _worker(factory: SenderFactory, warmup: int, tally: _Tally, start_gate: threading.Barrier) -> None:
    """Build a sender and warm it up, wait for the common start, then send until the run is done."""
    send = None
    try:
        send = factory()
        for _ in range(warmup):
            send()
    except Exception as exc:  # noqa: BLE001 - reported as this run's error, the run goes on
        tally.fail(f"warm-up: {exc}")
        start_gate.wait()
        if send is not None:
            send.close()
        return
    start_gate.wait()
    _send_until_done(send, tally)
    tally.finish()
    send.close()


def closed_loop(label: str, factory: SenderFactory, concurrency: int, *, requests: int, warmup: int = 1) -> Run:
    """`concurrency` workers send back to back until `requests` have completed in total.

    Each worker builds its own sender (clients are not shared across threads) and warms up before a
    common start, so connection setup and first-call allocations stay out of the figures.
    """
    tally, start_gate = _Tally(requests), threading.Barrier(concurrency + 1)
    threads = [
        threading.Thread(target=_worker, args=(factory, warmup, tally, start_gate), daemon=True)
        for _ in range(concurrency)
    ]
    for t in threads:
        t.start()
    start_gate.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = (max(tally.ends) if tally.ends else time.perf_counter()) - t0
    return Run(label, concurrency, wall, tally.latencies, tally.errors, first_error=tally.first_error)


def floor_run(chain: InProcessChain, ref: Reference, requests: int) -> Run:
    """The in-process chain, one frame after another: its throughput is what this machine can do."""
    chain(ref.frame)  # warm-up
    latencies = []
    t0 = time.perf_counter()
    for _ in range(requests):
        s = time.perf_counter()
        det, crop, oil = chain.outputs(ref.frame)
        latencies.append(time.perf_counter() - s)
        check_outputs(det, crop, oil, ref.fp32)
    return Run("in-process onnxruntime (floor)", 1, time.perf_counter() - t0, latencies)
