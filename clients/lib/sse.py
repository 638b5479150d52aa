"""Server-sent events of `/v2/models/<model>/generate_stream`: parse lines, read one whole generation."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable

from clients.lib.checks import Busy, ResponseError
from clients.lib.timing import Generation
from tritonyard_contract.protocol import is_capacity_refusal


def parse_sse_line(line: bytes | str) -> dict | None:
    """The JSON payload of one SSE `data:` line, or None for blank lines, comments and other fields.

    Triton reports a failed generation as `data: {"error": ...}`, with HTTP 200 when the stream had
    already started: that raises ResponseError (Busy for a capacity refusal), as does a payload that is
    not a JSON object.
    """
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    text = text.rstrip("\r\n")
    if not text.startswith("data:"):
        return None
    try:
        event = json.loads(text[5:])
    except json.JSONDecodeError as exc:
        raise ResponseError(f"SSE data is not JSON: {text[:200]!r}") from exc
    if not isinstance(event, dict):
        raise ResponseError(f"SSE data is not a JSON object: {text[:200]!r}")
    if "error" in event:
        kind = Busy if is_capacity_refusal(str(event["error"])) else ResponseError
        raise kind(f"server error in stream: {event['error']}")
    return event


def read_stream(
    lines: Iterable[bytes | str],
    start: float,
    clock: Callable[[], float] = time.perf_counter,
    *,
    require_text: bool = True,
) -> Generation:
    """Consume the SSE lines of one generation; raise ResponseError unless it finished (and, with
    `require_text`, produced text and at least one token)."""
    pieces: list[str] = []
    times: list[float] = []
    last: dict = {}
    for line in lines:
        event = parse_sse_line(line)
        if event is None:
            continue
        times.append(clock() - start)
        if "text_output" not in event:
            raise ResponseError(f"SSE event without text_output: {event}")
        pieces.append(str(event["text_output"]))
        last = event
        if event.get("finish_reason"):
            break
    if not times:
        raise ResponseError("stream ended without any event")
    if not last.get("finish_reason"):
        raise ResponseError(f"stream ended after {len(times)} event(s) without a finish_reason")
    text = "".join(pieces)
    tokens = int(last.get("completion_tokens") or 0)
    if require_text and not text:
        raise ResponseError(f"generated text is empty (finish_reason {last['finish_reason']!r})")
    if require_text and tokens < 1:
        raise ResponseError(f"completion_tokens is {tokens} for non-empty text")
    prompt = last.get("prompt_tokens")
    return Generation(
        text, str(last["finish_reason"]), prompt if isinstance(prompt, int) else 0, tokens, clock() - start, times
    )
