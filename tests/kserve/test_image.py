"""The Triton image's entrypoint and the Grafana dashboard."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import pytest

from deploy_kserve import ROOT
from deploy_kserve.files import DASHBOARD, check_dashboard
from serving.launcher import TritonServer, find_tritonserver, free_ports
from serving.supervisor import scan_stubs
from tests.helpers.servers import ECHO_MODEL, tiny_repo
from tests.kserve.conftest import KSERVE

ENTRYPOINT = KSERVE / "image" / "entrypoint.sh"
SUPERVISOR = ROOT / "serving" / "supervisor.py"
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
    dashboard = json.loads(DASHBOARD.read_text())
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
    dashboard = json.loads(DASHBOARD.read_text())
    dashboard["panels"][0]["targets"][0]["expr"] = "rate(nv_inference_request_sucess[5m])"
    path = tmp_path / "dashboard.json"
    path.write_text(json.dumps(dashboard))
    assert check_dashboard(path).problems == ["'nv_inference_request_sucess' is not a Triton 2.51 metric"]


def test_entrypoint_starts_the_supervisor_on_its_own_pid_when_the_script_exists(tmp_path: Path) -> None:
    env = {**os.environ, "TRITONYARD_SUPERVISOR": str(SUPERVISOR), "TRITONYARD_UPLOAD_WAIT_SECS": "0"}
    env["TRITONYARD_NEXT_ENTRYPOINT"] = "true"  # exits at once: the supervisor logs, sees no server, stops
    process = subprocess.Popen(
        ["sh", str(ENTRYPOINT), "tritonserver", f"--model-repository={tmp_path}", "--http-port=8123"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, stderr = process.communicate(timeout=60)  # returns once the supervisor, holding stderr, exits too
    assert process.returncode == 0
    assert f"watching the Python-backend stubs of tritonserver pid {process.pid}" in stderr


def test_entrypoint_runs_no_supervisor_when_it_is_off(tmp_path: Path) -> None:
    env = {**os.environ, "TRITONYARD_SUPERVISOR": "off", "TRITONYARD_UPLOAD_WAIT_SECS": "0"}
    env["TRITONYARD_NEXT_ENTRYPOINT"] = "true"
    done = subprocess.run(["sh", str(ENTRYPOINT), "tritonserver"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "watching" not in done.stderr


@pytest.mark.integration
def test_entrypoint_supervisor_reloads_a_model_when_its_stub_is_killed_in_the_container_setup(tmp_path: Path) -> None:
    """The image's process layout for real: entrypoint -> (supervisor &) -> exec tritonserver, same pid."""
    install = find_tritonserver()
    key = secrets.token_hex(32)
    server = TritonServer(tiny_repo(tmp_path / "repo", "echo", ECHO_MODEL), *free_ports(3), admin_key=key)
    command = ["tritonserver", *server.command(install)[1:]]
    env = {**install.env, "PATH": f"{install.binary.parent}{os.pathsep}{install.env['PATH']}", "TRITON_ADMIN_KEY": key}
    env |= {"TRITONYARD_NEXT_ENTRYPOINT": "env", "TRITONYARD_SUPERVISOR": str(SUPERVISOR)}
    env |= {"TRITONYARD_UPLOAD_WAIT_SECS": "0", "PYTHONDONTWRITEBYTECODE": "1"}
    log = tmp_path / "container.log"
    with log.open("w") as sink:
        process = subprocess.Popen(["sh", str(ENTRYPOINT), *command], env=env, stdout=sink, stderr=subprocess.STDOUT)
    server.process = process  # so is_ready() and stop() act on it
    try:
        deadline = time.monotonic() + 120
        while not server.is_ready():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        (victim,) = scan_stubs(process.pid)[0]  # the stub is tritonserver's child: tritonserver kept the pid
        os.kill(victim, signal.SIGKILL)
        while "reloaded echo in" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        assert list(scan_stubs(process.pid)[0]) != [victim]
        assert key not in log.read_text()
    finally:
        server.stop()
