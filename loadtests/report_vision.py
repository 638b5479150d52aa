"""The vision parts of the benchmark report: the issue's targets, the like-for-like FastAPI comparison, the
latency budget (a stacked bar per entry point and concurrency) and the levers `make tune` measured."""

from __future__ import annotations

import json
import math
from pathlib import Path

from loadtests.profile_vision import CATEGORIES

PAIRS = (("http_binary", "fastapi_binary", "FP32"), ("jpeg", "fastapi_jpeg", "JPEG"))  # ours, theirs, payload
TUNING = Path(__file__).resolve().parent / "tuning" / "cpu.json"  # written by `make tune` (loadtests/tune.py)
FIRST_REQUEST_TARGET = 1.2


def _at(rows: list[dict], concurrency: int) -> dict | None:
    return next((r for r in rows if r["concurrency"] == concurrency), None)


def _target(measure: str, result: str, target: str, met: bool | None) -> dict:
    verdict = "not measured" if met is None else "met" if met else "**missed**"
    return {"measure": measure, "result": result, "target": target, "verdict": verdict}


def targets(results: dict) -> list[dict]:
    """The six targets of issue 14, each with its figures from this run and a verdict."""
    c = results["plan"]["baseline_concurrency"]
    rows = []
    p99 = []
    for ours, theirs, payload in PAIRS:
        o, t = _at(results["served"][ours], c), _at(results["fastapi"][theirs], c)
        ratio = o["throughput_per_s"] / t["throughput_per_s"]
        rows.append(
            _target(
                f"ours / FastAPI, same payload, c={c}, {payload}",
                f"{o['throughput_per_s']:.2f} vs {t['throughput_per_s']:.2f} frames/s: **{ratio:.2f}x**",
                ">= 1.0x",
                ratio >= 1.0,
            )
        )
        p99.append((payload, o["p99_ms"], t["p99_ms"]))
    rows.append(
        _target(
            f"our p99 at c={c} vs FastAPI's",
            "; ".join(f"{p} {a:.0f} vs {b:.0f} ms" for p, a, b in p99),
            "<= FastAPI's",
            all(a <= b for _, a, b in p99),
        )
    )
    floor = results["floor"]["throughput_per_s"]
    kind, row = max(
        ((k, r) for k, rows_ in results["served"].items() for r in rows_), key=lambda kr: kr[1]["throughput_per_s"]
    )
    rows.append(
        _target(
            "served / in-process floor, best entry point and concurrency",
            f"{kind} c={row['concurrency']} {row['throughput_per_s']:.2f} vs {floor:.2f} frames/s: "
            f"**{row['throughput_per_s'] / floor:.2f}x**",
            ">= 0.8x",
            row["throughput_per_s"] / floor >= 0.8,
        )
    )
    scaling = []
    for k, rows_ in results["served"].items():
        one, four = _at(rows_, 1), _at(rows_, c)
        if one and four:
            scaling.append((k, four["throughput_per_s"] / one["throughput_per_s"]))
    rows.append(
        _target(
            f"served throughput, c={c} vs c=1",
            ", ".join(f"{k} {r:.2f}x" for k, r in scaling),
            "not lower (>= 1.0x)",
            all(r >= 1.0 for _, r in scaling),
        )
    )
    rows.append(_first_request(results.get("warmup")))
    return rows


def _first_request(warmup: dict | None) -> dict:
    """From loadtests/bench_warmup's results: {entry: {"first_ms", "steady_ms"}} under "entries"."""
    measure = "first request after a load / steady state"
    entries = (warmup or {}).get("entries") or {}
    ratios = {}
    for name, e in entries.items():
        first, steady = e.get("first_ms"), e.get("steady_ms")
        if isinstance(first, (int, float)) and isinstance(steady, (int, float)) and steady > 0:
            ratios[name] = first / steady
    if not ratios:
        return _target(measure, "not measured in this run", f"<= {FIRST_REQUEST_TARGET}x", None)
    result = ", ".join(f"{k} {r:.2f}x" for k, r in ratios.items())
    return _target(
        measure, result, f"<= {FIRST_REQUEST_TARGET}x", all(r <= FIRST_REQUEST_TARGET for r in ratios.values())
    )


def targets_text(results: dict) -> str:
    return "\n".join(f"target: {t['measure']}: {t['result']} ({t['target']}: {t['verdict']})" for t in targets(results))


def _table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return out + ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]


def targets_section(results: dict) -> list[str]:
    rows = [[t["measure"], t["result"], t["target"], t["verdict"]] for t in targets(results)]
    return ["## Targets (issue 14)", "", *_table(["measure", "result", "target", "verdict"], rows), ""]


