"""Real readiness: one tiny inference through each pipeline, outputs checked, not just the HTTP status.

    python -m serving.readiness --url 127.0.0.1:8000            # exit 0 or 1, one line saying why
    python -m serving.readiness --pipeline ensemble_jpeg        # only some pipelines

Triton's `/v2/health/ready` says 200 while a model whose stub was killed fails every request; this
check fails then. Per pipeline:
- ensemble_jpeg: a 64x36 PNG made here (all five vision steps run); the three outputs must have
  the contract's datatype and shape, be finite, scores and crop pixels in 0..1, oil in 0..100;
- gpt2: `/generate` with max_tokens 1 must return text and 1 completion token (0 if it stopped);
- gpt2_stream: the same through `/generate_stream` (server-sent events), without an error event.

A pipeline that refuses for capacity counts as ready ("busy") if it is still finishing requests:
a 503, a full queue or a queue timeout, or the GPT-2 engine's "overloaded" (which `/generate`
reports as 400), while the success count of its entry model (`/v2/models/M/stats`) rises within the
probe's timeout. It is serving at capacity, and taking a busy pod out of rotation would only push its
load onto the others. A refusal with no request finished meanwhile is a stuck pipeline: a hung
stub holds its batch forever and the queue behind it times out, which looks like capacity.

The requests are made with the standard library (no tritonclient in the KServe image); the tensor
names come from the contract and the answers are judged by the client library's checks, so this
probe, the clients and the load tests agree on what a correct answer is. Run as a file (the KServe
image's exec probe), it finds `tritonyard_contract` and `clients` beside it (the image copies them
there) or one folder up (this repository).
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

if not __package__:  # run as a file: let it import the packages of the repository it sits in
    sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

import numpy as np

from clients.lib.checks import Busy, check_generation, check_vision_outputs
from clients.lib.checks import ResponseError as NotReady
from clients.lib.sse import read_stream
from tritonyard_contract.protocol import is_capacity_refusal
from tritonyard_contract.tensors import IMAGE_BYTES, PIPELINE_OUTPUTS, TEXT_INPUT, TensorSpec

TEXT_PROMPT = "The oil level"
PIPELINES = ("ensemble_jpeg", "gpt2", "gpt2_stream")
# Whose finished requests show that a refusing pipeline is busy, not stuck: the entry, or the engine behind it.
PROGRESS_MODELS = {
    "ensemble_jpeg": ("ensemble_jpeg", "ensemble"),
    "gpt2": ("gpt2_stream",),
    "gpt2_stream": ("gpt2_stream",),
}
WIRE_DTYPES = {"FP32": "<f4", "FP16": "<f2", "INT32": "<i4", "INT64": "<i8", "UINT8": "u1"}


@dataclass(frozen=True)
class Result:
    """The verdict, and the one line that says why."""

    ok: bool
    line: str


def probe_png(width: int = 64, height: int = 36) -> bytes:
    """A small RGB PNG (grey, with a yellow box), written with zlib: no imaging library needed."""
    rows = []
    for y in range(height):
        inside = height // 4 <= y < 3 * height // 4
        row = bytearray(b"\x00")  # filter type None
        for x in range(width):
            row += bytes((200, 180, 40) if inside and width // 3 <= x < 2 * width // 3 else (90, 110, 130))
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace").strip()
        text = text.removeprefix("data:").strip()  # /generate_stream sends its error as a server-sent event
        try:
            message = json.loads(text).get("error", text)
        except ValueError:
            message = text
        if exc.code == 503 or is_capacity_refusal(message):
            raise Busy(message) from exc
        raise NotReady(f"HTTP {exc.code}: {message}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise NotReady(f"no answer: {exc}") from exc


def _array(output: dict, raw: bytes, spec: TensorSpec) -> np.ndarray:
    datatype = output.get("datatype", "")
    if datatype != spec.datatype or datatype not in WIRE_DTYPES:
        raise NotReady(f"{spec.name}: datatype {datatype}, expected {spec.datatype}")
    values = np.frombuffer(raw, WIRE_DTYPES[datatype])
    shape = output.get("shape") or []
    if values.size != int(np.prod(shape)):
        raise NotReady(f"{spec.name}: {values.size} values for shape {shape}")
    return values.reshape(shape)


def check_ensemble_jpeg(base: str, timeout: float) -> str:
    """The vision pipeline from encoded bytes; returns a short summary."""
    image = probe_png()
    blob = struct.pack("<I", len(image)) + image  # one BYTES element: length prefix, then the bytes
    tensor = {
        "name": IMAGE_BYTES.name,
        "shape": [1, 1],
        "datatype": IMAGE_BYTES.datatype,
        "parameters": {"binary_data_size": len(blob)},
    }
    header = {
        "inputs": [tensor],
        "outputs": [{"name": t.name, "parameters": {"binary_data": True}} for t in PIPELINE_OUTPUTS],
    }
    head = json.dumps(header).encode()
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))}
    reply_headers, body = _post(f"{base}/v2/models/ensemble_jpeg/infer", head + blob, headers, timeout)
    size = {k.lower(): v for k, v in reply_headers.items()}.get("inference-header-content-length")
    meta = json.loads(body[: int(size)] if size else body)
    offset = int(size or len(body))
    specs = {t.name: t for t in PIPELINE_OUTPUTS}
    got: dict[str, np.ndarray] = {}
    for output in meta.get("outputs", []):
        length = output.get("parameters", {}).get("binary_data_size")
        if length is None:
            raise NotReady(f"{output.get('name')}: not returned as binary data")
        raw, offset = body[offset : offset + length], offset + length
        if output["name"] in specs:
            got[output["name"]] = _array(output, raw, specs[output["name"]])
    check_vision_outputs(got)
    detections, oil = got[PIPELINE_OUTPUTS[0].name], got[PIPELINE_OUTPUTS[2].name]
    return f"oil {float(oil.reshape(-1)[0]):.2f}%, {int((detections[..., 4] > 0).sum())} detection(s)"


def check_gpt2(base: str, timeout: float) -> str:
    """One token through tokenizer, generation loop and detokenizer."""
    body = json.dumps({TEXT_INPUT.name: TEXT_PROMPT, "max_tokens": 1}).encode()
    _, reply = _post(f"{base}/v2/models/gpt2/generate", body, {"Content-Type": "application/json"}, timeout)
    return check_generation(json.loads(reply), max_tokens=1, where="gpt2")


def check_gpt2_stream(base: str, timeout: float) -> str:
    """The decoupled model through server-sent events."""
    body = json.dumps({TEXT_INPUT.name: TEXT_PROMPT, "max_tokens": 1}).encode()
    url = f"{base}/v2/models/gpt2_stream/generate_stream"
    _, reply = _post(url, body, {"Content-Type": "application/json"}, timeout)
    try:
        gen = read_stream(reply.splitlines(keepends=True), start=0.0, require_text=False)
    except NotReady as exc:
        raise type(exc)(f"gpt2_stream: {exc}") from exc
    answer = {
        "text_output": gen.text,
        "finish_reason": gen.finish_reason,
        "prompt_tokens": gen.prompt_tokens,
        "completion_tokens": gen.completion_tokens,
    }
    return check_generation(answer, max_tokens=1, where="gpt2_stream")


CHECKS: dict[str, Callable[[str, float], str]] = {
    "ensemble_jpeg": check_ensemble_jpeg,
    "gpt2": check_gpt2,
    "gpt2_stream": check_gpt2_stream,
}


def finished(base: str, models: tuple[str, ...], timeout: float) -> int:
    """Requests the models have completed successfully so far (a model the server lacks counts 0)."""
    total = 0
    for model in models:
        try:
            with urllib.request.urlopen(f"{base}/v2/models/{model}/stats", timeout=timeout) as response:
                stats = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            continue
        total += sum(int(m["inference_stats"]["success"]["count"]) for m in stats.get("model_stats", []))
    return total


def still_finishing(base: str, name: str, before: int, deadline: float, poll: float = 0.25) -> bool:
    """Whether the pipeline completes a request by `deadline` (it had completed `before` when the probe began)."""
    while True:
        if finished(base, PROGRESS_MODELS[name], max(0.5, deadline - time.monotonic())) > before:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)


def check(url: str, pipelines: tuple[str, ...] = PIPELINES, timeout: float = 20.0) -> Result:
    """Server ready, then each pipeline in turn; stops at the first failure."""
    base = url.rstrip("/") if url.startswith("http") else f"http://{url.rstrip('/')}"
    try:
        with urllib.request.urlopen(f"{base}/v2/health/ready", timeout=timeout) as response:
            if response.status != 200:
                return Result(False, f"not ready: /v2/health/ready answered {response.status}")
    except (urllib.error.URLError, OSError) as exc:
        return Result(False, f"not ready: /v2/health/ready: {exc}")
    notes = []
    for name in pipelines:
        started = time.monotonic()
        before = finished(base, PROGRESS_MODELS[name], timeout)
        try:
            summary = CHECKS[name](base, timeout)
        except Busy as exc:
            if not still_finishing(base, name, before, started + timeout):
                return Result(False, f"not ready: {name}: refused ({exc}) and finished no request in {timeout:g}s")
            notes.append(f"{name} busy ({exc})")
            continue
        except (NotReady, ValueError, KeyError, struct.error) as exc:  # Busy is caught above
            return Result(False, f"not ready: {name}: {exc}")
        notes.append(f"{name} {summary} in {time.monotonic() - started:.2f}s")
    return Result(True, "ready: " + "; ".join(notes))


def main(argv: list[str] | None = None) -> int:
    """Exit 0 when every pipeline answered correctly, else 1; prints one line either way."""
    parser = argparse.ArgumentParser(prog="readiness", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="127.0.0.1:8000", help="Triton's HTTP address (host:port or http://...)")
    parser.add_argument("--pipeline", action="append", choices=PIPELINES, help="check only these (repeatable)")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per request")
    args = parser.parse_args(argv)
    result = check(args.url, tuple(args.pipeline or PIPELINES), args.timeout)
    sys.stdout.write(result.line + "\n")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
