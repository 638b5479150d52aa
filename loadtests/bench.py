"""`make bench`: every figure of the benchmark report, measured in one run on this machine.

    python -m loadtests.bench                 # full run, about 12 minutes on 2 CPU cores
    python -m loadtests.bench --quick         # every path for a few seconds (make test runs it)

Builds the repository with the project's builder (vision + GPT-2, with `make tune`'s flags from
loadtests/tuning/cpu.args when present; the variant with dynamic batching off is the builder's configs
for that flag over the same exported models), starts a real tritonserver, and measures: the vision
transports, served throughput against the in-process onnxruntime floor, the latency budget of each
entry point at concurrency 1 and 4 (loadtests/profile_vision), batching on/off, a FastAPI + onnxruntime
server given the same payloads and running the same ONNX files with the same threads, first-request
latency after a load (loadtests/bench_warmup, where present), and GPT-2 generation (loadtests/bench_gpt2:
against its in-process floor, at 1/4/8 streams, genai-perf beside ours, and the server's RSS). Writes
report.md (with the targets' verdicts), results.json and PNG plots to loadtests/results/<date>/ (or
--out). Speed targets are printed, never asserted; any failed or wrong response makes the run fail,
because then its figures mean nothing.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import logging
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from builders.triton_config import read_config
from clients.lib import images
from clients.synthetic import synthetic_frame
from loadtests import bench_batch, bench_gpt2, bench_openai, profile_vision, report
from loadtests import bench_vision as bv
from serving.launcher import TritonServer, free_ports

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "bench"
TUNED = ROOT / "loadtests" / "tuning" / "cpu.args"  # `make tune`'s chosen builder flags, when it has run


@dataclass(frozen=True)
class Plan:
    """How many requests each measurement gets; --quick shrinks everything to touch every path."""

    floor_requests: int
    transport_requests: int
    json_requests: int
    per_worker: int  # requests per worker in the concurrency sweeps
    concurrency: tuple[int, ...]
    batching_concurrency: int
    baseline_concurrency: int
    gpt2_size: str
    gpt2_new_tokens: int
    budget_per_worker: int  # traced requests per client for the latency budget, at concurrency 1 and 4
    smoke: bool = False  # quick(): the GPT-2 part in its quick mode too

    @classmethod
    def full(cls) -> Plan:
        return cls(10, 8, 2, 6, (1, 2, 4), 8, 4, "124m", 64, 4)

    @classmethod
    def quick(cls) -> Plan:
        return cls(1, 1, 1, 1, (1, 4), 8, 4, "tiny", 8, 1, smoke=True)

    def gpt2(self) -> bench_gpt2.Settings:
        """The GPT-2 part: floor, 1/4/8 streams, genai-perf beside them, the server's RSS (loadtests/bench_gpt2)."""
        return bench_gpt2.Settings.quick() if self.smoke else bench_gpt2.Settings(new_tokens=self.gpt2_new_tokens)


# --- setup -------------------------------------------------------------------------------------------


def _build(args: list[str], what: str) -> None:
    started = time.perf_counter()
    tuned = [f"@{TUNED}"] if TUNED.is_file() else []
    sys.stderr.write(f"bench: building {what}{' with ' + str(TUNED.relative_to(ROOT)) if tuned else ''}\n")
    subprocess.run([sys.executable, "-m", "builders", *args, *tuned], check=True, cwd=ROOT)
    sys.stderr.write(f"bench: built {what} in {time.perf_counter() - started:.0f}s\n")


def build_main(plan: Plan, out: Path) -> Path:
    """The served repository: vision (trained stand-ins) + GPT-2 (the random-weight stand-in --gpt2-size picks:
    124M-shaped, or tiny in quick mode)."""
    repo = out / "repository"
    _build(["all", "--gpt2-size", plan.gpt2_size, "--out", str(repo)], f"vision + gpt2 {plan.gpt2_size}")
    return repo


def build_nobatch(main: Path, out: Path) -> Path:
    """The vision variant with dynamic batching off: the builder's configs for its `--no-dynamic-batching` flag
    (and the tuned flags), rendered over `main`'s exported models (loadtests/tune.render)."""
    from loadtests import tune

    repo = out / "repository_nobatch"
    tuned = [f"@{TUNED}"] if TUNED.is_file() else []
    tune.render(main, repo, [*tuned, "--no-dynamic-batching"])
    return repo


def reference(repo: Path) -> tuple[bv.Reference, bv.InProcessChain]:
    """A synthetic 4K camera frame, its JPEG, and what the in-process chains answer for each: the FP32 chain
    for the frame, ensemble_jpeg's `_u8` chain for the JPEG decoded as its image_decoder does."""
    buf = io.BytesIO()
    synthetic_frame(seed=3).save(buf, "JPEG", quality=90)
    image = images.decode(buf.getvalue())
    frame = images.to_frame(image)
    chain = bv.InProcessChain(repo)
    from_jpeg = bv.InProcessChain(repo, u8=True).expected(images.to_frame_u8(image))
    return bv.Reference(frame, buf.getvalue(), chain.expected(frame), from_jpeg), chain


