"""Soak test: locust on both pipelines for a long while, watching errors, p99 latency and memory.

    python -m loadtests.soak                       # 10 minutes, server started here on free ports
    python -m loadtests.soak --duration 3m --url 127.0.0.1:8000 [--server-pid PID]
    python -m loadtests.soak --quick               # 40 s, for `make test`

Resident memory (VmRSS from /proc) of tritonserver and of every Python stub (its children named
triton_python_backend_stub, labelled by model from their command line) is sampled all along into
memory.csv. After warm-up (the first --warmup fraction of the run), the floor (minimum) of each
process's RSS over the window right after warm-up is compared with its floor over the last window:
the floor ignores transient buffers (a 99.5 MB frame comes and goes) but rises with a leak. The run
fails if any process, or the total, grows by more than --max-growth, if any request failed, if a
pipeline completed no request, or if a stub disappeared. Every answer is checked against references
computed in-process from the committed weights first (loadtests/references.py, kept in answers.json):
the oil level and detections of the synthetic frame, the greedy text of each prompt; a wrong answer is a
failed request. p99 latency is reported for the first and the last window. Everything goes to --out
(default loadtests/results/<date>-soak/, and loadtests/results/soak/<timestamp>/ with --quick): locust's
CSVs, requests.csv, memory.csv, answers.json, verdict.json, summary.md and soak.png (with matplotlib).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from loadtests import loadtest
from loadtests import locust_common as common
from loadtests.soak_report import format_report, plot, wrong_answers
from serving.launcher import STUB_NAME, ServerError

SERVER_LABEL = "tritonserver"
TOTAL_LABEL = "total"
QUICK = {"duration": "40s", "sample_interval": 0.5}


# --- /proc ---


def read_rss_kb(pid: int) -> int | None:
    """VmRSS of a live process in kB, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) if match else None


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _ppid(pid: int) -> int | None:
    try:
        match = re.search(r"^PPid:\s+(\d+)", Path(f"/proc/{pid}/status").read_text(), re.M)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def stub_label(cmdline: list[str]) -> tuple[str, str]:
    """(model, instance) from a stub's command line: `stub <repo>/<model>/<version>/model.py ... <instance> ...`."""
    model = Path(cmdline[1]).parts[-3] if len(cmdline) > 1 and len(Path(cmdline[1]).parts) >= 3 else "?"
    instance = next((a for a in cmdline[2:] if a.startswith(f"{model}_")), model)
    return model, instance


def find_server_pid(http_port: int) -> int | None:
    """The tritonserver process listening on `http_port`, found by its command line."""
    for pid in _pids():
        cmd = _cmdline(pid)
        if not cmd or not cmd[0].endswith("tritonserver"):
            continue
        args = " ".join(cmd[1:])
        if f"--http-port={http_port}" in args or f"--http-port {http_port}" in args:
            return pid
    return None


def server_processes(server_pid: int) -> dict[str, int]:
    """label -> pid for the server and each of its stubs (the instance name where a model has several)."""
    stubs = []
    for pid in _pids():
        if _ppid(pid) != server_pid:
            continue
        cmd = _cmdline(pid)
        if cmd and Path(cmd[0]).name == STUB_NAME:
            stubs.append((*stub_label(cmd), pid))
    counts = defaultdict(int)
    for model, _, _ in stubs:
        counts[model] += 1
    found = {SERVER_LABEL: server_pid}
    for model, instance, pid in stubs:
        found[model if counts[model] == 1 else instance] = pid
    return found


# --- analysis (pure) ---


@dataclass(frozen=True)
class Sample:
    """One RSS reading; samples of one sweep share `sweep`."""

    sweep: int
    time_s: float
    label: str
    pid: int
    rss_kb: int


@dataclass(frozen=True)
class Growth:
    """A process's RSS floor right after warm-up and at the end."""

    process: str
    start_mb: float | None
    end_mb: float | None
    peak_mb: float | None
    growth_pct: float | None
    ok: bool
    note: str = ""


