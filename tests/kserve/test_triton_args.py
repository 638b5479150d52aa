"""The manifest's Triton arguments, run by a real tritonserver 2.51 on the cpu-built repository."""

from __future__ import annotations

import re
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy_kserve import render
from deploy_kserve.files import DASHBOARD
from deploy_kserve.objects import Rendered, generated_models
from serving.launcher import TritonServer, free_ports
from tests.kserve.conftest import KSERVE

pytestmark = pytest.mark.integration
LAUNCHER_SETS = ("--model-repository=", "--http-port=", "--grpc-port=", "--metrics-port=")


@pytest.fixture(scope="module")
def served(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TritonServer, str]]:
    """tritonserver started with the cpu overlay's merged args (runtime + InferenceService), key expanded."""
    args = Rendered(render.render(KSERVE / "overlays" / "cpu")).container()["args"]
    assert args[0] == "tritonserver"
    key = secrets.token_hex(32)  # what the kubelet substitutes for $(TRITON_ADMIN_KEY)
    extra = tuple(a.replace("$(TRITON_ADMIN_KEY)", key) for a in args[1:] if not a.startswith(LAUNCHER_SETS))
    log = tmp_path_factory.mktemp("triton-kserve-args") / "tritonserver.log"
    with TritonServer(model_repo, *free_ports(3), extra_args=extra, log_file=log, ready_timeout=600) as server:
        yield server, key


def http(server: TritonServer, path: str, method: str = "GET", headers: dict | None = None) -> tuple[int, str]:
    data = b"{}" if method == "POST" else None
    request = urllib.request.Request(f"http://{server.http_url}{path}", data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_manifest_args_load_every_generated_model_when_triton_starts(served: tuple[TritonServer, str]) -> None:
    server, _ = served
    assert http(server, "/v2/health/ready")[0] == 200  # the readiness and startup probes' path
    assert http(server, "/v2/health/live")[0] == 200  # the liveness probe's path
    not_ready = [m for m in generated_models("cpu") if http(server, f"/v2/models/{m}/ready")[0] != 200]
    assert not_ready == []


def test_model_repository_api_answers_403_when_the_admin_key_header_is_missing(
    served: tuple[TritonServer, str],
) -> None:
    server, key = served
    status, body = http(server, "/v2/repository/index", "POST")
    assert status == 403 and "admin-key" in body
    assert http(server, "/v2/repository/models/ensemble/unload", "POST")[0] == 403
    assert http(server, "/v2/repository/index", "POST", {"admin-key": "0" * 64})[0] == 403
    status, body = http(server, "/v2/repository/index", "POST", {"admin-key": key})
    assert status == 200
    assert sorted(re.findall(r'"name":"([^"]+)","version":"1","state":"READY"', body)) == sorted(
        generated_models("cpu")
    )


def test_other_restricted_apis_answer_403_when_the_admin_key_header_is_missing(
    served: tuple[TritonServer, str],
) -> None:
    server, key = served
    for path in ("/v2/systemsharedmemory/status", "/v2/trace/setting", "/v2/logging"):
        assert http(server, path)[0] == 403, path
        assert http(server, path, headers={"admin-key": key})[0] == 200, path
    assert http(server, "/v2/models/ensemble/stats")[0] == 200  # statistics stay open


def test_grpc_model_repository_needs_the_key_metadata_when_restricted(served: tuple[TritonServer, str]) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    server, key = served
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        with pytest.raises(InferenceServerException, match="restricted"):
            client.get_model_repository_index()
        index = client.get_model_repository_index(headers={"triton-grpc-protocol-admin-key": key})
        assert {m.name for m in index.models} == set(generated_models("cpu"))
    finally:
        client.close()


def test_dashboard_metrics_exist_when_triton_serves_the_manifest_args(served: tuple[TritonServer, str]) -> None:
    server, _ = served
    with urllib.request.urlopen(f"http://{server.host}:{server.metrics_port}/metrics", timeout=30) as response:
        text = response.read().decode()
    exported = set(re.findall(r"^(nv_[a-z_]+)", text, re.M))
    dashboard = {m for e in _dashboard_exprs() for m in re.findall(r"\bnv_[a-z_]+", e)}
    cpu_only = {m for m in dashboard if not m.startswith("nv_gpu_")}  # this tritonserver has no GPU
    assert cpu_only - exported == set()
    assert 'quantile="0.99"' in text  # --metrics-config=summary_latencies=true took effect


def _dashboard_exprs() -> list[str]:
    import json

    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
