"""Locked down by default: the repository API needs the admin key, over HTTP and gRPC.

The tests run against real tritonservers started the default way (TritonServer()). The static checks (no pickle
ships, no request names a file) read the built repository without a server: tests/backends/test_served_sources.py.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from serving import adminkey
from serving.launcher import TritonServer, free_ports
from tests.helpers.servers import ECHO_MODEL, tiny_repo

pytestmark = pytest.mark.integration

WRONG_KEY = "0" * 64


def http_load(server: TritonServer, model: str, headers: dict[str, str]) -> tuple[int, str]:
    request = urllib.request.Request(
        f"http://{server.http_url}/v2/repository/models/{model}/load", data=b"{}", method="POST", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture(scope="module")
def echo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """A tiny server started with the defaults, whose one model a test may load and unload at will."""
    repo = tiny_repo(tmp_path_factory.mktemp("echo-repo"), "echo", ECHO_MODEL)
    with TritonServer(repo, *free_ports(3), ready_timeout=120) as server:
        yield server


def test_default_server_refuses_http_model_load_when_the_admin_key_is_missing_or_wrong(triton: TritonServer) -> None:
    for headers in ({}, {adminkey.HTTP_HEADER: WRONG_KEY}, {"Authorization": f"Bearer {triton.admin_key}"}):
        status, body = http_load(triton, "ensemble", headers)
        assert status == 403 and "admin-key" in body, (headers.keys(), status, body)


def test_default_server_refuses_grpc_model_load_when_the_admin_key_is_missing_or_wrong(triton: TritonServer) -> None:
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    try:
        for headers in (None, {adminkey.GRPC_HEADER: WRONG_KEY}, {adminkey.HTTP_HEADER: triton.admin_key}):
            with pytest.raises(InferenceServerException, match="restricted"):
                client.load_model("ensemble", headers=headers)
            with pytest.raises(InferenceServerException, match="restricted"):
                client.unload_model("ensemble", headers=headers)
        assert client.is_model_ready("ensemble")  # nothing was unloaded
    finally:
        client.close()


def test_model_load_works_over_http_and_grpc_when_the_admin_key_is_sent(echo_server: TritonServer) -> None:
    client = grpcclient.InferenceServerClient(echo_server.grpc_url)
    grpc_key = {adminkey.GRPC_HEADER: echo_server.admin_key}
    try:
        client.unload_model("echo", headers=grpc_key)
        assert not client.is_model_ready("echo")
        status, body = http_load(echo_server, "echo", echo_server.admin_headers)
        assert status == 200, body
        assert client.is_model_ready("echo")
        client.unload_model("echo", headers=grpc_key)
        client.load_model("echo", headers=grpc_key)
        assert client.is_model_ready("echo")
        assert {m.name for m in client.get_model_repository_index(headers=grpc_key).models} == {"echo"}
    finally:
        client.close()


def test_default_server_binds_loopback_and_hides_the_key_when_started(echo_server: TritonServer) -> None:
    command = (Path("/proc") / str(echo_server.process.pid) / "cmdline").read_bytes().split(b"\0")
    assert {b"--http-address=127.0.0.1", b"--grpc-address=127.0.0.1", b"--metrics-address=127.0.0.1"} <= set(command)
    assert b"--model-control-mode=explicit" in command and b"--load-model=*" in command
    assert echo_server.admin_key not in echo_server.log_tail() and echo_server.admin_key not in repr(echo_server)
