"""GPT-2 benchmark: the client-side baseline loop against server-side generation, in one run.

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
    options = {"max_tokens": new_tokens, "stop": None}

    def one(_: int) -> client.Generation:
        return client.stream(url, prompt, **options)

    start = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        gens = list(pool.map(one, range(n)))
    wall = time.perf_counter() - start
    tokens = sum(g.completion_tokens for g in gens)
    return tokens / wall, statistics.median(g.ttft_s for g in gens), statistics.median(g.itl_s for g in gens)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench_gpt2", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
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
        build = [sys.executable, "-m", "builders", "gpt2", "--gpt2-size", "124m", "--out", str(repo)]
        sys.stderr.write(f"building the 124M-shaped stand-in into {repo}\n")
        subprocess.run(build, check=True, cwd=ROOT)
    tokenizer = repo / "gpt2_tokenizer" / "1" / "tokenizer.json"
    prompt = _prompt(tokenizer, args.prompt_tokens)
    rows = []
    with TritonServer(repo, args.http_port, args.grpc_port, args.metrics_port, ready_timeout=600) as server:
        client.generate(server.http_url, prompt, max_tokens=4)  # warm-up: sessions, caches, first allocations
        base, _ = client.baseline(server.http_url, prompt, tokenizer, args.new_tokens)
        per_token = base.total_s / max(1, base.completion_tokens)  # every token is one full round trip
        rows.append(("baseline client loop (no cache)", base.tokens_per_s, per_token, per_token))
        for n in (1, 4, 8):
            tps, ttft, itl = _streams(server.grpc_url, prompt, n, args.new_tokens)
            rows.append((f"server-side, {n} stream{'s' if n > 1 else ''}", tps, ttft, itl))
    single = rows[1][1]
    out = [f"GPT-2 benchmark: {args.prompt_tokens}-token prompt, {args.new_tokens} new tokens, repository {repo}",
           f"{'mode':<34} {'tok/s':>8} {'TTFT ms':>9} {'ITL ms':>8}"]  # fmt: skip
    out += [f"{name:<34} {tps:>8.1f} {ttft * 1000:>9.0f} {itl * 1000:>8.1f}" for name, tps, ttft, itl in rows]
    out.append(f"single stream / baseline: {single / rows[0][1]:.1f}x (target >= 3x)")
    out.append(f"8 streams / single stream: {rows[3][1] / single:.1f}x (target >= 2.5x); "
               f"ITL 8 streams / single: {rows[3][3] / rows[1][3]:.1f}x (target <= 3x)")  # fmt: skip
    sys.stdout.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