def fair_section(results: dict) -> list[str]:
    """Like against like: the same request bytes, the same ONNX files and threads, every answer checked."""
    lines = [
        "## Vision: against a FastAPI + onnxruntime server, like for like",
        "",
        "`loadtests/baselines/fastapi_server.py` (uvicorn, one process, FastAPI's thread pool) runs the same "
        "model.onnx files as the served repository, each with the intra-op threads its config.pbtxt gives "
        "(no spinning, the same session factory). FP32: both get the raw 99.5 MB frame in the HTTP body "
        "(Triton's binary tensor extension; FastAPI's raw body) and run the FP32 chain. JPEG: both get the "
        "same JPEG, decode it with the contract's decoder into the UINT8 frame and run the `_u8` chain. "
        "Both answer the detections, the crop and the oil level as raw float32, and every answer of both "
        "was compared with the in-process reference run (detections, crop and oil %).",
        "",
    ]
    rows = []
    for ours, theirs, payload in PAIRS:
        for o in results["served"][ours]:
            t = _at(results["fastapi"][theirs], o["concurrency"])
            if t is None:
                continue
            ratio = o["throughput_per_s"] / t["throughput_per_s"]
            rows.append(
                [payload, o["concurrency"], f"{o['throughput_per_s']:.2f}", f"{t['throughput_per_s']:.2f}",
                 f"{ratio:.2f}", f"{o['p50_ms']:.0f} / {o['p99_ms']:.0f}", f"{t['p50_ms']:.0f} / {t['p99_ms']:.0f}"]
            )  # fmt: skip
    header = [
        "payload",
        "concurrency",
        "ours /s",
        "FastAPI /s",
        "ours/FastAPI",
        "ours p50/p99 ms",
        "FastAPI p50/p99 ms",
    ]
    return [*lines, *_table(header, rows), ""]


def budget_section(results: dict) -> list[str]:
    """The latency budget: mean ms per request in each category, and per step."""
    budget = results.get("budget")
    if not budget:
        return []
    lines = [
        "## Vision: latency budget per request",
        "",
        "From one traced server (`python -m loadtests.profile_vision`): Triton's TIMESTAMPS trace of every "
        "request, timers inside each onnx_runtime stub around `execute` and `session.run`, and the client's "
        "own send/answer times, all on CLOCK_MONOTONIC. Means over the traced requests, in ms. *Input copies*: "
        "from the step's COMPUTE_START to the stub entering `execute` (Triton's copy into the stub's shared "
        "memory, then the stub's own copy). *ONNX run*: `session.run` in the stub; the part up to the same "
        "ONNX file's in-process time (same threads, one request at a time) and the part above it "
        "(contention). *Output copies*: from leaving `execute` to COMPUTE_END. *Ensemble overhead*: the "
        "ensemble's span minus its steps'. *Client write + transport*: the client's latency minus the "
        "server's (HTTP_RECV_START to HTTP_SEND_END), which holds writing the frame into shared memory "
        "for shm.",
        "",
        "![latency budget](budget.png)",
        "",
    ]
    header = ["entry", "c", "latency ms", *CATEGORIES]
    rows = []
    for entry, by_c in budget["entries"].items():
        for c, b in by_c.items():
            rows.append([entry, c, f"{b['latency_ms']:.0f}", *(f"{b['categories'].get(k, 0):.1f}" for k in CATEGORIES)])
    lines += _table(header, rows)
    lines += ["", "Per step (ms; run = `session.run` served, twin = the same file in-process):", ""]
    rows = []
    twins = budget["in_process_ms"]
    for entry, by_c in budget["entries"].items():
        for c, b in by_c.items():
            for step, p in b["steps"].items():
                rows.append(
                    [entry, c, step, f"{p['queue']:.1f}", f"{p['input copies']:.1f}", f"{p['run_ms']:.1f}",
                     f"{twins[step]:.1f}" if step in twins else "-", f"{p['rest of execute (Python)']:.1f}",
                     f"{p['output copies']:.1f}"]
                )  # fmt: skip
    lines += _table(
        ["entry", "c", "step", "queue", "input copies", "run", "twin", "rest of execute", "output copies"], rows
    )
    return [*lines, ""]


def budget_plot(results: dict, out: Path) -> Path | None:
    """budget.png: one stacked bar per entry point and concurrency."""
    budget = results.get("budget")
    if not budget:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [(f"{e}\nc={c}", b["categories"]) for e, by_c in budget["entries"].items() for c, b in by_c.items()]
    fig, ax = plt.subplots(figsize=(9, 5))
    bottom = [0.0] * len(bars)
    colors = plt.get_cmap("tab10").colors
    for i, cat in enumerate(CATEGORIES):
        values = [max(0.0, cats.get(cat, 0.0)) for _, cats in bars]
        if not any(values):
            continue
        ax.bar(range(len(bars)), values, 0.6, bottom=bottom, label=cat, color=colors[i % len(colors)])
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_xticks(range(len(bars)), [label for label, _ in bars], fontsize=8)
    ax.set(ylabel="ms per request (mean)", title="Where a vision request's time goes")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    path = out / "budget.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def levers_section(tuning_file: Path = TUNING) -> list[str]:
    """What `make tune` measured for each setting, and what it chose (loadtests/tuning/cpu.json)."""
    if not tuning_file.is_file():
        return []
    tuning = json.loads(tuning_file.read_text())
    lines = [
        "## Vision: the levers `make tune` measured",
        "",
        f"From `make tune` on {tuning['date'][:10]} (its own run, not this report's): each candidate built with "
        "the builder's flags, served, and driven at concurrency 1 and 4 per entry point (frames/s). Chosen: "
        f"`{' '.join(tuning['chosen']['args']) or '(the defaults)'}` ({tuning['chosen']['name']}).",
        "",
    ]
    entries = tuning["entries"]
    header = ["candidate", "builder flags", *(f"{e} c={c}" for e in entries for c in tuning["concurrency"]), "score"]
    rows = []
    for cand in tuning["candidates"]:
        cells = [f"{cand['throughput'][e][str(c)]:.2f}" for e in entries for c in tuning["concurrency"]]
        score = cand["score"]
        rows.append([cand["name"], f"`{' '.join(cand['args'])}`", *cells, "-" if math.isnan(score) else f"{score:.2f}"])
    return [*lines, *_table(header, rows), "", *(tuning.get("notes") or []), ""]
