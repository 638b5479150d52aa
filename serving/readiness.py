"""Real readiness: one tiny inference through each pipeline, outputs checked, not just the HTTP status.

    python -m serving.readiness --url 127.0.0.1:8000            # exit 0 or 1, one line saying why
    python -m serving.readiness --pipeline ensemble_jpeg        # only some pipelines

Triton's `/v2/health/ready` says 200 while a model whose stub was killed fails every request; this
check fails then. Per pipeline:
- ensemble_jpeg: a 64x36 PNG made here (all five vision steps run); the three outputs must have
  the contract's datatype and shape, be finite, scores and crop pixels in 0..1, oil in 0..100;
- gpt2: `/generate` with max_tokens 1 must return text and 1 completion token (0 if it stopped);
- gpt2_stream: the same through `/generate_stream` (server-sent events), without an error event.

A pipeline that refuses for capacity counts as ready ("busy"): a 503, a full queue or a queue
timeout, or the GPT-2 engine's "overloaded" (which `/generate` reports as 400). It is serving at
capacity, and taking a busy pod out of rotation would only push its load onto the others.

Standard library only and Python 3.10, so the file is copied alone into the KServe image and runs
as the exec readiness probe there (kserve/image/Dockerfile). Tensor names repeat builders.contract
because of that; tests/unit/test_serving_probes.py checks they match it.
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import sys
import time
import urllib.error
import urllib.request
import zlib
from array import array
from collections.abc import Callable
from dataclasses import dataclass

# name -> (datatype, shape with the batch of 1, low, high); builders.contract declares the same.
VISION_OUTPUTS = {
    "yolo_detections": ("FP32", [1, 300, 6], None, None),  # boxes are pixels; scores checked on their own
    "processed_image_384_384": ("FP32", [1, 3, 384, 384], -1e-4, 1 + 1e-4),
    "estimated_oil_pct": ("FP32", [1, 1], 0.0, 100.0),
}
IMAGE_INPUT = "image_bytes"
SCORE_COLUMN = 4  # x1, y1, x2, y2, score, class
TEXT_PROMPT = "The oil level"
PIPELINES = ("ensemble_jpeg", "gpt2", "gpt2_stream")


class NotReady(Exception):
    """A pipeline answered wrongly, or not at all."""


CAPACITY_MESSAGES = ("Exceeds maximum queue size", "Request timeout expired", "overloaded")


class Busy(Exception):
    """A pipeline refused the request because its queue is full."""


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


def is_capacity_refusal(message: str) -> bool:
    """Triton's full-queue or queue-timeout refusal, or the GPT-2 engine's backlog refusal.

    `/generate` and `/generate_stream` report the engine's UNAVAILABLE as HTTP 400, so the message is
    what tells a busy pipeline from a broken one. Same wording as clients/retry.py (this file is
    stdlib-only, so it keeps its own copy).
    """
    return any(m in message for m in CAPACITY_MESSAGES)


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        try:
            message = json.loads(text).get("error", text)
        except ValueError:
            message = text
        if exc.code == 503 or is_capacity_refusal(message):
            raise Busy(message) from exc
        raise NotReady(f"HTTP {exc.code}: {message}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise NotReady(f"no answer: {exc}") from exc


def _values(name: str, raw: bytes, datatype: str, shape: list[int]) -> array:
    if datatype != "FP32":
        raise NotReady(f"{name}: datatype {datatype}, expected FP32")
    values = array("f")
    values.frombytes(raw)
    if sys.byteorder != "little":
        values.byteswap()
    if len(values) != math.prod(shape):
        raise NotReady(f"{name}: {len(values)} values for shape {shape}")
    return values


def check_ensemble_jpeg(base: str, timeout: float) -> str:
    """The vision pipeline from encoded bytes; returns a short summary."""
    image = probe_png()
    blob = struct.pack("<I", len(image)) + image  # one BYTES element: length prefix, then the bytes
    tensor = {"name": IMAGE_INPUT, "shape": [1, 1], "datatype": "BYTES", "parameters": {"binary_data_size": len(blob)}}
    header = {
        "inputs": [tensor],
        "outputs": [{"name": n, "parameters": {"binary_data": True}} for n in VISION_OUTPUTS],
    }
    head = json.dumps(header).encode()
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))}
    reply_headers, body = _post(f"{base}/v2/models/ensemble_jpeg/infer", head + blob, headers, timeout)
    size = {k.lower(): v for k, v in reply_headers.items()}.get("inference-header-content-length")
    meta = json.loads(body[: int(size)] if size else body)
    offset = int(size or len(body))
    got: dict[str, array] = {}
    for output in meta.get("outputs", []):
        length = output.get("parameters", {}).get("binary_data_size")
        if length is None:
            raise NotReady(f"{output.get('name')}: not returned as binary data")
        raw, offset = body[offset : offset + length], offset + length
        name = output["name"]
        if name not in VISION_OUTPUTS:
            continue
        datatype, shape, low, high = VISION_OUTPUTS[name]
        if output.get("shape") != shape:
            raise NotReady(f"{name}: shape {output.get('shape')}, expected {shape}")
        values = _values(name, raw, output.get("datatype", ""), shape)
        if not math.isfinite(math.fsum(values)):
            raise NotReady(f"{name}: NaN or Inf in the output")
        if low is not None and not low <= min(values) <= max(values) <= high:
            raise NotReady(f"{name}: values outside {low}..{high}: {min(values)}..{max(values)}")
        got[name] = values
    missing = sorted(set(VISION_OUTPUTS) - set(got))
    if missing:
        raise NotReady(f"outputs missing: {', '.join(missing)}")
    scores = got["yolo_detections"][SCORE_COLUMN::6]
    if not 0.0 <= min(scores) <= max(scores) <= 1.0:
        raise NotReady(f"yolo_detections: scores outside 0..1: {min(scores)}..{max(scores)}")
    return f"oil {got['estimated_oil_pct'][0]:.2f}%, {sum(1 for s in scores if s > 0)} detection(s)"


def _check_generated(answer: dict, where: str) -> str:
    if "error" in answer:
        raise (Busy if is_capacity_refusal(answer["error"]) else NotReady)(f"{where}: {answer['error']}")
    finish, completion = answer.get("finish_reason"), answer.get("completion_tokens")
    if not isinstance(answer.get("text_output"), str) or not isinstance(answer.get("prompt_tokens"), int):
        raise NotReady(f"{where}: no text_output/prompt_tokens in {sorted(answer)}")
    if answer["prompt_tokens"] < 1 or not (
        (finish == "length" and completion == 1) or (finish == "stop" and completion in (0, 1))
    ):
        raise NotReady(f"{where}: finish_reason {finish!r} with {completion!r} token(s) for max_tokens 1")
    return f"{completion} token ({finish})"


def check_gpt2(base: str, timeout: float) -> str:
    """One token through tokenizer, generation loop and detokenizer."""
    body = json.dumps({"text_input": TEXT_PROMPT, "max_tokens": 1}).encode()
    _, reply = _post(f"{base}/v2/models/gpt2/generate", body, {"Content-Type": "application/json"}, timeout)
    return _check_generated(json.loads(reply), "gpt2")


def check_gpt2_stream(base: str, timeout: float) -> str:
    """The decoupled model through server-sent events."""
    body = json.dumps({"text_input": TEXT_PROMPT, "max_tokens": 1}).encode()
    url = f"{base}/v2/models/gpt2_stream/generate_stream"
    _, reply = _post(url, body, {"Content-Type": "application/json"}, timeout)
    events = [json.loads(line[5:]) for line in reply.decode(errors="replace").splitlines() if line.startswith("data:")]
    if not events:
        raise NotReady("gpt2_stream: no events")
    errors = [e["error"] for e in events if "error" in e]
    if errors:
        raise (Busy if is_capacity_refusal(errors[0]) else NotReady)(f"gpt2_stream: {errors[0]}")
    last = dict(events[-1])
    last["text_output"] = "".join(e.get("text_output", "") for e in events)
    return _check_generated(last, "gpt2_stream")


CHECKS: dict[str, Callable[[str, float], str]] = {
    "ensemble_jpeg": check_ensemble_jpeg,
    "gpt2": check_gpt2,
    "gpt2_stream": check_gpt2_stream,
}


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
        try:
            summary = CHECKS[name](base, timeout)
        except Busy as exc:
            notes.append(f"{name} busy ({exc})")
            continue
        except (NotReady, ValueError, KeyError, struct.error) as exc:
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
