"""The Triton image's entrypoint and the Grafana dashboard."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.kserve.conftest import KSERVE, validate

ENTRYPOINT = KSERVE / "image" / "entrypoint.sh"
KEY = "0123456789abcdef" * 4


def run_entrypoint(tmp_path: Path, *args: str, wait: str = "30") -> subprocess.CompletedProcess:
    """entrypoint.sh with `echo` standing in for the NGC entrypoint."""
    env = {**os.environ, "TRITONYARD_NEXT_ENTRYPOINT": "echo", "TRITONYARD_UPLOAD_WAIT_SECS": wait}
    return subprocess.run(["sh", str(ENTRYPOINT), *args], capture_output=True, text=True, env=env, timeout=60)


def test_entrypoint_execs_triton_when_marker_exists_and_key_is_long(tmp_path: Path) -> None:
    (tmp_path / ".upload-complete").touch()
    args = ["tritonserver", f"--model-repository={tmp_path}", f"--http-restricted-api=model-repository:admin-key={KEY}"]
    done = run_entrypoint(tmp_path, *args)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == args


@pytest.mark.parametrize("key", ["tiny-key-42", "$(TRITON_ADMIN_KEY)", ""])
def test_entrypoint_refuses_when_the_key_is_short_or_unexpanded(tmp_path: Path, key: str) -> None:
    (tmp_path / ".upload-complete").touch()
    done = run_entrypoint(
        tmp_path,
        "tritonserver",
        f"--model-repository={tmp_path}",
        f"--grpc-restricted-protocol=model-repository:admin-key={key}",
    )
    assert done.returncode == 64
    assert "shorter than 32 characters" in done.stderr
    assert not key or key not in done.stderr  # the key itself is never printed


def test_entrypoint_gives_up_when_the_upload_marker_never_appears(tmp_path: Path) -> None:
    done = run_entrypoint(tmp_path, "tritonserver", f"--model-repository={tmp_path}", wait="1")
    assert done.returncode == 75
    assert "run `make kserve-upload`" in done.stderr


def test_entrypoint_skips_the_wait_when_wait_seconds_is_zero(tmp_path: Path) -> None:
    done = run_entrypoint(tmp_path, "tritonserver", f"--model-repository={tmp_path}", wait="0")
    assert done.returncode == 0


def exprs() -> list[str]:
    dashboard = json.loads(validate.DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


@pytest.mark.parametrize(
    "needle",
    [
        "rate(nv_inference_request_success",  # request rate
        "rate(nv_inference_request_failure",  # failures
        'nv_inference_queue_summary_us{namespace=~"$namespace", model=~"$model", quantile="0.5"}',
        'nv_inference_queue_summary_us{namespace=~"$namespace", model=~"$model", quantile="0.99"}',
        'nv_inference_compute_infer_summary_us{namespace=~"$namespace", model=~"$model", quantile="0.99"}',
        "nv_gpu_utilization",
        "nv_cpu_utilization",
    ],
)
def test_dashboard_shows_each_required_series_when_loaded(needle: str) -> None:
    assert any(needle in e for e in exprs())


def test_dashboard_groups_by_model_when_showing_per_model_panels() -> None:
    per_model = [e for e in exprs() if "nv_inference_" in e]
    assert per_model and all("by (model)" in e for e in per_model)


def test_check_dashboard_rejects_query_when_it_names_an_unknown_metric(tmp_path: Path) -> None:
    dashboard = json.loads(validate.DASHBOARD.read_text())
    dashboard["panels"][0]["targets"][0]["expr"] = "rate(nv_inference_request_sucess[5m])"
    path = tmp_path / "dashboard.json"
    path.write_text(json.dumps(dashboard))
    assert validate.check_dashboard(path).problems == ["'nv_inference_request_sucess' is not a Triton 2.51 metric"]
