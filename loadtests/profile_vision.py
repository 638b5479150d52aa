"""Where a vision request's time goes: the latency budget from Triton's trace and timers inside the stubs.

    python -m loadtests.profile_vision [--entry jpeg|shm|http_binary ...] [--concurrency 1 4] [--requests 4]

Starts tritonserver with `--trace-config` (TIMESTAMPS for every request) and every onnx_runtime stub
timing its `execute` and `session.run` (TRITONYARD_STUB_TIMINGS; written when the models unload), drives
each entry point with closed-loop clients that tag every request with an id and note when it left and
when its answer arrived, and splits each request, on the one CLOCK_MONOTONIC all three share, into:
client write + transport; the HTTP frontend; per step its queue, input copies (Triton's copy into the
stub's shared memory and the stub's own copy, up to `execute`), the `session.run` (against the same
ONNX file run in-process with the same threads), the rest of `execute`, and output copies; and the
ensemble's own overhead (between and around the steps). `make bench` runs it at concurrency 1 and 4.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import json
import os
import sys
import time
from pathlib import Path

from loadtests import bench_vision as bv
from loadtests.vision_reference import InProcessChain, served_threads, step_ms
from serving.launcher import TritonServer, free_ports

ROOT = Path(__file__).resolve().parent.parent
TIMINGS_ENV = "TRITONYARD_STUB_TIMINGS"  # python_backends/onnx_runtime/model.py reads it
ENSEMBLES = {"shm": "ensemble", "http_binary": "ensemble", "jpeg": "ensemble_jpeg"}
CATEGORIES = (  # the stacked bar's segments, bottom to top
    "client write + transport",
    "HTTP frontend",
    "queue",
    "input copies",
    "ONNX run, in-process time",
    "ONNX run above in-process",
    "rest of execute (Python)",
    "image_decoder execute",
    "output copies",
    "ensemble overhead",
)


def tracing_args(trace_file: Path) -> tuple[str, ...]:
    return (
        f"--trace-config=triton,file={trace_file}",
        "--trace-config=level=TIMESTAMPS",
        "--trace-config=rate=1",
        "--trace-config=count=-1",
    )


def read_trace(trace_file: Path) -> dict[int, dict]:
    """Each trace by id: model, request_id, parent_id and its timestamps {name: ns}."""
    records = json.loads(trace_file.read_text() or "[]")
    traces: dict[int, dict] = collections.defaultdict(lambda: {"ts": {}})
    for rec in records:  # Triton writes a trace's model name and its timestamps as separate records
        entry = traces[rec["id"]]
        for key in ("model_name", "request_id", "parent_id"):
            if key in rec:
                entry[key] = rec[key]
        for ts in rec.get("timestamps", []):
            entry["ts"][ts["name"]] = int(ts["ns"])
    return dict(traces)


def read_stub_timings(folder: Path) -> dict[str, list[tuple[int, int, int]]]:
    """(entered, run, left) ns of every `execute`, by model, sorted by entry."""
    found: dict[str, list] = collections.defaultdict(list)
    for path in folder.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            r = json.loads(line)
            found[r["model"]].append((r["entered_ns"], r["run_ns"], r["left_ns"]))
    return {m: sorted(v) for m, v in found.items()}


def _stub_call(stub: list, start: int, end: int) -> tuple[int, int, int] | None:
    """The stub's `execute` that ran inside [start, end] (the step's compute span), if timed."""
    i = bisect.bisect_left(stub, (start,))
    while i < len(stub) and stub[i][0] <= end:  # with several instances, another one's call may come first
        if stub[i][2] <= end:
            return stub[i]
        i += 1
    return None


def _step(child: dict, stubs: dict, twin_ms: dict[str, float]) -> tuple[str, dict[str, float]]:
    """One step of one request: its phases in ms (see CATEGORIES)."""
    ts, model = child["ts"], child.get("model_name", "?")
    begin = ts.get("REQUEST_START", ts["QUEUE_START"])
    cs, ce = ts["COMPUTE_START"], ts["COMPUTE_END"]
    p = dict.fromkeys(CATEGORIES, 0.0)
    p["queue"] = (cs - begin) / 1e6
    call = _stub_call(stubs.get(model, []), cs, ce)
    if call is None:  # not an onnx_runtime stub: Triton's own phases only
        p["input copies"] = (ts["COMPUTE_INPUT_END"] - cs) / 1e6
        p["image_decoder execute"] = (ts["COMPUTE_OUTPUT_START"] - ts["COMPUTE_INPUT_END"]) / 1e6
        p["output copies"] = (ce - ts["COMPUTE_OUTPUT_START"]) / 1e6
    else:
        entered, run, left = call
        twin = twin_ms.get(model, 0.0)
        p["input copies"] = (entered - cs) / 1e6
        p["ONNX run, in-process time"] = min(run / 1e6, twin)
        p["ONNX run above in-process"] = max(0.0, run / 1e6 - twin)
        p["rest of execute (Python)"] = (left - entered - run) / 1e6
        p["output copies"] = (ce - left) / 1e6
    p["run_ms"] = run / 1e6 if call else 0.0
    return model, p


def request_budget(top: dict, children: list[dict], mark: tuple, stubs: dict, twin_ms: dict) -> dict:
    """One request: the categories (ms, summing to the client's latency) and each step's phases."""
    ts = top["ts"]
    _, started, answered = mark
    ens = ts["REQUEST_END"] - ts["REQUEST_START"]
    server = ts.get("HTTP_SEND_END", ts["REQUEST_END"]) - ts.get("HTTP_RECV_START", ts["REQUEST_START"])
    total = dict.fromkeys(CATEGORIES, 0.0)
    total["client write + transport"] = (answered - started - server) / 1e6
    total["HTTP frontend"] = (server - ens) / 1e6
    steps, inside = {}, 0
    for child in sorted(children, key=lambda c: c["ts"]["COMPUTE_START"]):
        model, phases = _step(child, stubs, twin_ms)
        steps[model] = phases
        for k in CATEGORIES:
            total[k] += phases[k]
        inside += child["ts"]["COMPUTE_END"] - child["ts"].get("REQUEST_START", child["ts"]["QUEUE_START"])
    total["ensemble overhead"] = (ens - inside) / 1e6
    return {"categories": total, "steps": steps, "latency_ms": (answered - started) / 1e6}


def _mean(rows: list[dict]) -> dict:
    return {k: round(sum(r[k] for r in rows) / len(rows), 2) for k in rows[0]} if rows else {}


def summarize(runs: dict, trace: dict[int, dict], stubs: dict, twin_ms: dict) -> dict:
    """Mean budget per (entry, concurrency) from the runs' marks; requests without a full trace are counted."""
    by_request = {t["request_id"]: tid for tid, t in trace.items() if t.get("request_id") and not t.get("parent_id")}
    children: dict[int, list] = collections.defaultdict(list)
    for t in trace.values():
        if t.get("parent_id"):
            children[t["parent_id"]].append(t)
    out: dict = {}
    for (entry, c), marks in runs.items():
        budgets, missing = [], 0
        for mark in marks:
            tid = by_request.get(mark[0])
            try:
                budgets.append(request_budget(trace[tid], children[tid], mark, stubs, twin_ms))
            except (KeyError, TypeError):
                missing += 1
        steps = list(dict.fromkeys(m for b in budgets for m in b["steps"]))  # in pipeline order
        out.setdefault(entry, {})[str(c)] = {
            "requests": len(budgets),
            "untraced": missing,
            "latency_ms": round(sum(b["latency_ms"] for b in budgets) / max(len(budgets), 1), 1),
            "categories": _mean([b["categories"] for b in budgets]),
            "steps": {m: _mean([b["steps"][m] for b in budgets if m in b["steps"]]) for m in steps},
        }
    return out


def in_process_ms(repo: Path, ref: bv.Reference, requests: int) -> dict[str, float]:
    """Median ms of each ONNX step run in-process with the threads the server gives it (both chains)."""
    threads = served_threads(repo)
    fp32 = step_ms(InProcessChain(repo, threads), ref.frame, requests)
    from clients.lib import images

    u8_frame = images.to_frame_u8(images.decode(ref.jpeg))
    return fp32 | step_ms(InProcessChain(repo, threads, u8=True), u8_frame, requests)


def measure(
    repo: Path,
    ref: bv.Reference,
    out: Path,
    *,
    entries: tuple[str, ...] = ("shm", "http_binary", "jpeg"),
    concurrency: tuple[int, ...] = (1, 4),
    per_worker: int = 4,
    twin_requests: int = 5,
) -> dict:
    """The latency budget of each entry point at each concurrency, from one traced server (see the module doc)."""
    twin_ms = in_process_ms(repo, ref, twin_requests)
    out.mkdir(parents=True, exist_ok=True)
    trace, timings = out / "trace.json", out / "stub-timings"
    trace.unlink(missing_ok=True)
    timings.mkdir(exist_ok=True)
    for old in timings.glob("*.jsonl"):
        old.unlink()
    server = TritonServer(repo, *free_ports(3), extra_args=tracing_args(trace), log_file=out / "server.log")
    runs: dict = {}
    os.environ[TIMINGS_ENV] = str(timings)
    try:
        with server:
            os.environ.pop(TIMINGS_ENV)
            url = server.http_url
            for entry in entries:
                for c in concurrency:
                    marks: list = []
                    factory = {
                        "shm": lambda m=marks: bv.shm_sender(url, ref, m),
                        "http_binary": lambda m=marks: bv.http_sender(url, ref, binary=True, marks=m),
                        "jpeg": lambda m=marks: bv.jpeg_sender(url, ref, m),
                    }[entry]
                    run = bv.closed_loop(f"budget {entry} c={c}", factory, c, requests=per_worker * c)
                    if run.errors:
                        raise RuntimeError(f"budget {entry} c={c}: {run.errors} failed: {run.first_error}")
                    runs[(entry, c)] = marks[-per_worker * c :]  # the measured requests, not the warm-ups
    finally:
        os.environ.pop(TIMINGS_ENV, None)
    time.sleep(0.2)  # the stubs wrote their timings in finalize, before the server exited
    result = summarize(runs, read_trace(trace), read_stub_timings(timings), twin_ms)
    return {"in_process_ms": twin_ms, "entries": result}


def text(budget: dict) -> str:
    """The budget as a plain table: one row per entry point and concurrency, one column per category."""
    short = [c.split(",")[0].split(" (")[0][:12] for c in CATEGORIES]
    lines = [f"{'entry':<14}{'c':>3}{'ms':>7} " + " ".join(f"{s:>12}" for s in short)]
    for entry, by_c in budget["entries"].items():
        for c, b in by_c.items():
            cells = " ".join(f"{b['categories'].get(k, 0):>12.1f}" for k in CATEGORIES)
            lines.append(f"{entry:<14}{c:>3}{b['latency_ms']:>7.0f} {cells}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.profile_vision",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    p.add_argument("--entry", nargs="+", choices=tuple(ENSEMBLES), default=["shm", "http_binary", "jpeg"])
    p.add_argument("--concurrency", nargs="+", type=int, default=[1, 4])
    p.add_argument("--requests", type=int, default=4, help="measured requests per client (after one warm-up)")
    p.add_argument("--out", type=Path, default=ROOT / "build" / "profile")
    args = p.parse_args(argv)
    from loadtests.bench import reference

    ref, _ = reference(args.repository)
    budget = measure(
        args.repository, ref, args.out, entries=tuple(args.entry), concurrency=tuple(args.concurrency),
        per_worker=args.requests,
    )  # fmt: skip
    (args.out / "budget.json").write_text(json.dumps(budget, indent=2))
    sys.stdout.write(text(budget))
    return 0


if __name__ == "__main__":
    sys.exit(main())