def machine(repo: Path, triton_version: str) -> dict:
    """What the figures were measured on."""
    import numpy
    import onnxruntime

    gpu = subprocess.run(["sh", "-c", "nvidia-smi -L"], capture_output=True, text=True)
    onnx_sizes = {p.parent.parent.name: p.stat().st_size for p in sorted(repo.glob("*/1/model.onnx"))}
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "gpu": gpu.stdout.strip() if gpu.returncode == 0 and gpu.stdout.strip() else "none",
        "triton": triton_version,
        "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__,
        "python": sys.version.split()[0],
        "model_onnx_bytes": onnx_sizes,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def _triton_version(server: TritonServer) -> str:
    with urllib.request.urlopen(f"http://{server.http_url}/v2", timeout=10) as r:
        return json.load(r)["version"]


def _server(repo: Path, out: Path, name: str) -> TritonServer:
    ports = free_ports(3)
    return TritonServer(repo, *ports, log_file=out / f"{name}.log", ready_timeout=600)


# --- the measurements ---------------------------------------------------------------------------------


def measure_triton(plan: Plan, repo: Path, ref: bv.Reference, out: Path, results: dict) -> None:
    """Transports at concurrency 1, the concurrency sweep, and batching on at c=8."""
    with _server(repo, out, "tritonserver") as server:
        results["machine"]["triton"] = _triton_version(server)
        http, grpc = server.http_url, server.grpc_url
        senders = {
            "http_json": lambda: bv.http_sender(http, ref, binary=False),
            "http_binary": lambda: bv.http_sender(http, ref, binary=True),
            "grpc": lambda: bv.grpc_sender(grpc, ref),
            "shm": lambda: bv.shm_sender(http, ref),
            "jpeg": lambda: bv.jpeg_sender(http, ref),
        }
        for kind, factory in senders.items():
            n = plan.json_requests if kind == "http_json" else plan.transport_requests
            run = _measure(f"transport {kind}", factory, 1, n)
            run.payload_bytes = bv.request_bytes(kind, ref)
            results["transports"][kind] = run.as_dict()
        for kind in ("shm", "jpeg", "http_binary"):
            for c in plan.concurrency:
                run = _measure(f"served {kind} c={c}", senders[kind], c, plan.per_worker * c)
                results["served"].setdefault(kind, []).append(run.as_dict())
        best = report.best_entry(results)
        c = plan.batching_concurrency
        results["batching"]["entry"] = best
        before = _batch_stats(server)
        on = _measure(f"batching on {best} c={c}", senders[best], c, plan.per_worker * c)
        results["batching"]["on"] = on.as_dict()
        results["batching"]["on_stats"] = _batch_stats(server, since=before)


def measure_nobatch(plan: Plan, repo: Path, ref: bv.Reference, out: Path, results: dict) -> None:
    """The same pipeline and entry point at the same concurrency, dynamic batching off (builder flag)."""
    best, c = results["batching"]["entry"], plan.batching_concurrency
    with _server(repo, out, "tritonserver_nobatch") as server:
        factory = {
            "shm": lambda: bv.shm_sender(server.http_url, ref),
            "jpeg": lambda: bv.jpeg_sender(server.http_url, ref),
            "http_binary": lambda: bv.http_sender(server.http_url, ref, binary=True),
        }[best]
        before = _batch_stats(server)
        results["batching"]["off"] = _measure(f"batching off {best} c={c}", factory, c, plan.per_worker * c).as_dict()
        results["batching"]["off_stats"] = _batch_stats(server, since=before)


def measure_fastapi(plan: Plan, repo: Path, ref: bv.Reference, out: Path, results: dict) -> None:
    """The FastAPI + onnxruntime baseline, the same payloads at the same concurrencies."""
    [port] = free_ports(1)
    cmd = [sys.executable, "-m", "loadtests.baselines.fastapi_server", "--repository", str(repo), "--port", str(port)]
    with (out / "fastapi.log").open("w") as sink:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", proc)
        url = f"127.0.0.1:{port}"
        for kind, jpeg in (("fastapi_binary", False), ("fastapi_jpeg", True)):
            for c in plan.concurrency:
                factory = lambda jpeg=jpeg: bv.fastapi_sender(url, ref, jpeg=jpeg)  # noqa: E731
                run = _measure(f"{kind} c={c}", factory, c, plan.per_worker * c)
                results["fastapi"].setdefault(kind, []).append(run.as_dict())
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def measure_warmup(plan: Plan, repo: Path, out: Path) -> dict | None:
    """First request after a load against steady state, per entry point (loadtests/bench_warmup), where present."""
    try:
        from loadtests import bench_warmup
    except ImportError:
        return None
    return bench_warmup.measure(repo, out / "warmup", quick=plan.smoke)


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the FastAPI baseline exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the FastAPI baseline did not answer {url} within {timeout:.0f}s")


