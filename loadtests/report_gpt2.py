"""The GPT-2 part of the benchmark report (loadtests/bench_gpt2.py's results): headlines and a markdown section."""

from __future__ import annotations

from loadtests import genai_perf as gp

LABELS = {
    "floor": "GPT-2 served 1 stream / in-process floor",
    "scaling": "GPT-2 tokens/s, 8 streams / 1 stream",
    "itl": "GPT-2 ITL, 8 streams / 1 stream",
}


def headlines(g: dict) -> dict:
    """gpt2_<ratio> -> {ratio, detail, target, met} for the report's headline table."""
    out = {}
    for key, r in g["ratios"].items():
        target = f"{'>=' if r['at_least'] else '<='} {r['goal']:g}x"
        out[f"gpt2_{key}"] = {"ratio": r["value"], "detail": r["detail"], "target": target, "met": r["met"]}
    return out


def label(key: str) -> str:
    return LABELS[key.removeprefix("gpt2_")]


def problems(g: dict) -> int:
    """genai-perf runs that failed (a skipped genai-perf is no failure: it is reported as skipped)."""
    return len(g["genai_perf"]["problems"])


def _table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return out + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ours_and_genai_perf(g: dict) -> list[str]:
    gen = g["genai_perf"]
    if gen.get("skipped"):
        return [f"genai-perf was skipped: {gen['skipped']}."]
    served = {r["streams"]: r for r in g["served"]}
    rows = []
    for r in gen["rows"]:
        ours = served.get(r["concurrency"], {})
        rows.append(
            [
                r["concurrency"],
                _f(ours.get("tok_s")),
                _f(r["output_tok_s"]),
                _f(ours.get("ttft_ms")),
                _f(r["ttft_ms"]),
                _f(ours.get("itl_ms")),
                _f(r["itl_ms"]),
                f"{_f(ours.get('tokens_per_stream'))} / {_f(r['output_tokens'])}",
            ]
        )
    header = ["concurrency", "ours tok/s", "genai-perf tok/s", "ours TTFT ms", "genai-perf TTFT ms"]
    header += ["ours ITL ms", "genai-perf ITL ms", "tokens/request ours / genai-perf"]
    lines = _table(header, rows)
    lines += ["", f"genai-perf {gp.VERSION}: averages over its requests; its CSV and JSON are in {gen.get('out')}."]
    lines += [f"**genai-perf failed**: {p}" for p in gen["problems"]]
    return [*lines, "", *gp.DEFINITIONS]


def _rss(g: dict) -> list[str]:
    rss = g["rss"]
    stages = (("before_load", "no model loaded"), ("after_load", "GPT-2 models loaded"), ("after_run", "after the run"))
    rows = [
        [name, f"{rss[k]['server_mb']:.0f}", rss[k]["stubs"], f"{rss[k]['stubs_mb']:.0f}", f"{rss[k]['total_mb']:.0f}"]
        for k, name in stages
    ]
    lines = _table(["server", "tritonserver MB", "stubs", "stubs MB", "total MB"], rows)
    return [
        *lines,
        "",
        f"Loaded: {', '.join(rss['models'])}. VmRSS from /proc; pages shared between processes count in each.",
    ]


def section(g: dict, size: str) -> list[str]:
    """`## GPT-2 ...`: floor and served rows, genai-perf beside ours, the goal ratios, the server's RSS."""
    s, f = g["settings"], g["floor"]
    lines = [
        f"## GPT-2 ({size} stand-in, {s['prompt_tokens']}-token prompt, {s['new_tokens']} new tokens)",
        "",
        f"Floor: the served decoder ({f['decoder']}) in an in-process onnxruntime greedy loop with a KV cache, "
        f"batch 1, {f['threads']} threads, median of {f['rounds']}. Served: gRPC streams of gpt2_stream started "
        f"together, {s['rounds']} wave(s) each.",
        "",
    ]
    rows = [["in-process floor", _f(f["tok_s"]), _f(f["ttft_ms"]), _f(f["itl_ms"])]]
    for r in g["served"]:
        rows.append([f"served, {r['streams']} stream(s)", _f(r["tok_s"]), _f(r["ttft_ms"]), _f(r["itl_ms"])])
    lines += _table(["mode", "tokens/s", "TTFT ms", "ITL ms"], rows)
    ratio_rows = [
        [
            r["label"],
            f"{r['value']:.2f}x",
            f"{'>=' if r['at_least'] else '<='} {r['goal']:g}x",
            "met" if r["met"] else "**missed**",
            r["detail"],
        ]
        for r in g["ratios"].values()
    ]
    lines += ["", "### Against the goals", "", *_table(["measure", "ratio", "goal", "verdict", "figures"], ratio_rows)]
    lines += ["", "### genai-perf beside ours", "", *_ours_and_genai_perf(g)]
    return [*lines, "", "### Server memory", "", *_rss(g)]
