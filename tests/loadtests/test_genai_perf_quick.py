"""`make genai-perf`'s path in quick mode: genai-perf 0.0.16 (with perf_analyzer 2.51) against gpt2_stream on a
real tritonserver, as a Triton user runs it (--endpoint-type kserve --backend tensorrtllm --streaming)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from loadtests import genai_perf
from serving.launcher import TritonServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tools() -> None:
    try:
        genai_perf.find_genai_perf(genai_perf.perf.default_tools_venv())
    except genai_perf.ToolError as exc:
        pytest.skip(f"genai-perf is not installed (make perf-tools; make test installs it): {exc}")


def test_genai_perf_quick_keeps_csv_and_json_when_run_against_gpt2_stream(
    tools: None, server: TritonServer, model_repo: Path, tmp_path: Path
) -> None:
    argv = ["--quick", "--url", server.http_url, "--grpc-url", server.grpc_url, "--repository", str(model_repo)]
    rc = genai_perf.main([*argv, "--out", str(tmp_path)])
    assert rc == 0, "\n".join(p.read_text()[-3000:] for p in tmp_path.glob("*.log"))

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["problems"] == []
    (row,) = summary["rows"]
    assert row["concurrency"] == 1 and row["output_tok_s"] > 0 and row["requests_s"] > 0
    assert 0 < row["ttft_ms"] <= row["request_latency_ms"]
    csv_path, json_path = tmp_path / row["csv"], tmp_path / row["json"]
    with csv_path.open() as f:
        assert any(r and r[0] == "Time To First Token (ms)" for r in csv.reader(f))
    assert json.loads(json_path.read_text())["inter_token_latency"]["unit"] == "ms"

    # What perf_analyzer recorded: every request got exactly max_tokens (genai-perf sent min_length = max_tokens),
    # streamed as several responses, and the server's own token count says so on the last one.
    (export,) = json_path.parent.glob("profile_export.json")
    (experiment,) = json.loads(export.read_text())["experiments"]
    assert len(experiment["requests"]) == genai_perf.QUICK.request_count
    for request in experiment["requests"]:
        assert request["request_inputs"]["exclude_input_in_output"] is True
        assert len(request["response_timestamps"]) > 1
        assert request["response_outputs"][-1]["num_output_tokens"] == genai_perf.QUICK.output_tokens
