"""`make bench --quick` end to end: every path of the benchmark against real servers, so the harness cannot rot."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from loadtests import bench, report, report_vision

pytestmark = pytest.mark.integration


def test_bench_writes_full_report_when_run_in_quick_mode(model_repo: Path, tmp_path: Path) -> None:
    results = bench.run(bench.Plan.quick(), tmp_path, repo=model_repo, nobatch=None)

    assert report.error_count(results) == 0
    assert set(results["transports"]) == {"http_json", "http_binary", "grpc", "shm", "jpeg"}
    for kind, row in results["transports"].items():
        assert row["requests"] >= 1 and row["payload_bytes"] > 0, kind
    payload = {k: r["payload_bytes"] for k, r in results["transports"].items()}
    assert payload["shm"] < payload["jpeg"] < payload["http_binary"] < payload["http_json"]
    for rows in (*results["served"].values(), *results["fastapi"].values()):
        assert [r["concurrency"] for r in rows] == list(bench.Plan.quick().concurrency)
        assert all(r["requests"] == r["concurrency"] and r["throughput_per_s"] > 0 for r in rows)
    batching = results["batching"]
    assert batching["on"]["requests"] == batching["off"]["requests"] == 8
    assert all(s["inferences"] == s["executions"] for s in batching["off_stats"].values())  # truly off
    g = results["gpt2"]
    assert [r["streams"] for r in g["served"]] == [1, 4, 8] and all(r["tok_s"] > 0 for r in g["served"])
    assert g["floor"]["tok_s"] > 0 and g["floor"]["tokens"] >= 1
    assert set(g["ratios"]) == {"floor", "scaling", "itl"}
    before, after = g["rss"]["before_load"], g["rss"]["after_load"]
    assert before["stubs"] == 0 < after["stubs"] and 0 < before["total_mb"] < after["total_mb"]
    assert {"gpt2", "gpt2_stream"} <= set(g["rss"]["models"])
    assert g["genai_perf"]["problems"] == []
    if not g["genai_perf"]["skipped"]:  # make test installs genai-perf (perf-tools): then it ran beside ours
        assert [r["concurrency"] for r in g["genai_perf"]["rows"]] == [1]
    assert all(math.isfinite(h["ratio"]) and h["ratio"] > 0 for h in report.headlines(results).values())
    assert results["machine"]["triton"].startswith("2.")
    batch = results["batch"]  # loadtests/bench_batch: a folder of frames through `clients.clo --batch`
    assert batch["errors"] == 0 and batch["summary"]["scored"] == 4 and batch["ratio"] > 0
    assert "## Batch scoring" in (tmp_path / "report.md").read_text()
    budget = results["budget"]["entries"]  # traced, with the stubs' timers, at concurrency 1 and 4
    assert set(budget) == {"shm", "http_binary", "jpeg"}
    for entry, by_c in budget.items():
        for c, b in by_c.items():
            assert b["requests"] == int(c) and b["untraced"] == 0, (entry, c)
            assert b["categories"]["ONNX run, in-process time"] > 0 and b["latency_ms"] > 0, (entry, c)
    assert len(report_vision.targets(results)) == 6

    text = (tmp_path / "report.md").read_text()
    headings = ("## Machine", "## Headlines", "transport", "in-process floor", "batching", "FastAPI", "GPT-2")
    for heading in (*headings, "genai-perf beside ours", "Server memory", "## Targets", "latency budget"):
        assert heading in text
    for plot in ("throughput.png", "latency.png", "budget.png"):
        assert (tmp_path / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "results.json").read_text())["floor"]["errors"] == 0
