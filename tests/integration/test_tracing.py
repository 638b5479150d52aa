"""OpenTelemetry tracing end to end: a real tritonserver exports to a real OTLP/HTTP receiver in the test.

The server gets exactly the flags `make serve OTLP_ENDPOINT=...` adds (serving.launcher.otlp_trace_args),
plus a short export delay so the spans arrive within seconds. The receiver is an http.server that
accepts POST /v1/traces in both OTLP/HTTP encodings, as a collector does (Triton 2.51's exporter
sends JSON, `application/json`; protobuf is `application/x-protobuf`), and decodes them into the
`opentelemetry-proto` messages. Each `ensemble` request must come back as one trace: a root span,
the ensemble's span under it, and under that one span per step with its compute span.
"""

from __future__ import annotations

import base64
import http.server
import json
import string
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from builders import catalog
from serving.launcher import TritonServer, free_ports, otlp_trace_args
from tritonyard_contract import FRAME, OIL_PCT

pytestmark = pytest.mark.integration
REQUESTS = 3
EXPORT_DELAY_MS = 200  # the batch span processor's delay (default 5000 ms)
ENCODINGS = ("application/x-protobuf", "application/json")  # OTLP/HTTP's two
ID_FIELDS = {"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"}


def _ids_to_base64(node: object) -> object:
    """OTLP/JSON writes span and trace ids in hex; protobuf's JSON mapping reads bytes as base64."""
    if isinstance(node, list):
        return [_ids_to_base64(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in ID_FIELDS and isinstance(value, str) and value and set(value) <= set(string.hexdigits):
            value = base64.b64encode(bytes.fromhex(value)).decode()
        out[key] = _ids_to_base64(value)
    return out


def decode(body: bytes, encoding: str) -> ExportTraceServiceRequest:
    """One OTLP/HTTP export request in either encoding."""
    if encoding == ENCODINGS[0]:
        return ExportTraceServiceRequest.FromString(body)
    return json_format.ParseDict(_ids_to_base64(json.loads(body)), ExportTraceServiceRequest())


@dataclass
class Receiver:
    """What the OTLP/HTTP receiver got: decoded spans with their resource attributes, and refusals."""

    spans: list[tuple[dict[str, str], Span]] = field(default_factory=list)
    encodings: set[str] = field(default_factory=set)
    refused: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                kind = self.headers.get("Content-Type", "").split(";")[0].strip()
                if self.path != "/v1/traces" or kind not in ENCODINGS:
                    with receiver.lock:
                        receiver.refused.append(f"{self.path} {kind}")
                    self.send_error(404)
                    return
                try:
                    request = decode(body, kind)
                except (ValueError, json_format.ParseError) as exc:
                    with receiver.lock:
                        receiver.refused.append(f"undecodable {kind} body: {exc}: {body[:300]!r}")
                    self.send_error(400)
                    return
                with receiver.lock:
                    receiver.encodings.add(kind)
                    for resource_spans in request.resource_spans:
                        resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                        for scope in resource_spans.scope_spans:
                            receiver.spans += [(resource, span) for span in scope.spans]
                empty = ExportTraceServiceResponse()
                reply = empty.SerializeToString() if kind == ENCODINGS[0] else json_format.MessageToJson(empty).encode()
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def traces(self) -> dict[bytes, list[Span]]:
        with self.lock:
            grouped = defaultdict(list)
            for _, span in self.spans:
                grouped[span.trace_id].append(span)
            return dict(grouped)


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, str]]:
    found = Receiver()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), found.handler())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield found, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def ensemble_steps() -> list[str]:
    """The ensemble's steps, from the builder's own spec."""
    (ensemble,) = [s for s in catalog.all_specs("cpu") if s.name == "ensemble"]
    return [step.model for step in ensemble.steps]


@pytest.fixture(scope="module")
def traced(
    model_repo: Path, receiver: tuple[Receiver, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonServer]:
    """The ensemble and its steps, served with `make serve`'s tracing flags pointed at the receiver."""
    _, endpoint = receiver
    args = (
        *otlp_trace_args(endpoint),
        f"--trace-config=opentelemetry,bsp_schedule_delay={EXPORT_DELAY_MS}",
        "--model-control-mode=explicit",
        *(f"--load-model={name}" for name in ["ensemble", *ensemble_steps()]),
    )
    log = tmp_path_factory.mktemp("triton-tracing") / "tritonserver.log"
    with TritonServer(model_repo, *free_ports(3), extra_args=args, log_file=log, ready_timeout=600) as server:
        yield server


def wait_for_traces(receiver: Receiver, count: int, steps: int, timeout: float = 60.0) -> dict[bytes, list[Span]]:
    """The traces once `count` of them hold a span per step (spans arrive in batches, in any order)."""
    deadline = time.monotonic() + timeout
    while True:
        traces = receiver.traces()
        complete = [t for t in traces.values() if sum(s.name != "compute" for s in t) >= steps + 2]
        if len(complete) >= count or time.monotonic() > deadline:
            return traces
        time.sleep(0.2)


def test_tracing_exports_one_trace_per_ensemble_request_with_a_span_per_step_when_otlp_endpoint_is_set(
    traced: TritonServer, receiver: tuple[Receiver, str]
) -> None:
    found, _ = receiver
    client = httpclient.InferenceServerClient(traced.http_url, network_timeout=600)
    frame = np.random.default_rng(0).uniform(0, 255, (1, *FRAME.dims)).astype(np.float32)
    for i in range(REQUESTS):
        inp = httpclient.InferInput(FRAME.name, list(frame.shape), "FP32")
        inp.set_data_from_numpy(frame, binary_data=True)
        result = client.infer("ensemble", [inp], request_id=f"traced-{i}")
        assert result.as_numpy(OIL_PCT.name).shape == (1, 1)
    client.close()

    steps = ensemble_steps()
    traces = wait_for_traces(found, REQUESTS, len(steps))
    assert found.refused == []
    assert len(traces) == REQUESTS, {t.hex(): sorted(s.name for s in spans) for t, spans in traces.items()}
    for trace_id, spans in traces.items():
        by_id = {s.span_id: s for s in spans}
        (root,) = [s for s in spans if not s.parent_span_id]
        (ensemble,) = [s for s in spans if s.name == "ensemble"]
        assert ensemble.parent_span_id == root.span_id, trace_id.hex()
        step_spans = {s.name: s for s in spans if s.parent_span_id == ensemble.span_id}
        assert sorted(step_spans) == sorted(steps), trace_id.hex()
        for name, span in step_spans.items():
            computes = [s for s in spans if s.name == "compute" and s.parent_span_id == span.span_id]
            assert len(computes) == 1, f"{name}: {len(computes)} compute spans"
            assert ensemble.start_time_unix_nano <= span.start_time_unix_nano <= span.end_time_unix_nano
            assert span.end_time_unix_nano <= ensemble.end_time_unix_nano
        assert all(s.parent_span_id in by_id for s in spans if s.parent_span_id), "a span's parent is in another trace"
    resources = {tuple(sorted(resource.items())) for resource, _ in found.spans}
    assert all(dict(r).get("service.name") == "tritonyard" for r in resources), resources
