"""genai-perf against gpt2_stream: NVIDIA's LLM benchmark, as a Triton user would run it, with its CSV and JSON kept.

    python -m loadtests.genai_perf                                  # starts a server on $MODEL_REPOSITORY
    python -m loadtests.genai_perf --url 127.0.0.1:8000 --grpc-url 127.0.0.1:8001 --concurrency 1,2,4,8
    python -m loadtests.genai_perf --quick                          # concurrency 1, 3 short requests (make test)

For each concurrency it runs, from the tool venv that `make perf-tools` fills (.venv-tools: genai-perf 0.0.16
and perf_analyzer 2.51):

    genai-perf profile -m gpt2_stream --endpoint-type kserve --backend tensorrtllm --streaming -u GRPC_URL
        --concurrency C --request-count N --synthetic-input-tokens-mean 16 --output-tokens-mean 64
        --output-tokens-mean-deterministic --tokenizer DIR ...

genai-perf sends TensorRT-LLM's tensors (text_input, max_tokens, exclude_input_in_output, stream and, with
deterministic lengths, min_length) over gRPC streaming, and counts tokens by re-tokenizing text_output with
--tokenizer: a folder made here from the served tokenizer.json. Its prompts are synthetic, cut from the
Shakespeare text it ships. Results go to --out (default loadtests/results/genai-perf/<timestamp>/): per
concurrency c<C>/<its artifact folder>/ with profile_export_genai_perf.csv and .json (and perf_analyzer's
profile_export.json), c<C>.log, and summary.md / summary.json. Where its definitions differ from
loadtests/bench_gpt2's: DEFINITIONS below (and docs/benchmarks-gpt2.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from loadtests import loadtest, perf
from loadtests.gpt2_floor import find_tokenizer
from serving.launcher import ServerError
from tritonyard_contract import EOS_TOKEN

VERSION = "0.0.16"
MODEL = "gpt2_stream"
EXPORT = "profile_export_genai_perf"
MISSING_TENSOR = "is not found in the model configuration"
DEFINITIONS = (
    "genai-perf and ours differ in what they time and count:",
    "- TTFT: both from sending the request to the first response. genai-perf takes perf_analyzer's C++ client "
    "timestamps; ours are Python tritonclient callbacks (loadtests/bench_gpt2.py).",
    "- ITL: genai-perf: (last response - first response) / (output tokens - 1) per request, averaged over "
    "requests; ours: the same formula (clients/lib/timing.py), median over streams.",
    "- Output tokens: genai-perf re-tokenizes the concatenated text_output with --tokenizer (the served "
    "tokenizer.json here); ours is the server's own count (num_output_tokens / completion_tokens). Text that "
    "re-tokenizes differently (merges across pieces, a held-back partial character) shifts genai-perf's count, "
    "and with it its ITL and tokens/s.",
    "- Output tokens/s: genai-perf: all output tokens / (last response - first request) over its whole "
    "measurement, a steady closed loop that starts a new request as soon as one ends; ours: the tokens of "
    "one wave of N streams started together / that wave's wall time (ramp-up and tail included).",
    "- Prompts: genai-perf: synthetic Shakespeare excerpts of the same token count, a different one per "
    "request; ours: one fixed prompt. Lengths: genai-perf sends min_length = max_tokens (deterministic); ours "
    "sends max_tokens only, so EOS can end a generation early.",
)


class ToolError(perf.ToolError):
    """genai-perf is missing or cannot run here; the message says how to fix it."""


@dataclass(frozen=True)
class Workload:
    """What each genai-perf run sends, and how many requests it measures."""

    input_tokens: int = 16
    output_tokens: int = 64
    request_count: int = 0  # per concurrency; 0: 3 x concurrency, at least 8
    deterministic: bool = True  # min_length = max_tokens: every request makes exactly output_tokens
    timeout_s: float = 600.0

    def requests(self, concurrency: int) -> int:
        return self.request_count or max(8, 3 * concurrency)


QUICK = Workload(input_tokens=8, output_tokens=8, request_count=3, timeout_s=300.0)


def find_genai_perf(venv: Path) -> tuple[Path, dict[str, str]]:
    """genai-perf in the tool venv and an environment where it finds perf_analyzer (and stays offline)."""
    venv = venv.resolve()  # genai-perf runs in its output folder
    binary = venv / "bin" / "genai-perf"
    if not binary.is_file():
        raise ToolError(f"{binary} not found: run `make perf-tools` (installs genai-perf=={VERSION})")
    try:
        _, env = perf.find_perf_analyzer(venv)
    except perf.ToolError as exc:
        raise ToolError(str(exc)) from exc
    env["PATH"] = os.pathsep.join((str(venv / "bin"), env.get("PATH", "")))
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TQDM_DISABLE="1")
    return binary, env


def tokenizer_dir(tokenizer_json: Path, out: Path) -> Path:
    """A folder transformers' AutoTokenizer loads offline: the served tokenizer.json plus a tokenizer_config.json."""
    folder = out / "tokenizer"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tokenizer_json, folder / "tokenizer.json")
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": EOS_TOKEN, "bos_token": EOS_TOKEN}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return folder


