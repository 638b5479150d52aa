"""GPT-2 benchmark: the client-side baseline loop against server-side generation, in one run.

Clients never retry here: a refused request must fail the figures, not hide in them as latency.

Builds the 124M-shaped stand-in (unless --repository is given), starts a real tritonserver and
prints tokens/s, time to first token (TTFT) and inter-token latency (ITL) for: the --baseline
client loop, one stream, and 4 and 8 concurrent streams. Figures only; nothing here asserts speed.

    python -m loadtests.bench_gpt2 [--repository DIR] [--new-tokens 64] [--prompt-tokens 16]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from clients import gpt2 as client
from clients.lib import retry
from serving.launcher import TritonServer

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REPO = ROOT / "build" / "bench_gpt2_repository"
PROMPT_WORDS = "The oil level of the constant level oiler on pump seven was checked at noon and found".split()


def _prompt(tokenizer_path: Path, tokens: int) -> str:
    """A prompt of exactly `tokens` tokens for this tokenizer."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_path))
    words, text = PROMPT_WORDS * 8, ""
    for w in words:
        candidate = f"{text} {w}".strip()
        if len(tok.encode(candidate).ids) > tokens:
            break
        text = candidate
    return text


def _streams(url: str, prompt: str, n: int, new_tokens: int) -> tuple[float, float, float]:
    """n concurrent gRPC streams: (aggregate tok/s, median TTFT s, median ITL s)."""
    options = {"max_tokens": new_tokens, "stop": None, "retry_policy": retry.NO_RETRY}

    def one(_: int) -> client.Generation:
        return client.stream(url, prompt, **options)

    start = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        gens = list(pool.map(one, range(n)))
    wall = time.perf_counter() - start
    tokens = sum(g.completion_tokens for g in gens)
    return tokens / wall, statistics.median(g.ttft_s for g in gens), statistics.median(g.itl_s or 0.0 for g in gens)


def measure(server: TritonServer, repo: Path, new_tokens: int = 64, prompt_tokens: int = 16) -> list[dict]:
    """Rows of {mode, streams, tok_s, ttft_ms, itl_ms}: the baseline loop, then 1, 4 and 8 server-side streams."""
    tokenizer = repo / "gpt2_tokenizer" / "1" / "tokenizer.json"
    prompt = _prompt(tokenizer, prompt_tokens)
    # Warm-up: sessions, caches, first allocations.
    client.generate(server.http_url, prompt, max_tokens=4, retry_policy=retry.NO_RETRY)
    base, _ = client.baseline(server.http_url, prompt, tokenizer, new_tokens, retry_policy=retry.NO_RETRY)
    per_token = base.total_s / max(1, base.completion_tokens)  # every token is one full round trip
    rows = [_row("baseline client loop (no cache)", 1, base.tokens_per_s, per_token, per_token)]
    for n in (1, 4, 8):
        tps, ttft, itl = _streams(server.grpc_url, prompt, n, new_tokens)
        rows.append(_row(f"server-side, {n} stream{'s' if n > 1 else ''}", n, tps, ttft, itl))
    return rows


def _row(mode: str, streams: int, tok_s: float, ttft_s: float, itl_s: float) -> dict:
    return {"mode": mode, "streams": streams, "tok_s": tok_s, "ttft_ms": ttft_s * 1000, "itl_ms": itl_s * 1000}


def table(rows: list[dict]) -> list[str]:
    """The printed table and its headline ratios."""
    out = [f"{'mode':<34} {'tok/s':>8} {'TTFT ms':>9} {'ITL ms':>8}"]
    out += [f"{r['mode']:<34} {r['tok_s']:>8.1f} {r['ttft_ms']:>9.0f} {r['itl_ms']:>8.1f}" for r in rows]
    base, single, eight = rows[0], rows[1], rows[3]
    out.append(f"single stream / baseline: {single['tok_s'] / base['tok_s']:.1f}x (target >= 3x)")
    out.append(
        f"8 streams / single stream: {eight['tok_s'] / single['tok_s']:.1f}x (target >= 2.5x); "
        f"ITL 8 streams / single: {eight['itl_ms'] / single['itl_ms']:.1f}x (target <= 3x)"
    )
    return out


def build_124m(repo: Path) -> None:
    """The 124M-shaped random-weight stand-in (speed depends on the shape, not the weights), built by the builder."""
    build = [sys.executable, "-m", "builders", "gpt2", "--random-weights", "--gpt2-size", "124m", "--out", str(repo)]
    sys.stderr.write(f"building the 124M-shaped stand-in into {repo}\n")
    subprocess.run(build, check=True, cwd=ROOT)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.bench_gpt2", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--repository", type=Path, help="an already built repository (default: build the 124m stand-in)")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--prompt-tokens", type=int, default=16)
    p.add_argument("--http-port", type=int, default=8100)
    p.add_argument("--grpc-port", type=int, default=8101)
    p.add_argument("--metrics-port", type=int, default=8102)
    args = p.parse_args(argv)
    repo = args.repository
    if repo is None:
        repo = DEFAULT_REPO
        build_124m(repo)
    with TritonServer(repo, args.http_port, args.grpc_port, args.metrics_port, ready_timeout=600) as server:
        rows = measure(server, repo, args.new_tokens, args.prompt_tokens)
    head = f"GPT-2 benchmark: {args.prompt_tokens}-token prompt, {args.new_tokens} new tokens, repository {repo}"
    sys.stdout.write("\n".join([head, *table(rows)]) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
