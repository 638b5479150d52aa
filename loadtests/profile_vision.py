"""Where a vision request's time goes: Triton's per-step trace, and py-spy on each Python stub.

    python -m loadtests.profile_vision [--entry jpeg|shm] [--concurrency 2] [--requests 12] [--py-spy]

Starts tritonserver with `--trace-config` (TIMESTAMPS for every request), drives the chosen entry
point with closed-loop clients, and prints for each step the mean queue, input copy, compute and
output copy time. With --py-spy it samples every vision stub meanwhile and prints each one's
hottest frames. This is how the copies of the 99.5 MB frame were found (see the README).
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from loadtests import bench_vision as bv
from loadtests.bench import reference, vision_steps
from serving.launcher import TritonServer, free_ports
from serving.supervisor import scan_stubs

ROOT = Path(__file__).resolve().parent.parent
PHASES = (  # (label, from timestamp, to timestamp) of Triton's TIMESTAMPS trace
    ("queue", "QUEUE_START", "COMPUTE_START"),
    ("input", "COMPUTE_START", "COMPUTE_INPUT_END"),
    ("compute", "COMPUTE_INPUT_END", "COMPUTE_OUTPUT_START"),
    ("output", "COMPUTE_OUTPUT_START", "COMPUTE_END"),
)


def trace_breakdown(trace_file: Path, steps: list[str]) -> dict[str, dict[str, float]]:
    """Mean milliseconds per phase for each of `steps` in a Triton TIMESTAMPS trace file."""
    records = json.loads(trace_file.read_text() or "[]")
    by_id: dict[int, dict] = collections.defaultdict(dict)
    for rec in records:  # Triton writes a trace's model name and each of its timestamps as separate records
        entry = by_id[rec["id"]]
        if "model_name" in rec:
            entry["model"] = rec["model_name"]
        for ts in rec.get("timestamps", []):
            entry[ts["name"]] = int(ts["ns"])
    sums: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for entry in by_id.values():
        model = entry.get("model")
        if model not in steps or not all(p in entry for _, a, b in PHASES for p in (a, b)):
            continue
        sums[model]["n"] += 1
        for label, start, end in PHASES:
            sums[model][label] += (entry[end] - entry[start]) / 1e6
    return {m: {label: c[label] / c["n"] for label, _, _ in PHASES} | {"n": c["n"]} for m, c in sums.items()}


def stub_pids(server: TritonServer, steps: list[str]) -> dict[str, int]:
    """pid of each vision step's Python stub (one per instance: `model_0_0` etc. when several)."""
    live, _ = scan_stubs(server.process.pid)
    many = {m for m in steps if sum(stub.model == m for stub in live.values()) > 1}
    return {
        (stub.instance if stub.model in many else stub.model): pid for pid, stub in live.items() if stub.model in steps
    }


def py_spy(pids: dict[str, int], seconds: float, out: Path) -> dict[str, list[tuple[float, str]]]:
    """Sample each stub for `seconds`; the 6 leaf frames with most samples, as (share, frame)."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    procs = {
        m: subprocess.Popen(
            [
                exe,
                "record",
                "-p",
                str(pid),
                "-d",
                str(int(seconds)),
                "-r",
                "50",
                "-f",
                "raw",
                "-o",
                str(out / f"py-spy-{m}.txt"),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for m, pid in pids.items()
    }
    hot = {}
    for model, proc in procs.items():
        proc.wait()
        counts, total = collections.Counter(), 0
        raw = out / f"py-spy-{model}.txt"
        for line in raw.read_text().splitlines() if raw.is_file() else []:
            stack, _, n = line.rpartition(" ")
            leaf = stack.split(";")[-1] or "(native / idle)"
            counts[leaf] += int(n)
            total += int(n)
        hot[model] = [(n / total, leaf) for leaf, n in counts.most_common(6)] if total else []
    return hot


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.profile_vision",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    p.add_argument("--entry", choices=("jpeg", "shm", "http_binary"), default="jpeg")
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--requests", type=int, default=12)
    p.add_argument("--py-spy", action="store_true", help="also sample every vision stub with py-spy")
    p.add_argument("--out", type=Path, default=ROOT / "build" / "profile")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    trace = args.out / "trace.json"
    trace.unlink(missing_ok=True)
    tracing = (
        "--trace-config=triton,file=" + str(trace),
        "--trace-config=level=TIMESTAMPS",
        "--trace-config=rate=1",
        "--trace-config=count=-1",
    )
    ref, _ = reference(args.repository)
    steps = vision_steps(args.repository)
    server = TritonServer(args.repository, *free_ports(3), extra_args=tracing, log_file=args.out / "server.log")
    hot: dict = {}
    with server:
        url = server.http_url
        factory = {
            "jpeg": lambda: bv.jpeg_sender(url, ref),
            "shm": lambda: bv.shm_sender(url, ref),
            "http_binary": lambda: bv.http_sender(url, ref, binary=True),
        }[args.entry]
        spy = None
        if args.py_spy:
            seconds = max(5.0, args.requests * 0.4)
            spy = threading.Thread(target=lambda: hot.update(py_spy(stub_pids(server, steps), seconds, args.out)))
            spy.start()
        run = bv.closed_loop(f"{args.entry} c={args.concurrency}", factory, args.concurrency, requests=args.requests)
        if spy:
            spy.join()
    # The trace file is complete once the server has exited.
    head = f"{args.entry}, concurrency {args.concurrency}: {run.throughput:.2f} frames/s, p50 {run.pct_ms(50):.0f} ms"
    lines = [f"{head}, errors {run.errors}", "", f"{'step':<18} {'n':>4} " + " ".join(f"{x:>9}" for x, _, _ in PHASES)]
    for model, phases in sorted(trace_breakdown(trace, steps).items(), key=lambda kv: steps.index(kv[0])):
        cells = " ".join(f"{phases[label]:>7.1f}ms" for label, _, _ in PHASES)
        lines.append(f"{model:<18} {phases['n']:>4} {cells}")
    for model, frames in hot.items():
        lines += ["", f"py-spy, {model} stub (share of samples):"]
        lines += [f"  {share:6.1%}  {frame[:110]}" for share, frame in frames]
    text = "\n".join(lines) + "\n"
    (args.out / "profile.txt").write_text(text)
    sys.stdout.write(text)
    return 1 if run.errors else 0


if __name__ == "__main__":
    sys.exit(main())
