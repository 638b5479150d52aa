"""Headless locust runs (`make loadtest`'s path) against a real tritonserver, one per pipeline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests import locust_common as common
from serving.launcher import TritonServer

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def run_loadtest(out: Path, *args: str) -> tuple[int, dict, str]:
    """Run the runner as `make loadtest` does; (exit code, summary.json, its output)."""
    cmd = [sys.executable, "-m", "loadtests.loadtest", "--out", str(out), *args]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").is_file() else {}
    return done.returncode, summary, done.stdout + done.stderr


def rows_by_key(out: Path) -> dict[tuple[str, str], common.Row]:
    return {(r.type, r.name): r for r in common.read_stats(out / "locust_stats.csv")}


def test_loadtest_vision_passes_with_checked_responses_when_both_entries_are_loaded(
    server: TritonServer, tmp_path: Path
) -> None:
    rc, summary, output = run_loadtest(
        tmp_path, "--url", server.http_url, "--pipeline", "vision", "--entry", "both", "--run-time", "8s"
    )
    assert rc == 0, output
    assert summary["passed"] and summary["failures"] == 0
    rows = rows_by_key(tmp_path)
    for entry in ("ensemble", "ensemble_jpeg"):
        assert rows[(common.INFER, entry)].requests > 0 and rows[(common.INFER, entry)].failures == 0
        assert rows[(common.INFER, entry)].p50_ms > 0
    assert "requests" in output and "p99 ms" in output  # the printed summary


def test_loadtest_gpt2_records_ttft_itl_and_tokens_per_user_when_streaming(
    server: TritonServer, tmp_path: Path
) -> None:
    rc, summary, output = run_loadtest(
        tmp_path,
        "--url",
        server.http_url,
        "--pipeline",
        "gpt2",
        "--users",
        "2",
        "--run-time",
        "5s",
        "--max-tokens",
        "8",
    )
    assert rc == 0, output
    rows = rows_by_key(tmp_path)
    whole, ttft, itl = (rows[(kind, "gpt2_stream")] for kind in (common.STREAM, common.TTFT, common.ITL))
    assert whole.requests > 0 and whole.failures == 0 and summary["failures"] == 0
    assert ttft.requests == whole.requests and 0 < itl.requests <= whole.requests  # no ITL for a 1-token answer
    assert 0 < ttft.p50_ms <= whole.p50_ms and 0 < itl.p50_ms <= whole.p50_ms
    users = common.read_users(tmp_path / f"locust{common.USERS_CSV_SUFFIX}")
    assert len(users) == 2 and all(float(u["tokens_per_s"]) > 0 for u in users)
    assert sum(int(u["requests"]) for u in users) == whole.requests
    assert "tokens/s per user" in output


def test_loadtest_fails_and_counts_failures_when_the_server_rejects_every_request(
    server: TritonServer, tmp_path: Path
) -> None:
    rc, summary, output = run_loadtest(
        tmp_path, "--url", server.http_url, "--pipeline", "gpt2", "--run-time", "2s", "--max-tokens", "0"
    )
    assert rc == 1, output
    whole = rows_by_key(tmp_path)[(common.STREAM, "gpt2_stream")]
    assert whole.requests > 0 and whole.failures == whole.requests
    assert not summary["passed"] and "failed" in summary["problems"][0]
    assert "max_tokens" in (tmp_path / "locust_failures.csv").read_text()  # the server's message, kept
