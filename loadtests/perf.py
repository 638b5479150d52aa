"""perf_analyzer concurrency sweep over the four entry points, with its CSV output kept.

    python -m loadtests.perf                                   # starts a server on the repository itself
    python -m loadtests.perf --url 127.0.0.1:8000 --grpc-url 127.0.0.1:8001 --concurrency 1,2,4,8
    python -m loadtests.perf --quick --models gpt2             # concurrency 1, tiny windows (make test)

Measures, each at every concurrency:
  ensemble       FP32 frame through system shared memory (--shared-memory system), HTTP
  ensemble_jpeg  a real JPEG (base64 in --input-data JSON), HTTP
  gpt2           text_input + max_tokens (JSON), HTTP, whole text per request
  gpt2_stream    the same over gRPC --streaming; latency is to the first response (time to first token)

perf_analyzer comes from the tool venv that `make perf-tools` fills (.venv-tools). Inputs are generated
under build/perf_inputs/. Results go to --out (default loadtests/results/perf/<timestamp>/): one
<model>.csv per model (perf_analyzer's -f CSV, a row per concurrency), its logs, and summary.md.
Counting windows (--measurement-mode count_windows) keep slow CPU models measurable: a window closes
after --request-count requests, and results count once three windows agree within --stability percent.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import json
import os
import signal
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loadtests import loadtest
from serving.launcher import ServerError
from tritonyard_contract import FRAME, IMAGE_BYTES, MAX_TOKENS, PIPELINE_OUTPUTS, TEXT_INPUT

ROOT = Path(__file__).resolve().parent.parent
INPUTS = ROOT / "build" / "perf_inputs"
MODELS = ("ensemble", "ensemble_jpeg", "gpt2", "gpt2_stream")
VISION = ("ensemble", "ensemble_jpeg")
PROMPT = "The oil level in the"
# perf_analyzer gives every output region this size: the largest pipeline output (the 384x384 crop).
OUTPUT_SHM_BYTES = max(int(np.prod(t.dims)) * 4 for t in PIPELINE_OUTPUTS)
UNSTABLE = "Failed to obtain stable measurement"
ANY_STABILITY = 999.0  # perf_analyzer accepts any percentage: three windows, taken as they come
QUICK = {"concurrency": "1", "request_count": 3, "gpt2_request_count": 10, "stability": ANY_STABILITY, "max_trials": 3}


def default_tools_venv() -> Path:
    """$TOOLS_VENV, else .venv-tools in the project root (where `make perf-tools` installs)."""
    return Path(os.environ.get("TOOLS_VENV", str(ROOT / ".venv-tools")))


class ToolError(RuntimeError):
    """perf_analyzer is missing or cannot run here; the message says how to fix it."""


def find_perf_analyzer(venv: Path) -> tuple[Path, dict[str, str]]:
    """The binary in the tool venv and an environment with its libcudart.so.12 on LD_LIBRARY_PATH."""
    binary = venv / "bin" / "perf_analyzer"
    if not binary.is_file():
        raise ToolError(f"{binary} not found: run `make perf-tools`")
    libs = sorted(venv.glob("lib/python3*/site-packages/nvidia/cuda_runtime/lib"))
    if not libs:
        raise ToolError(f"no nvidia-cuda-runtime-cu12 in {venv}: run `make perf-tools`")
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(libs[0]), env.get("LD_LIBRARY_PATH", "")) if p)
    probe = subprocess.run([str(binary), "--version"], env=env, capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        raise ToolError(f"{binary} does not run here (libb64-0d missing? `make perf-tools`):\n{probe.stderr.strip()}")
    return binary, env


def _image_bytes(image: str) -> tuple[bytes, str]:
    """JPEG bytes of the synthetic frame (or the given file) and a short cache key for derived inputs."""
    if image == "synthetic":
        from clients.synthetic import synthetic_frame

        cached = INPUTS / "synthetic.jpg"
        if not cached.is_file():
            INPUTS.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            synthetic_frame().save(buf, "JPEG", quality=92)
            cached.write_bytes(buf.getvalue())
        return cached.read_bytes(), "synthetic"
    data = Path(image).read_bytes()
    return data, hashlib.sha1(data).hexdigest()[:12]


def write_inputs(image: str, max_tokens: int, prompt: str = PROMPT) -> dict[str, Path]:
    """perf_analyzer --input-data for each model, generated once under build/perf_inputs/."""
    from clients.lib import images

    data, key = _image_bytes(image)
    frame_dir = INPUTS / f"frame_{key}"
    raw = frame_dir / FRAME.name  # a directory of raw tensors, one file per input, named by the input
    if not raw.is_file():
        frame_dir.mkdir(parents=True, exist_ok=True)
        frame = images.to_frame(images.decode(data))  # FP32, C order
        frame.tofile(raw.with_suffix(".tmp"))
        raw.with_suffix(".tmp").rename(raw)
    # A BYTES tensor given as b64 must be serialized the Triton way: a 4-byte little-endian length first.
    jpeg_json = INPUTS / f"ensemble_jpeg_{key}.json"
    blob = base64.b64encode(struct.pack("<I", len(data)) + data).decode()
    jpeg_json.write_text(json.dumps({"data": [{IMAGE_BYTES.name: {"b64": blob}}]}))
    gpt2_json = INPUTS / f"gpt2_{max_tokens}.json"
    gpt2_json.write_text(json.dumps({"data": [{TEXT_INPUT.name: [prompt], MAX_TOKENS.name: [max_tokens]}]}))
    return {"ensemble": frame_dir, "ensemble_jpeg": jpeg_json, "gpt2": gpt2_json, "gpt2_stream": gpt2_json}


@dataclass(frozen=True)
class Window:
    """How perf_analyzer decides a measurement is done."""

    request_count: int
    stability: float
    max_trials: int


def pa_command(
    binary: Path,
    model: str,
    concurrency: int,
    http_url: str,
    grpc_url: str,
    input_data: Path,
    window: Window,
    csv_path: Path,
) -> list[str]:
    """One perf_analyzer run: `model` at one concurrency, CSV to `csv_path`."""
    cmd = [
        str(binary),
        "-m",
        model,
        "--concurrency-range",
        str(concurrency),
        "--input-data",
        str(input_data),
        "--measurement-mode",
        "count_windows",
        "--measurement-request-count",
        str(window.request_count),
        "--stability-percentage",
        str(window.stability),
        "--max-trials",
        str(window.max_trials),
        "-f",
        str(csv_path),
    ]
    if model == "gpt2_stream":
        return [*cmd, "-i", "grpc", "-u", grpc_url, "--streaming"]
    cmd += ["-i", "http", "-u", http_url]
    if model == "ensemble":
        cmd += ["--shared-memory", "system", "--output-shared-memory-size", str(OUTPUT_SHM_BYTES)]
    return cmd


def merge_csv(parts: list[Path], target: Path | None) -> list[dict]:
    """Concatenate perf_analyzer CSVs of one model (same header) into `target` (if given); the rows."""
    rows: list[dict] = []
    for part in parts:
        with part.open(newline="") as f:
            rows += list(csv.DictReader(f))
    if target is not None and rows:
        write_rows(rows, target)
    return rows


def write_rows(rows: list[dict], target: Path) -> None:
    """Rows with perf_analyzer's columns first (in its order), then any added here."""
    header = list(dict.fromkeys(k for r in rows for k in r))
    with target.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header, restval="")
        writer.writeheader()
        writer.writerows(rows)