def command(binary: Path, grpc_url: str, concurrency: int, work: Workload, tokenizer: Path, artifacts: Path) -> list:
    """One `genai-perf profile` of gpt2_stream at one concurrency, artifacts under `artifacts`."""
    cmd = [
        str(binary),
        "profile",
        "-m",
        MODEL,
        "--endpoint-type",
        "kserve",
        "--backend",
        "tensorrtllm",
        "--streaming",
        "-u",
        grpc_url,
        "--concurrency",
        str(concurrency),
        "--request-count",
        str(work.requests(concurrency)),
        "--synthetic-input-tokens-mean",
        str(work.input_tokens),
        "--synthetic-input-tokens-stddev",
        "0",
        "--output-tokens-mean",
        str(work.output_tokens),
        "--output-tokens-stddev",
        "0",
        "--num-dataset-entries",
        str(max(work.requests(concurrency), 4)),
        "--random-seed",
        "0",
        "--tokenizer",
        str(tokenizer),
        "--artifact-dir",
        str(artifacts),
    ]
    return [*cmd, "--output-tokens-mean-deterministic"] if work.deterministic else cmd


def _stat(data: dict, metric: str, key: str = "avg") -> float | None:
    value = data.get(metric, {}).get(key)
    return float(value) if value is not None else None


def summarize(data: dict, concurrency: int) -> dict:
    """One row from genai-perf's JSON: its TTFT / ITL (avg and p50, ms), output tokens/s, tokens per request."""
    return {
        "concurrency": concurrency,
        "ttft_ms": _stat(data, "time_to_first_token"),
        "ttft_p50_ms": _stat(data, "time_to_first_token", "p50"),
        "itl_ms": _stat(data, "inter_token_latency"),
        "itl_p50_ms": _stat(data, "inter_token_latency", "p50"),
        "output_tok_s": _stat(data, "output_token_throughput"),
        "requests_s": _stat(data, "request_throughput"),
        "output_tokens": _stat(data, "output_sequence_length"),
        "input_tokens": _stat(data, "input_sequence_length"),
        "request_latency_ms": _stat(data, "request_latency"),
    }


def exports(artifacts: Path) -> tuple[Path, Path]:
    """genai-perf's CSV and JSON under `artifacts` (it adds a <model>-triton-tensorrtllm-concurrency<C> folder)."""
    found = sorted(artifacts.glob(f"**/{EXPORT}.json"))
    if not found:
        raise FileNotFoundError(f"no {EXPORT}.json under {artifacts}")
    return found[0].with_suffix(".csv"), found[0]


def _run(cmd: list[str], env: dict, log: Path, cwd: Path, timeout: float) -> int | str:
    """Run genai-perf in its own process group (it starts perf_analyzer); past `timeout` stop the group."""
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            return "timeout"


def _problem(concurrency: int, rc: int | str, log: Path) -> str:
    text = log.read_text(errors="replace")
    tail = "\n".join(text.strip().splitlines()[-4:])
    hint = f" ({MODEL} lacks a tensor genai-perf sends)" if MISSING_TENSOR in text else ""
    return f"genai-perf at concurrency {concurrency}: exit {rc}{hint}: {tail}"


