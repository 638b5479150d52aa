"""GPT-2 benchmark: the in-process floor, served streams, genai-perf beside them, and the server's RSS, in one run.

Clients never retry here: a refused request must fail the figures, not hide in them as latency.

Builds the 124M-shaped stand-in (unless --repository is given), starts a real tritonserver with no model
loaded, reads its RSS, loads the GPT-2 models, reads it again, then measures: the compute floor (the served
decoder's model.onnx in an in-process onnxruntime greedy loop with a KV cache, loadtests/gpt2_floor.py) taking
turns with one gRPC stream of gpt2_stream, so both see the same machine load; 4 and 8 concurrent streams
(tokens/s, TTFT, ITL); genai-perf at 1, 4 and 8 (loadtests/genai_perf.py); and the RSS once more. Prints the
ratios against their goals (GOALS). Figures only; nothing here asserts speed.

    python -m loadtests.bench_gpt2 [--repository DIR] [--new-tokens 64] [--prompt-tokens 16] [--no-genai-perf]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from clients import gpt2 as client
from clients.lib import retry
from loadtests import genai_perf as gp
from loadtests import gpt2_floor, loadtest, perf, soak
from serving.launcher import TritonServer, free_ports
from serving.supervisor import TritonAdmin

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REPO = ROOT / "build" / "bench_gpt2_repository"
PROMPT_WORDS = "The oil level of the constant level oiler on pump seven was checked at noon and found".split()
# (key, label, goal, True when the ratio must be at least the goal; False: at most)
GOALS = (
    ("floor", "served 1 stream / in-process floor, tokens/s", 0.9, True),
    ("scaling", "aggregate tokens/s, 8 streams / 1 stream", 4.0, True),
    ("itl", "ITL at 8 streams / ITL at 1 stream", 2.0, False),
)


@dataclass(frozen=True)
class Settings:
    """What one GPT-2 benchmark measures; quick() touches every path in seconds (make test)."""

    new_tokens: int = 64
    prompt_tokens: int = 16
    rounds: int = 3  # waves of N streams per concurrency (and floor generations)
    streams: tuple[int, ...] = (1, 4, 8)
    genai: gp.Workload | None = field(default_factory=gp.Workload)
    genai_concurrency: tuple[int, ...] = (1, 4, 8)

    @classmethod
    def quick(cls) -> Settings:
        work = gp.Workload(input_tokens=8, output_tokens=8, request_count=2, timeout_s=300.0)
        return cls(new_tokens=8, prompt_tokens=8, rounds=1, genai=work, genai_concurrency=(1,))


def prompt_of(tokenizer_path: Path, tokens: int) -> str:
    """A prompt of at most `tokens` tokens (as many whole words as fit) for this tokenizer."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_path))
    text = ""
    for w in PROMPT_WORDS * 8:
        candidate = f"{text} {w}".strip()
        if len(tok.encode(candidate).ids) > tokens:
            break
        text = candidate
    return text


def wave(url: str, prompt: str, n: int, new_tokens: int) -> tuple[list[client.Generation], float]:
    """n concurrent gRPC streams started together: their generations and the wave's wall time."""
    options = {"max_tokens": new_tokens, "stop": None, "retry_policy": retry.NO_RETRY}
    with ThreadPoolExecutor(n) as pool:
        start = time.perf_counter()
        gens = list(pool.map(lambda _: client.stream(url, prompt, **options), range(n)))
        return gens, time.perf_counter() - start


def streams(waves: list[tuple[list[client.Generation], float]]) -> dict:
    """Waves of n streams: aggregate tok/s over all of them, median TTFT and ITL (ms)."""
    gens = [g for wave_gens, _ in waves for g in wave_gens]
    wall = sum(w for _, w in waves)
    n = len(waves[0][0])
    tokens = sum(g.completion_tokens for g in gens)
    itls = [g.itl_s for g in gens if g.itl_s is not None]
    return {
        "streams": n,
        "tok_s": tokens / wall,
        "ttft_ms": statistics.median(g.ttft_s for g in gens) * 1000,
        "itl_ms": statistics.median(itls) * 1000 if itls else float("nan"),
        "tokens_per_stream": tokens / len(gens),
        "generations": len(gens),
    }


# --- the server, its GPT-2 models and its memory ---------------------------------------------------------