def windows(duration_s: float, warmup: float, window: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """(post-warm-up window, last window) in seconds from the start of the run."""
    start = warmup * duration_s
    return (start, start + window * duration_s), ((1 - window) * duration_s, duration_s)


def _floor_mb(values: list[int]) -> float | None:
    return min(values) / 1024 if values else None


def memory_growth(
    samples: list[Sample], duration_s: float, warmup: float, window: float, max_growth: float
) -> list[Growth]:
    """Per process and for the total: the RSS floor after warm-up against the floor in the last window."""
    (b0, b1), (e0, e1) = windows(duration_s, warmup, window)
    series: dict[str, list[tuple[float, int]]] = defaultdict(list)
    totals: dict[int, list] = defaultdict(lambda: [0.0, 0])
    for s in samples:
        series[s.label].append((s.time_s, s.rss_kb))
        totals[s.sweep][0] = s.time_s
        totals[s.sweep][1] += s.rss_kb
    series[TOTAL_LABEL] = [(t, kb) for t, kb in totals.values()]
    out = []
    for label in [SERVER_LABEL, *sorted(k for k in series if k not in (SERVER_LABEL, TOTAL_LABEL)), TOTAL_LABEL]:
        points = series.get(label, [])
        start = _floor_mb([kb for t, kb in points if b0 <= t <= b1])
        end = _floor_mb([kb for t, kb in points if e0 <= t <= e1])
        peak = max((kb for t, kb in points if t >= b0), default=None)
        peak_mb = peak / 1024 if peak is not None else None
        if start is None or end is None:
            note = "no samples after warm-up" if start is None else "gone before the end (did it die?)"
            out.append(Growth(label, start, end, peak_mb, None, False, note))
            continue
        growth = (end - start) / start if start else math.inf
        out.append(Growth(label, start, end, peak_mb, growth * 100, growth <= max_growth))
    return out


def read_request_log(path: Path) -> list[tuple[float, str, str, float, bool]]:
    """(unix time, type, name, response ms, ok) rows written by the locustfiles' --request-log."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [
            (float(r["time"]), r["type"], r["name"], float(r["response_ms"]), r["ok"] == "1") for r in csv.DictReader(f)
        ]


def latency_windows(rows: list[tuple[float, str, str, float, bool]], window: float) -> list[dict]:
    """p99 of each request type/name over the first and the last `window` fraction of the traffic."""
    if not rows:
        return []
    t0 = min(r[0] for r in rows)
    duration_s = max(r[0] for r in rows) - t0
    first_end, last_start = window * duration_s, (1 - window) * duration_s
    groups: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for when, kind, name, ms, ok in rows:
        if ok:
            groups[(kind, name)].append((when - t0, ms))
    out = []
    for (kind, name), points in sorted(groups.items()):
        first = [ms for t, ms in points if t <= first_end]
        last = [ms for t, ms in points if t >= last_start]
        out.append(
            {
                "type": kind,
                "name": name,
                "requests": len(points),
                "p99_start_ms": float(np.percentile(first, 99)) if first else None,
                "p99_end_ms": float(np.percentile(last, 99)) if last else None,
            }
        )
    return out


def judge(summary: dict, growth: list[Growth], pipelines: list[str], log_errors: int, wrong: int = 0) -> list[str]:
    """Reasons the soak failed (empty when it passed)."""
    problems = loadtest.verdict(summary, pipelines, 0)
    if wrong:
        problems.append(f"{wrong} wrong answer(s) (see locust_failures.csv)")
    if log_errors and not summary["failures"]:
        problems.append(f"{log_errors} request(s) failed in requests.csv")
    for g in growth:
        if not g.ok:
            why = g.note or f"grew {g.growth_pct:.1f}% ({g.start_mb:.0f} -> {g.end_mb:.0f} MB)"
            problems.append(f"memory of {g.process}: {why}")
    return problems


# --- the run ---


def _provenance(path: Path, out: Path) -> dict:
    """What the answers were checked against: the file (relative to `out` when computed there), the weights' sha256."""
    data = json.loads(path.read_text())
    return {
        "file": path.name if path.parent == out else str(path),
        **{k: v.get("weights") for k, v in data.items() if isinstance(v, dict)},
    }


def seconds(text: str) -> float:
    """'600', '90s', '10m', '1h' -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: expected e.g. 600, 90s, 10m")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def sample_until_done(proc, server_pid: int, interval: float, t0: float, sink) -> list[Sample]:
    """Sample RSS every `interval` s while locust runs; rows also go to the CSV writer `sink`."""
    samples, sweep = [], 0
    while True:
        now = time.time() - t0
        for label, pid in server_processes(server_pid).items():
            kb = read_rss_kb(pid)
            if kb is not None:
                samples.append(Sample(sweep, now, label, pid, kb))
                sink.writerow((f"{now:.2f}", label, pid, kb))
        sweep += 1
        if proc.poll() is not None:
            return samples
        time.sleep(interval)


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="python -m loadtests.soak", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--duration", type=seconds, default=None, help="run time, e.g. 600, 10m (default 10m)")
    p.add_argument("--quick", action="store_true", help="40 s with 0.5 s sampling (make test)")
    p.add_argument("--url", default=env("TRITON_HTTP_URL"), help="HOST:PORT of a running server (HTTP)")
    p.add_argument("--server-pid", type=int, help="its tritonserver pid (default: found by its --http-port)")
    p.add_argument("--repository", type=Path, default=Path(env("MODEL_REPOSITORY", "model_repository")))
    p.add_argument("--users", type=int, default=1, help="users per pipeline (vision and gpt2 each)")
    p.add_argument("--entry", choices=("ensemble", "ensemble_jpeg", "both"), default="both", help="vision entry")
    p.add_argument("--image", default="synthetic", help='JPEG/PNG file or "synthetic"')
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--warmup", type=float, default=0.2, help="fraction of the run that is warm-up")
    p.add_argument("--window", type=float, default=0.2, help="fraction of the run in each compared window")
    p.add_argument("--max-growth", type=float, default=0.10, help="allowed RSS growth after warm-up (0.10 = 10%%)")
    p.add_argument("--sample-interval", type=float, default=None, help="seconds between RSS samples (default 2)")
    p.add_argument("--answers", help="reference answers JSON to check against (default: computed here from weights/)")
    p.add_argument("--out", type=Path, help="output folder (default loadtests/results/<date>-soak/)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    duration = args.duration or seconds(QUICK["duration"] if args.quick else "10m")
    interval = args.sample_interval or (QUICK["sample_interval"] if args.quick else 2.0)
    if not (0 <= args.warmup and 0 < args.window and args.warmup + args.window <= 1 - args.window + 1e-9):
        sys.stderr.write("error: need warmup + window <= 1 - window, so the two compared windows do not overlap\n")
        return 2
    out = args.out or (
        loadtest.timestamped("soak") if args.quick else loadtest.RESULTS / f"{time.strftime('%Y-%m-%d')}-soak"
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "requests.csv").unlink(missing_ok=True)  # the request log appends
    pipelines = ["vision", "gpt2"]
    lt_args = argparse.Namespace(
        entry=args.entry, image=args.image, frames=1, max_tokens=args.max_tokens, prompt="", answers=args.answers
    )
    answers = loadtest.answers_file(pipelines, lt_args, out)
    extra = [*loadtest.pipeline_args(pipelines, lt_args, answers), "--request-log", str(out / "requests.csv")]
    try:
        with loadtest.serve(args.url, None, args.repository, out) as ep:
            port = int(ep.http_url.rpartition(":")[2])
            server_pid = ep.server.process.pid if ep.server else args.server_pid or find_server_pid(port)
            if server_pid is None:
                sys.stderr.write(f"error: no tritonserver with --http-port={port} here; pass --server-pid\n")
                return 2
            sys.stderr.write(
                f"soak: {duration:.0f} s against {ep.http_url} (tritonserver pid {server_pid}), "
                f"{args.users} user(s) per pipeline, vision entry {args.entry}\n"
            )
            cmd = loadtest.locust_command(
                pipelines, ep.http_url, args.users, args.users, f"{duration:.0f}s", out / loadtest.CSV_PREFIX, extra
            )
            t0 = time.time()
            proc = loadtest.start_locust(cmd, out / "locust.log")
            try:
                with (out / "memory.csv").open("w", newline="") as f:
                    sink = csv.writer(f)
                    sink.writerow(("time_s", "process", "pid", "rss_kb"))
                    samples = sample_until_done(proc, server_pid, interval, t0, sink)
            except BaseException:
                proc.terminate()  # sampling failed: never leave locust running against the server
                raise
            rc = proc.wait()
    except ServerError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    stats = out / f"{loadtest.CSV_PREFIX}_stats.csv"
    if not stats.is_file():
        sys.stderr.write(f"error: locust wrote no {stats.name} (exit {rc}); see {out / 'locust.log'}\n")
        return 1
    ran = max((s.time_s for s in samples), default=duration)
    summary = common.summarize(common.read_stats(stats), [])
    requests = read_request_log(out / "requests.csv")
    growth = memory_growth(samples, ran, args.warmup, args.window, args.max_growth)
    log_errors = sum(1 for r in requests if not r[4] and r[1] in common.REQUEST_TYPES)
    wrong = wrong_answers(out / f"{loadtest.CSV_PREFIX}_failures.csv")
    problems = judge(summary, growth, pipelines, log_errors, wrong)
    per_pipeline = {
        p: sum(r["requests"] for r in summary["rows"] if r["type"] == loadtest.PIPELINE_TYPES[p]) for p in pipelines
    }
    verdict = {
        "passed": not problems,
        "problems": problems,
        "duration_s": ran,
        "warmup_s": args.warmup * ran,
        "window_s": args.window * ran,
        "max_growth_pct": args.max_growth * 100,
        "requests": summary["requests"],
        "requests_per_pipeline": per_pipeline,
        "errors": max(summary["failures"], log_errors),
        "wrong_answers": wrong,
        "answers": _provenance(answers, out),
        "latency": latency_windows(requests, args.window),
        "memory": [asdict(g) for g in growth],
        "samples": len({s.sweep for s in samples}),
        "locust_exit_code": rc,
    }
    (out / "verdict.json").write_text(json.dumps(verdict, indent=2) + "\n")
    report = format_report(verdict)
    (out / "summary.md").write_text(report + "\n")
    plotted = plot(out / "soak.png", verdict, samples, requests, common.REQUEST_TYPES, t0)
    missing = "" if plotted else "(no soak.png: matplotlib is not installed)\n"
    sys.stdout.write(f"{report}\n{missing}results: {out}\n")
    if problems:
        sys.stderr.write("SOAK FAILED: " + "; ".join(problems) + "\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