def format_table(results: dict[str, list[dict]]) -> str:
    """Markdown: model, concurrency, throughput and client latency percentiles (ms).

    For gpt2_stream the latency is to the first response, and responses/s counts streamed pieces.
    "(unstable)": three windows never agreed within --stability; the figures are from three more.
    """
    lines = ["| model | concurrency | infer/s | responses/s | p50 ms | p90 ms | p99 ms |"]
    lines.append("|---|---:|---:|---:|---:|---:|---:|")
    for model, rows in results.items():
        for r in rows:
            ms = [float(r[f"p{p} latency"]) / 1000 for p in (50, 90, 99)]
            responses = f"{float(r['Response Throughput']):.1f}" if r.get("Response Throughput") else "-"
            mark = " (unstable)" if r.get("unstable") else ""
            lines.append(
                f"| {model} | {r['Concurrency']}{mark} | {float(r['Inferences/Second']):.2f} | {responses} | "
                f"{ms[0]:.1f} | {ms[1]:.1f} | {ms[2]:.1f} |"
            )
    return "\n".join(lines)


def _run_pa(cmd: list[str], env: dict, log: Path, timeout: float, http_url: str) -> int | str:
    """Run perf_analyzer; past `timeout` stop it (SIGINT, then SIGKILL plus dropping its shm registrations)."""
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)  # its early-exit signal: let its own cleanup run before a kill
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                _unregister_shm(http_url)
            return "timeout"


