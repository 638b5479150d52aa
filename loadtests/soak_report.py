"""The soak's report: the Markdown tables, the wrong answers locust counted, and the plot (memory and p99 over time)."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

WRONG_ANSWER = "wrong answer"  # how loadtests.references words a failed answer check
PLOT_BINS = 20  # p99 over this many equal slices of the run


def wrong_answers(failures_csv: Path) -> int:
    """Failed requests in locust's <prefix>_failures.csv whose error is a wrong answer (not an error status)."""
    if not failures_csv.is_file():
        return 0
    with failures_csv.open(newline="") as f:
        return sum(int(r["Occurrences"]) for r in csv.DictReader(f) if WRONG_ANSWER in r["Error"])


def format_report(verdict: dict) -> str:
    """Markdown tables for the terminal and the README."""
    v = verdict
    per = ", ".join(f"{p} {n}" for p, n in v["requests_per_pipeline"].items())
    lines = [
        f"soak: {v['duration_s']:.0f} s, {v['requests']} requests ({per}), {v['errors']} errors "
        f"({v['wrong_answers']} wrong answers), warm-up {v['warmup_s']:.0f} s, memory limit "
        f"+{v['max_growth_pct']:.0f}%: {'PASSED' if v['passed'] else 'FAILED'}",
        "",
        "| request | count | p99 start (ms) | p99 end (ms) |",
        "|---|---:|---:|---:|",
    ]
    fmt = lambda x: "-" if x is None else f"{x:.0f}"  # noqa: E731
    for row in v["latency"]:
        lines.append(
            f"| {row['type']} {row['name']} | {row['requests']} | {fmt(row['p99_start_ms'])} | "
            f"{fmt(row['p99_end_ms'])} |"
        )
    lines += ["", "| process | RSS after warm-up (MB) | RSS at end (MB) | growth | peak (MB) |"]
    lines.append("|---|---:|---:|---:|---:|")
    for g in v["memory"]:
        growth = "-" if g["growth_pct"] is None else f"{g['growth_pct']:+.1f}%"
        mark = "" if g["ok"] else " FAIL"
        lines.append(
            f"| {g['process']} | {fmt(g['start_mb'])} | {fmt(g['end_mb'])} | {growth}{mark} | {fmt(g['peak_mb'])} |"
        )
    return "\n".join(lines)


def _p99_series(requests: list[tuple[float, str, str, float, bool]], types: tuple[str, ...], t0: float, span: float):
    """(type name) -> (bin centres in s since t0, p99 ms per bin) over the successful requests of `types`."""
    width = max(span, 1.0) / PLOT_BINS
    bins: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for when, kind, name, ms, ok in requests:
        if ok and kind in types:
            bins[f"{kind} {name}"][min(int((when - t0) / width), PLOT_BINS - 1)].append(ms)
    return {
        key: ([(i + 0.5) * width for i in sorted(b)], [float(np.percentile(b[i], 99)) for i in sorted(b)])
        for key, b in sorted(bins.items())
    }


def plot(path: Path, verdict: dict, samples: list, requests: list, request_types: tuple[str, ...], t0: float) -> bool:
    """soak.png: RSS of the total, tritonserver and the largest stubs, and p99 per request type, over the run
    (samples' times are seconds since t0, requests' are unix times).

    False (no plot) when matplotlib is not installed.
    """
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, dict[float, float]] = defaultdict(dict)
    totals: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for s in samples:
        series[s.label][s.time_s] = s.rss_kb / 1024
        totals[s.sweep][0] = s.time_s
        totals[s.sweep][1] += s.rss_kb / 1024
    stubs = sorted((k for k in series if k != "tritonserver"), key=lambda k: -max(series[k].values()))[:4]
    fig, (mem, lat) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    mem.plot([t for t, _ in totals.values()], [mb for _, mb in totals.values()], label="total", lw=2)
    for label in ["tritonserver", *stubs]:
        if label in series:
            mem.plot(list(series[label]), list(series[label].values()), label=label, lw=1)
    duration, warmup, window = verdict["duration_s"], verdict["warmup_s"], verdict["window_s"]
    for ax in (mem, lat):
        ax.axvspan(warmup, warmup + window, color="tab:green", alpha=0.08)
        ax.axvspan(duration - window, duration, color="tab:green", alpha=0.08)
        ax.grid(alpha=0.3)
    mem.set_ylabel("RSS (MB)")
    mem.set_title(f"soak: {verdict['requests']} requests, {verdict['errors']} errors; shaded: compared windows")
    mem.legend(fontsize=8, loc="center right")
    for key, (xs, ys) in _p99_series(requests, request_types, t0, duration).items():
        lat.plot(xs, ys, marker=".", label=key)
    lat.set_yscale("log")
    lat.set_ylabel(f"p99 latency per {duration / PLOT_BINS:.0f} s (ms)")
    lat.set_xlabel("seconds since start")
    lat.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
