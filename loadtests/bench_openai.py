"""The OpenAI frontend's overhead: TTFT and ITL of the same greedy generations through it and direct.

One Triton server and one `python -m openai_frontend` beside it; each round sends the same prompt twice,
back to back: once straight to gpt2_stream over gRPC streaming (clients.gpt2.stream), once as a streamed
`POST /v1/completions` (SSE over a keep-alive HTTP connection). Alternating in one run keeps both paths
under the same machine load. `bench.py` calls `measure` and appends `markdown` to the report.

    python -m loadtests.bench_openai --repository model_repository   # on its own
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from clients import gpt2 as direct
from clients.lib.timing import Generation
from openai_frontend.process import Frontend
from serving.launcher import TritonServer, free_ports

PROMPT = "Now is the winter of our discontent made glorious summer by this sun of"
PATH = "/v1/completions"


@dataclass(frozen=True)
class Settings:
    new_tokens: int = 64
    rounds: int = 12

    @classmethod
    def quick(cls) -> Settings:
        return cls(new_tokens=8, rounds=2)


def read_openai_stream(lines, start: float) -> Generation:
    """An OpenAI completions SSE body (lines of bytes) as a Generation; raises on an error event or no end."""
    parts, times, finish, usage = [], [], "", {}
    for raw in lines:
        line = raw.decode("utf-8").strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        event = json.loads(line[6:])
        if "error" in event:
            raise RuntimeError(f"error event: {event['error'].get('message')}")
        usage = event.get("usage") or usage
        for choice in event.get("choices", []):
            if choice.get("text"):
                parts.append(choice["text"])
                times.append(time.perf_counter() - start)
            finish = choice.get("finish_reason") or finish
    if not finish:
        raise RuntimeError("the stream ended without a finish_reason")
    total = time.perf_counter() - start
    tokens = (usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))
    return Generation("".join(parts), finish, *tokens, total, times)


def openai_stream(conn: http.client.HTTPConnection, prompt: str, max_tokens: int) -> Generation:
    body = {"model": "gpt2", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    body["stream_options"] = {"include_usage": True}
    start = time.perf_counter()
    conn.request("POST", PATH, json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {response.read()[:300]!r}")
    return read_openai_stream(iter(response.readline, b""), start)


def _summary(gens: list[Generation]) -> dict:
    itls = [g.itl_s for g in gens if g.itl_s is not None]
    return {
        "requests": len(gens),
        "ttft_ms_p50": statistics.median(g.ttft_s for g in gens) * 1000,
        "itl_ms_p50": statistics.median(itls) * 1000 if itls else None,
        "tokens_per_s": statistics.mean(g.tokens_per_s for g in gens),
    }


def measure_with(triton: TritonServer, frontend: Frontend, settings: Settings) -> dict:
    """Interleaved rounds against a running server and frontend; the texts must agree (greedy)."""
    conn = http.client.HTTPConnection(frontend.host, frontend.port, timeout=300)
    via, straight, mismatches = [], [], 0
    try:
        openai_stream(conn, PROMPT, 2)  # warm-up: connection, first request through both paths
        direct.stream(triton.grpc_url, PROMPT, max_tokens=2, temperature=0.0)
        for _ in range(settings.rounds):
            d = direct.stream(triton.grpc_url, PROMPT, max_tokens=settings.new_tokens, temperature=0.0)
            o = openai_stream(conn, PROMPT, settings.new_tokens)
            straight.append(d)
            via.append(o)
            mismatches += d.text != o.text or d.completion_tokens != o.completion_tokens
    finally:
        conn.close()
    result = {"settings": settings.__dict__, "direct_grpc": _summary(straight), "openai": _summary(via)}
    result["mismatches"] = mismatches
    d, o = result["direct_grpc"], result["openai"]
    result["overhead_ttft_ms"] = o["ttft_ms_p50"] - d["ttft_ms_p50"]
    if o["itl_ms_p50"] is not None and d["itl_ms_p50"] is not None:
        result["overhead_itl_ms"] = o["itl_ms_p50"] - d["itl_ms_p50"]
    return result


def measure(repo: Path, settings: Settings, out: Path) -> dict:
    """A server of its own on `repo` (GPT-2 models needed), the frontend beside it, `measure_with`."""
    out.mkdir(parents=True, exist_ok=True)
    ports = free_ports(4)
    with (
        TritonServer(repo, *ports[:3], log_file=out / "tritonserver.log", ready_timeout=600) as triton,
        Frontend(triton.grpc_url, ports[3], log_file=out / "openai_frontend.log") as frontend,
    ):
        result = measure_with(triton, frontend, settings)
    (out / "openai.json").write_text(json.dumps(result, indent=2))
    return result


def markdown(result: dict) -> str:
    d, o = result["direct_grpc"], result["openai"]
    s = result["settings"]

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    lines = [
        "## OpenAI frontend overhead (GPT-2, greedy, one stream at a time)",
        "",
        f"{s['rounds']} rounds of {s['new_tokens']} new tokens, each sent direct (gRPC streaming to gpt2_stream) "
        "and through `POST /v1/completions` (SSE), alternating in one run. Medians.",
        "",
        "| path | TTFT p50 (ms) | ITL p50 (ms) | tokens/s |",
        "|---|---|---|---|",
        f"| direct gRPC | {ms(d['ttft_ms_p50'])} | {ms(d['itl_ms_p50'])} | {d['tokens_per_s']:.1f} |",
        f"| OpenAI API | {ms(o['ttft_ms_p50'])} | {ms(o['itl_ms_p50'])} | {o['tokens_per_s']:.1f} |",
        f"| overhead | {ms(result['overhead_ttft_ms'])} | {ms(result.get('overhead_itl_ms'))} | |",
        "",
        f"Texts that differed between the paths: {result['mismatches']} (greedy: expected 0).",
        "",
    ]
    return "\n".join(lines)


def headline(result: dict) -> str:
    itl = result.get("overhead_itl_ms")
    itl_text = "-" if itl is None else f"{itl:+.1f} ms"
    return (
        f"OpenAI frontend vs direct gRPC: TTFT {result['openai']['ttft_ms_p50']:.1f} vs "
        f"{result['direct_grpc']['ttft_ms_p50']:.1f} ms ({result['overhead_ttft_ms']:+.1f} ms), ITL overhead {itl_text}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench_openai", description=__doc__)
    p.add_argument("--repository", type=Path, required=True, help="a built repository with the GPT-2 models")
    p.add_argument("--out", type=Path, default=Path("build/bench-openai"))
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    result = measure(args.repository, Settings.quick() if args.quick else Settings(), args.out)
    sys.stdout.write(markdown(result))
    return 1 if result["mismatches"] else 0


if __name__ == "__main__":
    sys.exit(main())