def _measure(label: str, factory: bv.SenderFactory, concurrency: int, requests: int) -> bv.Run:
    run = bv.closed_loop(label, factory, concurrency, requests=requests)
    sys.stderr.write(
        f"bench: {label:<32} {run.throughput:6.2f}/s  p50 {run.pct_ms(50):7.0f} ms  p99 {run.pct_ms(99):7.0f} ms"
        f"  errors {run.errors}{'  ' + run.first_error if run.errors else ''}\n"
    )
    return run


def vision_steps(repo: Path) -> list[str]:
    """The models the two vision ensembles of `repo` chain, read from their configs."""
    steps: list[str] = []
    for ensemble in ("ensemble_jpeg", "ensemble"):
        for step in read_config(repo / ensemble / "config.pbtxt").ensemble_scheduling.step:
            if step.model_name not in steps:
                steps.append(step.model_name)
    return steps


def _batch_stats(server: TritonServer, since: dict | None = None) -> dict:
    """Inference and execution counts per step (minus `since`): requests per execution shows real batching."""
    stats = {}
    for model in vision_steps(server.repository):
        with urllib.request.urlopen(f"http://{server.http_url}/v2/models/{model}/stats", timeout=10) as r:
            s = json.load(r)["model_stats"][0]
        base = (since or {}).get(model, {"inferences": 0, "executions": 0})
        stats[model] = {
            "inferences": int(s["inference_count"]) - base["inferences"],
            "executions": int(s["execution_count"]) - base["executions"],
        }
    return stats


# --- main ---------------------------------------------------------------------------------------------


def run(plan: Plan, out: Path, repo: Path | None, nobatch: Path | None) -> dict:
    """Measure everything into `out`; returns the results dict (also written as results.json)."""
    out.mkdir(parents=True, exist_ok=True)
    build_dir = BUILD if out.is_relative_to(ROOT) else out / "build"
    repo = repo or build_main(plan, build_dir)
    nobatch = nobatch or build_nobatch(repo, build_dir)
    ref, chain = reference(repo)
    results: dict = {"plan": plan.__dict__, "transports": {}, "served": {}, "batching": {}, "fastapi": {}}
    results["machine"] = machine(repo, "?")
    results["reference_oil_pct"] = ref.oil_pct
    results["floor"] = bv.floor_run(chain, ref, plan.floor_requests).as_dict()
    del chain  # its sessions' threads must not compete with the servers
    sys.stderr.write(f"bench: in-process floor {results['floor']['throughput_per_s']:.2f} frames/s\n")
    measure_triton(plan, repo, ref, out, results)
    # The latency budget on a server of its own: tracing every request and timing the stubs costs a little.
    results["budget"] = profile_vision.measure(
        repo, ref, out / "budget", per_worker=plan.budget_per_worker, twin_requests=plan.floor_requests
    )
    sys.stderr.write("bench: latency budget (ms per request)\n" + profile_vision.text(results["budget"]))
    measure_nobatch(plan, nobatch, ref, out, results)
    measure_fastapi(plan, repo, ref, out, results)
    # A folder of frames through `python -m clients.clo --batch`, against the closed loop (loadtests/bench_batch).
    results["batch"] = bench_batch.bench_step(repo, ref, results["served"]["jpeg"], out / "batch", plan.smoke)
    results["warmup"] = measure_warmup(plan, repo, out)
    # GPT-2 on a server of its own: its RSS before and after loading the GPT-2 models means something there.
    results["gpt2"] = bench_gpt2.measure(repo, plan.gpt2(), out / "gpt2")
    # The OpenAI frontend against direct gRPC streaming, interleaved in one run (loadtests/bench_openai).
    openai_settings = bench_openai.Settings.quick() if plan.smoke else bench_openai.Settings()
    results["openai"] = bench_openai.measure(repo, openai_settings, out / "openai")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    report.write(results, out)
    with (out / "report.md").open("a") as f:
        f.write("\n" + bench_openai.markdown(results["openai"]))
        f.write("\n" + bench_batch.markdown(results["batch"]))
        if results["warmup"] is not None:
            from loadtests import bench_warmup

            f.write("\n" + bench_warmup.markdown(results["warmup"]))
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="every path for a few seconds (what make test runs)")
    p.add_argument(
        "--out", type=Path, help="report folder (default loadtests/results/<date>, quick: build/bench-quick)"
    )
    p.add_argument("--repository", type=Path, help="an already built vision + gpt2 repository (skips that build)")
    p.add_argument("--nobatch-repository", type=Path, help="an already built vision repository, batching off")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    plan = Plan.quick() if args.quick else Plan.full()
    today = datetime.date.today().isoformat()
    out = args.out or (ROOT / "build" / "bench-quick" if args.quick else ROOT / "loadtests" / "results" / today)
    results = run(plan, out.resolve(), args.repository, args.nobatch_repository)
    sys.stdout.write(report.headline_text(results) + "\n" + bench_openai.headline(results["openai"]))
    sys.stdout.write("\n" + bench_batch.headline(results["batch"]))
    sys.stdout.write(f"\nreport: {out / 'report.md'}\n")
    errors = report.error_count(results) + results["batch"]["errors"]
    if errors:
        sys.stderr.write(f"bench: {errors} request(s) failed or answered wrong; the figures are not valid\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
