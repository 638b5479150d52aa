"""Locust and the soak check answers, not only shapes: against a real tritonserver, the true reference
(computed in-process from the committed weights) passes and a deliberately wrong one fails every request."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests import locust_common as common
from loadtests import references
from serving.launcher import TritonServer

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
MAX_TOKENS = 8


@pytest.fixture(scope="module")
def answers() -> dict:
    """The reference answers for the runners' defaults (one synthetic frame, the built-in prompts)."""
    return references.compute("synthetic", 1, references.GPT2_PROMPTS, MAX_TOKENS)


def _write(answers: dict, path: Path) -> Path:
    path.write_text(json.dumps(answers))
    return path


def _wrong(answers: dict) -> dict:
    """The same answers with the oil level 20 points off and every text changed; detections kept."""
    wrong = copy.deepcopy(answers)
    for frame in wrong["vision"]["frames"].values():
        frame["oil_pct"] += 20.0 if frame["oil_pct"] < 50 else -20.0
    wrong["gpt2"]["texts"] = {p: t + " and more" for p, t in wrong["gpt2"]["texts"].items()}
    return wrong


def _run(module: str, out: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", module, "--out", str(out), *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


def _counts(out: Path) -> dict[str, tuple[int, int]]:
    """(type name) -> (requests, failures) of the real requests in locust's stats."""
    return {f"{r.type} {r.name}": (r.requests, r.failures) for r in common.read_stats(out / "locust_stats.csv")}


def test_loadtest_passes_with_the_true_reference_and_fails_every_request_when_it_is_wrong(
    server: TritonServer, answers: dict, tmp_path: Path
) -> None:
    args = ["--url", server.http_url, "--entry", "ensemble_jpeg", "--run-time", "8s", "--max-tokens", str(MAX_TOKENS)]
    good, bad = tmp_path / "good", tmp_path / "bad"
    for folder in (good, bad):
        folder.mkdir()
    done = _run("loadtests.loadtest", good, *args, "--answers", str(_write(answers, tmp_path / "true.json")))
    assert done.returncode == 0, done.stdout + done.stderr
    counts = _counts(good)
    assert counts["infer ensemble_jpeg"][0] > 0 and counts["sse gpt2_stream"][0] > 0
    assert counts["infer ensemble_jpeg"][1] == counts["sse gpt2_stream"][1] == 0

    done = _run("loadtests.loadtest", bad, *args, "--answers", str(_write(_wrong(answers), tmp_path / "wrong.json")))
    assert done.returncode == 1, done.stdout + done.stderr
    summary = json.loads((bad / "summary.json").read_text())
    assert not summary["passed"] and "failed" in summary["problems"][0]
    for key in ("infer ensemble_jpeg", "sse gpt2_stream"):
        requests, failures = _counts(bad)[key]
        assert requests > 0 and failures == requests, (key, requests, failures)
    failures = (bad / "locust_failures.csv").read_text()
    assert "wrong answer: oil level" in failures and "wrong answer: generated" in failures


def test_soak_fails_and_counts_wrong_answers_when_the_reference_is_wrong(
    server: TritonServer, answers: dict, tmp_path: Path
) -> None:
    wrong = _write(_wrong(answers), tmp_path / "wrong.json")
    out = tmp_path / "soak"
    args = ["--url", server.http_url, "--duration", "12s", "--max-tokens", str(MAX_TOKENS), "--answers", str(wrong)]
    done = _run("loadtests.soak", out, *args)
    assert done.returncode == 1, done.stdout + done.stderr
    verdict = json.loads((out / "verdict.json").read_text())
    assert not verdict["passed"] and verdict["wrong_answers"] == verdict["errors"] > 0
    assert any("wrong answer" in p for p in verdict["problems"]) and "SOAK FAILED" in done.stderr
    assert verdict["answers"]["file"] == str(wrong)


def test_loadtest_computes_and_keeps_the_reference_when_no_answers_are_given(
    server: TritonServer, answers: dict, tmp_path: Path
) -> None:
    """The runner's own reference (answers.json) is the one computed here, and the server's answers match it."""
    args = ["--url", server.http_url, "--pipeline", "gpt2", "--run-time", "3s", "--max-tokens", str(MAX_TOKENS)]
    done = _run("loadtests.loadtest", tmp_path, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    kept = json.loads((tmp_path / "answers.json").read_text())
    assert kept["gpt2"]["texts"] == answers["gpt2"]["texts"] and "vision" not in kept
    assert (
        kept["gpt2"]["weights"]["sha256"]["model.safetensors"]
        == answers["gpt2"]["weights"]["sha256"]["model.safetensors"]
    )
