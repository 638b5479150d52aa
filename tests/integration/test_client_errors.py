"""The command-line clients against a real tritonserver that does not serve the model they call: one line
naming the server and the model and how to get it served, exit code 1, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from serving.launcher import TritonServer, free_ports
from tests.conftest import ROOT
from tests.helpers.servers import ECHO_MODEL, tiny_repo

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def echo_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """A server whose repository holds one Python model, `echo`: none of the pipelines."""
    repo = tiny_repo(tmp_path_factory.mktemp("echo_repo"), "echo", ECHO_MODEL)
    with TritonServer(repo, *free_ports(3), ready_timeout=120) as server:
        yield server


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=120, env=os.environ.copy()
    )


@pytest.mark.parametrize(
    "args,model,protocol",
    [
        (("clients.clo", "IMAGE"), "ensemble", "http"),
        (("clients.clo", "IMAGE", "--entry", "ensemble_jpeg", "--protocol", "grpc"), "ensemble_jpeg", "grpc"),
        (("clients.gpt2", "hello"), "gpt2", "http"),
        (("clients.gpt2", "hello", "--stream"), "gpt2_stream", "grpc"),
        (("clients.gpt2", "hello", "--baseline", "--tokenizer", "TOKENIZER"), "gpt2", "http"),
    ],
)
def test_clients_name_the_missing_model_when_the_server_does_not_serve_it(
    echo_only: TritonServer, tmp_path: Path, args: tuple[str, ...], model: str, protocol: str
) -> None:
    image = tmp_path / "frame.png"
    Image.new("RGB", (64, 36), (90, 110, 130)).save(image)
    tokenizer = tmp_path / "tokenizer.json"
    tokenizer.write_text('{"version": "1.0", "model": {"type": "WordLevel", "vocab": {"a": 0}, "unk_token": "a"}}')
    url = echo_only.http_url if protocol == "http" else echo_only.grpc_url
    swap = {"IMAGE": str(image), "TOKENIZER": str(tokenizer)}
    done = run_cli(*(swap.get(a, a) for a in args), "--url", url)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: the Triton server at {url} does not serve model {model!r}: build the repository with `make build` "
        "and restart the server with `make serve`"
    ]
    assert done.stdout == ""
