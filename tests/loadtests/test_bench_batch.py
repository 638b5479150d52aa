"""The batch part of `make bench` (loadtests/bench_batch.py) against the package's real server."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from clients.clo import CloClient
from clients.synthetic import synthetic_frame
from loadtests import bench_batch

pytestmark = pytest.mark.integration


def test_bench_batch_scores_every_frame_and_compares_with_closed_loop_when_run_quick(server, tmp_path: Path) -> None:
    buf = io.BytesIO()
    synthetic_frame(seed=3).save(buf, "JPEG", quality=90)
    client = CloClient(server.http_url)
    try:
        oil = client.infer_encoded(buf.getvalue(), (3840, 2160)).oil_pct
    finally:
        client.close()

    result = bench_batch.measure_with(server.http_url, bench_batch.Settings.quick(), tmp_path, buf.getvalue(), oil)
    closed_loop = [{"concurrency": 4, "throughput_per_s": 1.0, "p50_ms": 900.0}]
    bench_batch.compare(result, closed_loop)

    assert result["errors"] == 0, result["problems"]
    s = result["summary"]
    assert (s["scored"], s["errors"], s["rows_total"]) == (4, 0, 4) and s["images_per_s"] > 0
    assert result["ratio"] == pytest.approx(s["images_per_s"] / 1.0)
    text = bench_batch.markdown(result)
    assert "## Batch scoring" in text and "| batch |" in text and "closed loop, best" in text

    wrong = bench_batch.measure_with(server.http_url, bench_batch.Settings.quick(), tmp_path, buf.getvalue(), oil + 5)
    assert wrong["errors"] == 1 and "reference frame" in wrong["problems"][0]  # a wrong answer fails the run
