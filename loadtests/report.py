"""The benchmark report: report.md and PNG plots from one run's results (see loadtests/bench.py)."""

from __future__ import annotations

from pathlib import Path

from loadtests import report_gpt2, report_vision

SERVED_KINDS = ("shm", "jpeg", "http_binary")
TRANSPORT_NAMES = {
    "http_json": "JSON FP32 over REST (KServe v2 style)",
    "http_binary": "binary FP32 over HTTP",
    "grpc": "gRPC (raw FP32)",
    "shm": "system shared memory (FP32)",
    "jpeg": "JPEG bytes to ensemble_jpeg",
}
TARGETS = {"floor": 0.8, "json": 3.0, "fastapi_fp32": 1.0, "fastapi_jpeg": 1.0}


def best_entry(results: dict) -> str:
    """The served entry point with the highest throughput at any concurrency."""
    return max(SERVED_KINDS, key=lambda k: max(r["throughput_per_s"] for r in results["served"][k]))


def _at(rows: list[dict], concurrency: int) -> dict:
    return next(r for r in rows if r["concurrency"] == concurrency)


def headlines(results: dict) -> dict:
    """The ratios the README quotes, each with its target and whether it was met."""
    floor = results["floor"]["throughput_per_s"]
    best = best_entry(results)
    best_row = max(results["served"][best], key=lambda r: r["throughput_per_s"])
    t = results["transports"]
    fastest = min(("shm", "jpeg"), key=lambda k: t[k]["p50_ms"])
    c = results["plan"]["baseline_concurrency"]
    like = {}
    for ours, theirs, payload in report_vision.PAIRS:  # like for like: the same request bytes
        o, f = (
            _at(results["served"][ours], c)["throughput_per_s"],
            _at(results["fastapi"][theirs], c)["throughput_per_s"],
        )
        like[f"fastapi_{payload.lower()}"] = {
            "ratio": o / f,
            "detail": f"concurrency {c}, {payload} to both: ours ({ours}) {o:.2f}/s vs FastAPI {f:.2f}/s",
        }
    on, off = results["batching"]["on"], results["batching"]["off"]
    return {
        "floor": {
            "ratio": best_row["throughput_per_s"] / floor,
            "detail": f"{best} at concurrency {best_row['concurrency']}: {best_row['throughput_per_s']:.2f} "
            f"frames/s vs {floor:.2f} in-process",
        },
        "json": {
            "ratio": t["http_json"]["p50_ms"] / t[fastest]["p50_ms"],
            "detail": f"{fastest} p50 {t[fastest]['p50_ms']:.0f} ms vs JSON FP32 {t['http_json']['p50_ms']:.0f} ms",
        },
        **like,
        "batching": {
            "ratio": on["throughput_per_s"] / off["throughput_per_s"] if off["throughput_per_s"] else float("nan"),
            "detail": f"{results['batching']['entry']} at concurrency {on['concurrency']}: "
            f"{on['throughput_per_s']:.2f}/s on vs {off['throughput_per_s']:.2f}/s off",
        },
        **report_gpt2.headlines(results["gpt2"]),
    }


def _target(name: str, h: dict) -> str:
    return h.get("target") or (f">= {TARGETS[name]:g}x" if name in TARGETS else "")


def _verdict(name: str, h: dict) -> str:
    met = h["met"] if "met" in h else h["ratio"] >= TARGETS[name] if name in TARGETS else None
    return "" if met is None else "met" if met else "**missed**"


def headline_text(results: dict) -> str:
    h = headlines(results)
    labels = {
        "floor": "served / in-process floor (best entry, best concurrency)",
        "json": "shm or JPEG vs JSON FP32, per request",
        "fastapi_fp32": "ours / FastAPI at concurrency 4, FP32 body to both",
        "fastapi_jpeg": "ours / FastAPI at concurrency 4, JPEG to both",
        "batching": "dynamic batching on / off at concurrency 8",
    }
    labels.update({k: report_gpt2.label(k) for k in h if k.startswith("gpt2_")})
    lines = []
    for key, label in labels.items():
        target = f" (target {_target(key, h[key])}: {_verdict(key, h[key]).strip('*')})" if _target(key, h[key]) else ""
        lines.append(f"{label}: {h[key]['ratio']:.2f}x{target} - {h[key]['detail']}")
    return "\n".join(lines) + "\n" + report_vision.targets_text(results)