def _unregister_shm(http_url: str) -> None:
    """Drop every system shared-memory registration a killed perf_analyzer left on the server."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(http_url)
    try:
        client.unregister_system_shared_memory()
    except Exception as exc:  # noqa: BLE001 - best effort after a failure that is reported anyway
        sys.stderr.write(f"  could not unregister shared memory on {http_url}: {exc}\n")
    finally:
        client.close()


def sweep(
    binary: Path,
    env: dict,
    models: list[str],
    concurrency: list[int],
    http_url: str,
    grpc_url: str,
    inputs: dict[str, Path],
    windows: dict[str, Window],
    out: Path,
    timeout: float,
) -> tuple[dict[str, list[dict]], list[str]]:
    """Run every model at every concurrency; (rows per model, problems).

    A point that never settles within --stability (a busy shared machine) is measured once more
    with three windows taken as they come; its row gets `unstable` = the stability it missed.
    Any other perf_analyzer failure (refused requests, timeouts) is a problem.
    """
    results: dict[str, list[dict]] = {}
    problems: list[str] = []
    for model in models:
        rows: list[dict] = []
        for c in concurrency:
            part, log = out / f"{model}_c{c}.csv", out / f"{model}_c{c}.log"
            window = windows[model]
            sys.stderr.write(f"perf_analyzer {model} concurrency {c}\n")
            cmd = pa_command(binary, model, c, http_url, grpc_url, inputs[model], window, part)
            rc = _run_pa(cmd, env, log, timeout, http_url)
            unstable = rc != 0 and UNSTABLE in log.read_text(errors="replace")
            if unstable:
                sys.stderr.write(
                    f"  not stable within {window.stability:g}% in {window.max_trials} windows: "
                    "measuring once more without the stability test\n"
                )
                log = out / f"{model}_c{c}_unstable.log"
                loose = Window(window.request_count, ANY_STABILITY, 3)
                cmd = pa_command(binary, model, c, http_url, grpc_url, inputs[model], loose, part)
                rc = _run_pa(cmd, env, log, timeout, http_url)
            if rc != 0 or not part.is_file():
                tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-3:])
                problems.append(f"{model} at concurrency {c}: perf_analyzer exit {rc}: {tail}")
                continue
            rows += [{**r, "unstable": f"{window.stability:g}%" if unstable else ""} for r in merge_csv([part], None)]
        results[model] = rows
        if rows:
            write_rows(rows, out / f"{model}.csv")
    return results, problems


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected e.g. 1,2,4") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: concurrencies are positive integers")
    return values


def _models(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    unknown = sorted(set(names) - set(MODELS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown model(s) {unknown}: choose from {', '.join(MODELS)}")
    return names


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="python -m loadtests.perf", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", type=_models, default=list(MODELS), help="comma list (default: all four)")
    p.add_argument("--concurrency", type=_ints, default=None, help="comma list (default 1,2,4; --quick: 1)")
    p.add_argument("--request-count", type=int, help="requests per window, vision (default 10)")
    p.add_argument("--gpt2-request-count", type=int, help="requests per window, gpt2 models (default 50)")
    p.add_argument("--stability", type=float, help="percent the last three windows may differ (default 25)")
    p.add_argument("--max-trials", type=int, help="windows before giving up on stability (default 10)")
    p.add_argument("--quick", action="store_true", help="concurrency 1, 3-request windows, any stability")
    p.add_argument("--max-tokens", type=int, default=16, help="gpt2 tokens per request")
    p.add_argument("--image", default="synthetic", help='JPEG/PNG for the vision models, or "synthetic"')
    p.add_argument("--url", default=env("TRITON_HTTP_URL"), help="HOST:PORT of a running server (HTTP)")
    p.add_argument("--grpc-url", default=env("TRITON_GRPC_URL"), help="its gRPC HOST:PORT (default HOST:8001)")
    p.add_argument("--repository", type=Path, default=Path(env("MODEL_REPOSITORY", "model_repository")))
    p.add_argument("--tools-venv", type=Path, default=default_tools_venv(), help="where perf_analyzer lives")
    p.add_argument("--timeout", type=float, default=900, help="seconds allowed for one perf_analyzer run")
    p.add_argument("--out", type=Path, help="output folder (default loadtests/results/perf/<timestamp>/)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    base = (
        QUICK
        if args.quick
        else {
            "concurrency": "1,2,4",
            "request_count": 10,
            "gpt2_request_count": 50,
            "stability": 25.0,
            "max_trials": 10,
        }
    )
    concurrency = args.concurrency or _ints(base["concurrency"])
    stability = base["stability"] if args.stability is None else args.stability
    trials = args.max_trials or base["max_trials"]
    vision = Window(args.request_count or base["request_count"], stability, trials)
    text = Window(args.gpt2_request_count or base["gpt2_request_count"], stability, trials)
    windows = {m: vision if m in VISION else text for m in MODELS}
    try:
        binary, env = find_perf_analyzer(args.tools_venv)
    except ToolError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    out = args.out or loadtest.timestamped("perf")
    out.mkdir(parents=True, exist_ok=True)
    inputs = write_inputs(args.image, args.max_tokens)
    try:
        with loadtest.serve(args.url, args.grpc_url, args.repository, out) as ep:
            results, problems = sweep(
                binary, env, args.models, concurrency, ep.http_url, ep.grpc_url, inputs, windows, out, args.timeout
            )
    except ServerError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    table = format_table(results)
    (out / "summary.md").write_text(table + "\n")
    sys.stdout.write(f"{table}\nresults: {out}\n")
    if problems:
        sys.stderr.write("FAILED:\n" + "\n".join(f"  {p}" for p in problems) + "\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