def sweep(
    binary: Path, env: dict, grpc_url: str, concurrency: list[int], work: Workload, tokenizer: Path, out: Path
) -> tuple[list[dict], list[str]]:
    """genai-perf at each concurrency; (one summary row per concurrency that worked, problems)."""
    rows: list[dict] = []
    problems: list[str] = []
    for c in concurrency:
        artifacts, log = out / f"c{c}", out / f"c{c}.log"
        shutil.rmtree(artifacts, ignore_errors=True)
        sys.stderr.write(f"genai-perf {MODEL} concurrency {c}: {work.requests(c)} requests\n")
        cmd = command(binary, grpc_url, c, work, tokenizer, artifacts)
        rc = _run(cmd, env, log, out, work.timeout_s)
        try:
            csv_path, json_path = exports(artifacts)
        except FileNotFoundError:
            problems.append(_problem(c, rc, log))
            continue
        if rc != 0:
            problems.append(_problem(c, rc, log))
            continue
        row = summarize(json.loads(json_path.read_text()), c)
        rows.append({**row, "csv": str(csv_path.relative_to(out)), "json": str(json_path.relative_to(out))})
    return rows, problems


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(rows: list[dict]) -> str:
    """Markdown: genai-perf's figures per concurrency."""
    lines = [
        "| concurrency | TTFT avg ms | TTFT p50 ms | ITL avg ms | ITL p50 ms | output tok/s | requests/s | "
        "output tokens/request |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cells = [r["ttft_ms"], r["ttft_p50_ms"], r["itl_ms"], r["itl_p50_ms"], r["output_tok_s"], r["requests_s"]]
        lines.append(
            f"| {r['concurrency']} | " + " | ".join(_fmt(v) for v in cells) + f" | {_fmt(r['output_tokens'])} |"
        )
    return "\n".join(lines)


def run(
    grpc_url: str, repo: Path, concurrency: list[int], work: Workload, out: Path, venv: Path | None = None
) -> tuple[list[dict], list[str]]:
    """Everything `make genai-perf` does against a running server; also writes summary.md and summary.json."""
    binary, env = find_genai_perf(venv or perf.default_tools_venv())
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="genai-perf-tokenizer-") as tmp:
        tokenizer = tokenizer_dir(find_tokenizer(repo), Path(tmp))
        rows, problems = sweep(binary, env, grpc_url, concurrency, work, tokenizer, out)
    summary = {"workload": asdict(work), "model": MODEL, "genai_perf": VERSION, "rows": rows, "problems": problems}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(format_table(rows) + "\n\n" + "\n".join(DEFINITIONS) + "\n")
    return rows, problems


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="python -m loadtests.genai_perf", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--concurrency", type=perf._ints, default=None, help="comma list (default 1,2,4,8; --quick: 1)")
    p.add_argument("--quick", action="store_true", help="concurrency 1, 3 requests of 8 tokens (what make test runs)")
    p.add_argument("--input-tokens", type=int, help="synthetic prompt tokens (default 16)")
    p.add_argument("--output-tokens", type=int, help="tokens per request (default 64)")
    p.add_argument("--request-count", type=int, help="requests measured per concurrency (default 3 x C, >= 8)")
    p.add_argument("--no-deterministic", action="store_true", help="send no min_length: EOS may end requests early")
    p.add_argument("--url", default=env("TRITON_HTTP_URL"), help="HOST:PORT of a running server (HTTP)")
    p.add_argument("--grpc-url", default=env("TRITON_GRPC_URL"), help="its gRPC HOST:PORT (default HOST:8001)")
    p.add_argument("--repository", type=Path, default=Path(env("MODEL_REPOSITORY", "model_repository")))
    p.add_argument("--tools-venv", type=Path, default=perf.default_tools_venv(), help="where genai-perf lives")
    p.add_argument("--timeout", type=float, help="seconds allowed for one genai-perf run (default 600)")
    p.add_argument("--out", type=Path, help="output folder (default loadtests/results/genai-perf/<timestamp>/)")
    return p


def workload(args: argparse.Namespace) -> Workload:
    base = QUICK if args.quick else Workload()
    given = {
        "input_tokens": args.input_tokens,
        "output_tokens": args.output_tokens,
        "request_count": args.request_count,
        "timeout_s": args.timeout,
    }
    work = replace(base, **{k: v for k, v in given.items() if v is not None})
    return replace(work, deterministic=False) if args.no_deterministic else work


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    concurrency = args.concurrency or ([1] if args.quick else [1, 2, 4, 8])
    try:
        find_genai_perf(args.tools_venv)
    except ToolError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    out = args.out or loadtest.timestamped("genai-perf")
    out.mkdir(parents=True, exist_ok=True)
    try:
        with loadtest.serve(args.url, args.grpc_url, args.repository, out) as ep:
            rows, problems = run(ep.grpc_url, args.repository, concurrency, workload(args), out, args.tools_venv)
    except ServerError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    sys.stdout.write(f"{format_table(rows)}\n\n" + "\n".join(DEFINITIONS) + f"\nresults: {out}\n")
    if problems:
        sys.stderr.write("FAILED:\n" + "\n".join(f"  {p}" for p in problems) + "\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