def server_rss(server: TritonServer) -> dict:
    """VmRSS (MB) of tritonserver and of its Python stubs; shared pages count in each process that maps them."""
    procs = soak.server_processes(server.process.pid)
    mb = {label: (soak.read_rss_kb(pid) or 0) / 1024 for label, pid in procs.items()}
    server_mb = mb.pop(soak.SERVER_LABEL)
    stubs_mb = sum(mb.values())
    return {"server_mb": server_mb, "stubs_mb": stubs_mb, "stubs": len(mb), "total_mb": server_mb + stubs_mb}


def gpt2_models(admin: TritonAdmin) -> list[str]:
    """The repository's GPT-2 models (named gpt2*), as Triton's repository index lists them."""
    return sorted({e["name"] for e in admin.index() if e.get("name", "").startswith("gpt2")})


def load_all(admin: TritonAdmin, models: list[str]) -> None:
    """Load each model; one that fails (a dependency not loaded yet) is tried again after the others."""
    failed: list[str] = []
    for model in models:
        try:
            admin.load(model)
        except RuntimeError:
            failed.append(model)
    for model in failed:
        admin.load(model)


@contextlib.contextmanager
def gpt2_server(repo: Path, log: Path | None) -> Iterator[tuple[TritonServer, dict]]:
    """A tritonserver with no model loaded (RSS read), then with the GPT-2 models loaded (read again)."""
    ports = free_ports(3)
    bare = TritonServer(repo, *ports, log_file=log, ready_timeout=600, extra_args=("--model-control-mode=explicit",))
    with bare as server:
        rss = {"before_load": server_rss(server)}
        admin = TritonAdmin(server.http_url, server.admin_key, timeout=600)
        models = gpt2_models(admin)
        load_all(admin, models)
        time.sleep(1.0)  # let the stubs finish their first allocations
        rss["after_load"] = server_rss(server)
        rss["models"] = models
        yield server, rss


# --- the run ----------------------------------------------------------------------------------------------


def measure(repo: Path, settings: Settings, out: Path) -> dict:
    """Every GPT-2 figure for `repo`; genai-perf's files go to out/genai-perf/."""
    out.mkdir(parents=True, exist_ok=True)
    prompt = prompt_of(gpt2_floor.find_tokenizer(repo), settings.prompt_tokens)
    floor = gpt2_floor.Floor(repo, prompt)
    results: dict = {"settings": _settings_dict(settings), "prompt": prompt}
    with gpt2_server(repo, out / "tritonserver_gpt2.log") as (server, rss):
        url, tokens = server.grpc_url, settings.new_tokens
        client.stream(url, prompt, max_tokens=4, retry_policy=retry.NO_RETRY)  # warm-up
        single = []
        for _ in range(settings.rounds):  # the floor and one stream take turns: both see the same machine load
            floor.run(tokens)
            single.append(wave(url, prompt, 1, tokens))
        results["floor"] = floor.summary().as_dict()
        del floor  # its session's memory and threads
        rows = [streams(single)]
        rows += [streams([wave(url, prompt, n, tokens) for _ in range(settings.rounds)]) for n in settings.streams[1:]]
        for r in rows:
            sys.stderr.write(f"bench_gpt2: {r['streams']} stream(s): {r['tok_s']:.1f} tok/s\n")
        results["served"] = rows
        results["genai_perf"] = _genai_perf(server, repo, settings, out / "genai-perf")
        rss["after_run"] = server_rss(server)
        results["rss"] = rss
    results["ratios"] = ratios(results)
    return results


def _settings_dict(settings: Settings) -> dict:
    d = {k: v for k, v in settings.__dict__.items() if k != "genai"}
    d["genai"] = None if settings.genai is None else settings.genai.__dict__
    return d


def _genai_perf(server: TritonServer, repo: Path, settings: Settings, out: Path) -> dict:
    """genai-perf's rows at settings.genai_concurrency; skipped (with the reason) where it is not installed."""
    if settings.genai is None:
        return {"rows": [], "problems": [], "skipped": "--no-genai-perf"}
    try:
        gp.find_genai_perf(perf.default_tools_venv())
    except perf.ToolError as exc:
        return {"rows": [], "problems": [], "skipped": str(exc)}
    rows, problems = gp.run(server.grpc_url, repo, list(settings.genai_concurrency), settings.genai, out)
    return {"rows": rows, "problems": problems, "skipped": None, "out": str(out)}