def error_count(results: dict) -> int:
    runs = [results["floor"], *results["transports"].values(), results["batching"]["on"], results["batching"]["off"]]
    runs += [r for rows in (*results["served"].values(), *results["fastapi"].values()) for r in rows]
    return sum(r["errors"] for r in runs) + report_gpt2.problems(results["gpt2"])


# --- markdown -------------------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return out + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _mb(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} KB" if n >= 1e3 else f"{n} B"


def markdown(results: dict) -> str:
    m, h, floor = results["machine"], headlines(results), results["floor"]
    gpu = m["gpu"]
    lines = [
        f"# Benchmark report, {m['date'][:10]}",
        "",
        f"Measured in one run by `make bench` ({'quick mode: a smoke run, figures not meaningful' if results['plan']['gpt2_size'] == 'tiny' else 'full mode'}). "  # noqa: E501
        "Closed-loop clients on the same machine as the server; every response was checked (shapes, "
        "finite values, the reference oil level), and a wrong answer counts as an error.",
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpus']} x {m['cpu_model']}, {m['memory_gib']} GiB; "
        f"load average at start {m['load_average_at_start']}",
        f"- GPU: {gpu}",
        f"- Triton {m['triton']} (pip nvidia-pytriton build, Python backend), onnxruntime {m['onnxruntime']}, "
        f"numpy {m['numpy']}, Python {m['python']}",
        "- Models (the trained stand-ins of weights/clo, trained on synthetic CLO frames; model.onnx sizes): "
        + ", ".join(f"{k} {_mb(v)}" for k, v in m["model_onnx_bytes"].items()),
        "",
        "## Headlines",
        "",
    ]
    rows = []
    names = {
        "floor": "Served / in-process floor",
        "json": "shm or JPEG vs JSON FP32",
        "fastapi_fp32": "Ours / FastAPI at c=4, FP32 to both",
        "fastapi_jpeg": "Ours / FastAPI at c=4, JPEG to both",
        "batching": "Batching on / off at c=8",
        **{k: report_gpt2.label(k) for k in h if k.startswith("gpt2_")},
    }
    for key, name in names.items():
        target = _target(key, h[key]) or "-"
        rows.append([name, f"{h[key]['ratio']:.2f}x", target, _verdict(key, h[key]) or "-", h[key]["detail"]])
    lines += _table(["measure", "ratio", "target", "verdict", "figures"], rows)
    lines += ["", *report_vision.targets_section(results)]
    lines += ["## Vision: one frame by each transport (concurrency 1)", ""]
    rows = [
        [TRANSPORT_NAMES[k], _mb(r["payload_bytes"]), r["requests"], f"{r['p50_ms']:.0f}", f"{r['p99_ms']:.0f}"]
        for k, r in results["transports"].items()
    ]
    lines += _table(["transport", "request body", "requests", "p50 ms", "p99 ms"], rows)
    lines += [
        "",
        "Shared memory's body only names the region; the client still writes each new 99.5 MB frame into it, "
        "and that copy is inside the latency.",
        "",
        "## Vision: served throughput against the in-process floor",
        "",
        f"Floor: the four model.onnx run one after another in one process (onnxruntime, 2 threads): "
        f"{floor['throughput_per_s']:.2f} frames/s, p50 {floor['p50_ms']:.0f} ms.",
        "",
    ]
    rows = []
    for kind in SERVED_KINDS:
        for r in results["served"][kind]:
            rows.append(
                [
                    TRANSPORT_NAMES[kind],
                    r["concurrency"],
                    f"{r['throughput_per_s']:.2f}",
                    f"{r['throughput_per_s'] / floor['throughput_per_s']:.2f}",
                    f"{r['p50_ms']:.0f}",
                    f"{r['p99_ms']:.0f}",
                ]
            )
    lines += _table(["entry", "concurrency", "frames/s", "served/floor", "p50 ms", "p99 ms"], rows)
    b = results["batching"]
    lines += ["", f"## Vision: dynamic batching on and off ({b['entry']}, concurrency {b['on']['concurrency']})", ""]
    rows = []
    for state in ("on", "off"):
        r, stats = b[state], b[f"{state}_stats"]
        per_step = ", ".join(
            f"{name} {s['inferences']}/{s['executions']}" for name, s in stats.items() if s["executions"]
        )
        rows.append([state, f"{r['throughput_per_s']:.2f}", f"{r['p50_ms']:.0f}", f"{r['p99_ms']:.0f}", per_step])
    lines += _table(["batching", "frames/s", "p50 ms", "p99 ms", "requests/executions per step"], rows)
    lines += [
        "",
        "The off variant is built by `python -m builders vision --no-dynamic-batching`, not edited by hand.",
        "",
    ]
    lines += report_vision.fair_section(results)
    lines += report_vision.budget_section(results)
    lines += report_vision.levers_section()
    lines += [*report_gpt2.section(results["gpt2"], results["plan"]["gpt2_size"])]
    lines += [
        "",
        "## Plots",
        "",
        "![throughput against concurrency](throughput.png)",
        "",
        "![latency percentiles](latency.png)",
        "",
    ]
    return "\n".join(lines) + "\n"


