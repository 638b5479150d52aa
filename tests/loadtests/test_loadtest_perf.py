"""`make perf`'s path in quick mode: perf_analyzer against a real tritonserver, CSV per model."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from loadtests import perf
from serving.launcher import TritonServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tools() -> None:
    try:
        perf.find_perf_analyzer(perf.default_tools_venv())
    except perf.ToolError as exc:
        pytest.skip(f"perf_analyzer is not installed (make perf-tools; make test installs it): {exc}")


def test_perf_quick_writes_a_csv_row_per_model_when_swept_at_concurrency_one(
    tools: None, server: TritonServer, tmp_path: Path
) -> None:
    rc = perf.main(["--quick", "--url", server.http_url, "--grpc-url", server.grpc_url, "--out", str(tmp_path)])
    assert rc == 0, "\n".join(p.read_text()[-2000:] for p in tmp_path.glob("*.log"))
    for model in perf.MODELS:
        with (tmp_path / f"{model}.csv").open() as f:
            (row,) = list(csv.DictReader(f))
        assert row["Concurrency"] == "1" and float(row["Inferences/Second"]) > 0, model
        assert 0 < float(row["p50 latency"]) <= float(row["p99 latency"]), model
    with (tmp_path / "gpt2_stream.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    assert float(row["Response Throughput"]) > float(row["Inferences/Second"])  # several pieces per stream
    assert "| ensemble | 1 |" in (tmp_path / "summary.md").read_text()
