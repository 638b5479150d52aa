"""The launcher against real tritonserver processes: readiness, failures and clean shutdown."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from serving.launcher import ServerError, TritonServer
from tests.conftest import ROOT
from tests.integration.conftest import free_ports

pytestmark = pytest.mark.integration

CONFIG = """name: "{name}"
backend: "python"
max_batch_size: 4
input {{ name: "X" data_type: TYPE_FP32 dims: 1 }}
output {{ name: "Y" data_type: TYPE_FP32 dims: 1 }}
instance_group {{ kind: KIND_CPU count: 1 }}
"""
BROKEN_MODEL = """
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("model-exploded-on-purpose")
"""
ECHO_MODEL = """
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy())])
                for r in requests]
"""


def tiny_repo(root: Path, name: str, source: str) -> Path:
    (root / name / "1").mkdir(parents=True)
    (root / name / "config.pbtxt").write_text(CONFIG.format(name=name))
    (root / name / "1" / "model.py").write_text(source)
    return root


def test_launcher_raises_with_log_tail_when_a_model_fails_to_load(tmp_path: Path) -> None:
    server = TritonServer(tiny_repo(tmp_path, "broken", BROKEN_MODEL), *free_ports(3), ready_timeout=120)
    start = time.monotonic()
    with pytest.raises(ServerError, match="model-exploded-on-purpose") as info:
        with server:
            pass
    assert "exited with code" in str(info.value)
    assert time.monotonic() - start < 120 and server.process.poll() is not None


def test_launcher_raises_when_repository_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match="make build"):
        TritonServer(tmp_path / "nope").start()


def test_serve_cli_stops_server_when_it_gets_sigterm(tmp_path: Path) -> None:
    http, grpc, metrics = free_ports(3)
    repo = tiny_repo(tmp_path, "echo", ECHO_MODEL)
    cmd = [sys.executable, "-m", "serving", "--model-repository", str(repo), "--quiet",
           "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("server never became ready")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert "stopping tritonserver" in proc.stderr.read()
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=2)
    finally:
        proc.kill()