# --- plots ------------------------------------------------------------------------------------------------


def plots(results: dict, out: Path) -> list[Path]:
    """throughput.png and latency.png beside the report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    floor = results["floor"]["throughput_per_s"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for kind in SERVED_KINDS:
        rows = results["served"][kind]
        ax.plot([r["concurrency"] for r in rows], [r["throughput_per_s"] for r in rows], "o-", label=f"Triton {kind}")
    for kind, rows in results["fastapi"].items():
        ax.plot(
            [r["concurrency"] for r in rows], [r["throughput_per_s"] for r in rows], "s--", label=kind.replace("_", " ")
        )
    b = results["batching"]
    for state, marker in (("on", "^"), ("off", "v")):
        ax.plot(
            [b[state]["concurrency"]],
            [b[state]["throughput_per_s"]],
            marker,
            ms=9,
            label=f"{b['entry']} batching {state}",
        )
    ax.axhline(floor, color="gray", ls=":", label="in-process floor")
    ax.set(xlabel="concurrency (closed-loop clients)", ylabel="frames / s", title="Vision throughput")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=110)
    plt.close(fig)

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    kinds = list(results["transports"])
    for i, q in enumerate((50, 90, 99)):
        left.bar(
            [k + i * 0.27 for k in range(len(kinds))],
            [results["transports"][k][f"p{q}_ms"] for k in kinds],
            0.27,
            label=f"p{q}",
        )
    left.set_xticks([k + 0.27 for k in range(len(kinds))], kinds, fontsize=8)
    left.set(yscale="log", ylabel="ms", title="One frame per transport (c=1)")
    left.legend(fontsize=8)
    for kind in SERVED_KINDS:
        rows = results["served"][kind]
        right.plot([r["concurrency"] for r in rows], [r["p50_ms"] for r in rows], "o-", label=f"{kind} p50")
        right.plot([r["concurrency"] for r in rows], [r["p99_ms"] for r in rows], "x:", label=f"{kind} p99")
    right.set(xlabel="concurrency", ylabel="ms", title="Served latency percentiles")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    plt.close(fig)
    return [out / "throughput.png", out / "latency.png"]


def write(results: dict, out: Path) -> Path:
    """report.md and its plots into `out`; returns the report's path."""
    plots(results, out)
    report_vision.budget_plot(results, out)
    path = out / "report.md"
    path.write_text(markdown(results))
    return path
