"""`make soak --quick` against a real tritonserver: no errors, flat memory after warm-up, p99 at both ends."""

from __future__ import annotations

import csv
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from serving.launcher import TritonServer

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_soak_quick_passes_with_flat_memory_when_both_pipelines_run_clean(
    server: TritonServer, model_repo: Path, tmp_path: Path
) -> None:
    cmd = [sys.executable, "-m", "loadtests.soak", "--quick", "--url", server.http_url, "--out", str(tmp_path)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    verdict = json.loads((tmp_path / "verdict.json").read_text())
    assert verdict["passed"] and verdict["problems"] == [] and verdict["errors"] == verdict["wrong_answers"] == 0
    answers = json.loads((tmp_path / "answers.json").read_text())  # computed here, every answer checked against it
    assert answers["vision"]["frames"] and answers["gpt2"]["texts"] and verdict["answers"]["file"] == "answers.json"
    assert (tmp_path / "soak.png").read_bytes()[:4] == b"\x89PNG"
    assert verdict["duration_s"] >= 35 and verdict["samples"] >= 20
    assert all(n > 0 for n in verdict["requests_per_pipeline"].values())
    assert set(verdict["requests_per_pipeline"]) == {"vision", "gpt2"}

    memory = {m["process"]: m for m in verdict["memory"]}
    stubs = {p.name for p in model_repo.iterdir() if (p / "1" / "model.py").is_file()}  # Python-backend models
    # Found by pid and labelled from the stub command lines: the model, or its instances where it has several.
    assert {"tritonserver", "total"} <= set(memory)
    labels = set(memory) - {"tritonserver", "total"}
    models = {next((m for m in stubs if label == m or re.fullmatch(rf"{m}_\d+_\d+", label)), label) for label in labels}
    assert models == stubs
    for m in memory.values():
        assert m["ok"] and m["start_mb"] > 0 and math.isfinite(m["growth_pct"]) and m["growth_pct"] <= 10

    latency = {(r["type"], r["name"]): r for r in verdict["latency"]}
    for key in (("infer", "ensemble"), ("infer", "ensemble_jpeg"), ("sse", "gpt2_stream"), ("ttft", "gpt2_stream")):
        assert latency[key]["p99_start_ms"] > 0 and latency[key]["p99_end_ms"] > 0, key

    with (tmp_path / "memory.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["process"] for r in rows} == set(memory) - {"total"}
    assert "| tritonserver |" in (tmp_path / "summary.md").read_text() and "PASSED" in done.stdout