def _served(results: dict, n: int) -> dict:
    return next(r for r in results["served"] if r["streams"] == n)


def ratios(results: dict) -> dict:
    """The three goal ratios, each {value, goal, at_least, met, detail}."""
    floor, one = results["floor"], _served(results, 1)
    eight = _served(results, max(r["streams"] for r in results["served"]))
    values = {
        "floor": (one["tok_s"] / floor["tok_s"], f"{one['tok_s']:.1f} vs {floor['tok_s']:.1f} tok/s"),
        "scaling": (eight["tok_s"] / one["tok_s"], f"{eight['tok_s']:.1f} vs {one['tok_s']:.1f} tok/s"),
        "itl": (eight["itl_ms"] / one["itl_ms"], f"{eight['itl_ms']:.1f} vs {one['itl_ms']:.1f} ms"),
    }
    out = {}
    for key, label, goal, at_least in GOALS:
        value, detail = values[key]
        met = value >= goal if at_least else value <= goal
        out[key] = {"label": label, "value": value, "goal": goal, "at_least": at_least, "met": met, "detail": detail}
    return out


def table(results: dict) -> list[str]:
    """The printed figures: floor and served rows, genai-perf's beside, ratios against goals, RSS."""
    f = results["floor"]
    out = [f"{'mode':<34} {'tok/s':>8} {'TTFT ms':>9} {'ITL ms':>8}"]
    out.append(f"{'in-process floor (onnxruntime)':<34} {f['tok_s']:>8.1f} {f['ttft_ms']:>9.1f} {f['itl_ms']:>8.1f}")
    for r in results["served"]:
        mode = f"served, {r['streams']} stream{'s' if r['streams'] > 1 else ''}"
        out.append(f"{mode:<34} {r['tok_s']:>8.1f} {r['ttft_ms']:>9.1f} {r['itl_ms']:>8.1f}")
    g = results["genai_perf"]
    for r in g["rows"]:
        mode = f"genai-perf, concurrency {r['concurrency']}"
        out.append(f"{mode:<34} {r['output_tok_s']:>8.1f} {r['ttft_ms']:>9.1f} {r['itl_ms'] or float('nan'):>8.1f}")
    if g.get("skipped"):
        out.append(f"genai-perf skipped: {g['skipped']}")
    out += [f"genai-perf FAILED: {p}" for p in g["problems"]]
    for r in results["ratios"].values():
        sign = ">=" if r["at_least"] else "<="
        verdict = "met" if r["met"] else "MISSED"
        out.append(f"{r['label']}: {r['value']:.2f}x (goal {sign} {r['goal']:g}x: {verdict}) - {r['detail']}")
    out.append(rss_line(results["rss"]))
    return out


def rss_line(rss: dict) -> str:
    def one(key: str) -> str:
        r = rss[key]
        return f"{r['total_mb']:.0f} MB (tritonserver {r['server_mb']:.0f} + {r['stubs']} stubs {r['stubs_mb']:.0f})"

    return (
        f"server RSS: before loading {one('before_load')}; after loading {', '.join(rss['models'])}: "
        f"{one('after_load')}; after the run {one('after_run')}"
    )


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
    p.add_argument("--rounds", type=int, default=3, help="waves of streams per concurrency, and floor runs")
    p.add_argument("--no-genai-perf", action="store_true", help="skip genai-perf")
    p.add_argument("--out", type=Path, help="output folder (default loadtests/results/bench-gpt2/<time>/)")
    args = p.parse_args(argv)
    repo = args.repository
    if repo is None:
        repo = DEFAULT_REPO
        build_124m(repo)
    work = None if args.no_genai_perf else gp.Workload(args.prompt_tokens, args.new_tokens)
    settings = Settings(args.new_tokens, args.prompt_tokens, args.rounds, genai=work)
    out = args.out or loadtest.timestamped("bench-gpt2")
    results = measure(repo, settings, out)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    head = f"GPT-2 benchmark: {args.prompt_tokens}-token prompt, {args.new_tokens} new tokens, repository {repo}"
    sys.stdout.write("\n".join([head, *table(results), f"results: {out}"]) + "\n")
    return 1 if results["genai_perf"]["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
