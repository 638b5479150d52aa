"""The command-line clients against no server, a refusing server and a silent one: one `error:` line each,
naming the address or model and what to do, a non-zero exit code, and never a traceback. Plus the shared-memory
region's cleanup when registration fails."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from clients.lib.shm import SharedRegion
from serving.launcher import free_ports
from tests.conftest import ROOT

SHM = Path("/dev/shm")


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRITON_HTTP_URL": "", "TRITON_GRPC_URL": ""}
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env
    )


def one_error_line(done: subprocess.CompletedProcess) -> str:
    """The single stderr line of a failed run (asserting there is exactly one, and no traceback)."""
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


@pytest.fixture(scope="module")
def png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "small.png"
    Image.new("RGB", (64, 36), (90, 110, 130)).save(path)
    return path


@pytest.fixture(scope="module")
def closed_port() -> int:
    return free_ports(1)[0]  # free right now: nothing listens there


class Refusing(BaseHTTPRequestHandler):
    """Answers every request as Triton does when a model's queue is full."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"error": "in ensemble 'ensemble_jpeg', Exceeds maximum queue size"}).encode()
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def refusing_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def silent_url() -> Iterator[str]:
    """Accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    held: list = []

    def accept() -> None:
        while True:
            try:
                held.append(sock.accept())
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"127.0.0.1:{sock.getsockname()[1]}"
    sock.close()
    for conn, _ in held:
        conn.close()


def test_clo_names_the_address_and_make_serve_when_no_server_runs(closed_port: int) -> None:
    done = run_cli("clients.clo", "--synthetic", "--url", f"127.0.0.1:{closed_port}")
    assert one_error_line(done) == (
        f"error: no Triton server at 127.0.0.1:{closed_port} (connection refused): start it with `make serve`, "
        "or pass --url"
    )
    assert done.stdout == ""


@pytest.mark.parametrize(
    "args",
    [
        ("clients.gpt2", "hello", "--stream"),
        ("clients.gpt2", "hello"),
        ("clients.gpt2", "hello", "--protocol", "grpc", "--retries", "0"),
        ("clients.clo", "IMAGE", "--entry", "ensemble_jpeg", "--protocol", "grpc", "--retries", "0"),
    ],
)
def test_clients_fail_in_one_line_when_no_server_runs(args: tuple[str, ...], closed_port: int, png: Path) -> None:
    done = run_cli(*(str(png) if a == "IMAGE" else a for a in args), "--url", f"127.0.0.1:{closed_port}")
    assert f"no Triton server at 127.0.0.1:{closed_port}" in one_error_line(done)
    assert done.stdout == ""  # not even the prompt: nothing was generated


def test_clo_frees_its_shared_memory_when_registration_fails(closed_port: int, png: Path) -> None:
    before = {p.name for p in SHM.glob("clo_frame_*")}
    done = run_cli("clients.clo", str(png), "--shm", "--url", f"127.0.0.1:{closed_port}")
    assert "no Triton server" in one_error_line(done)
    assert {p.name for p in SHM.glob("clo_frame_*")} == before


def test_shared_region_is_destroyed_when_the_server_refuses_to_register_it() -> None:
    class Refuses:
        def register_system_shared_memory(self, name: str, key: str, size: int) -> None:
            self.key = key
            assert (SHM / key.lstrip("/")).exists()  # the segment exists while registration is attempted
            raise RuntimeError("Unable to open shared memory region")

    client = Refuses()
    with pytest.raises(RuntimeError, match="Unable to open"):
        SharedRegion(client, 1024, prefix="test_refused")
    assert not (SHM / client.key.lstrip("/")).exists()


@pytest.mark.parametrize(
    "args,model",
    [
        (("clients.clo", "IMAGE", "--entry", "ensemble_jpeg", "--retries", "1"), "ensemble_jpeg"),
        (("clients.gpt2", "hello", "--retries", "1"), "gpt2"),
    ],
)
def test_clients_say_the_server_is_overloaded_when_it_refuses_after_retries(
    args: tuple[str, ...], model: str, refusing_url: str, png: Path
) -> None:
    done = run_cli(*(str(png) if a == "IMAGE" else a for a in args), "--url", refusing_url)
    line = one_error_line(done)
    assert line.startswith(f"error: {model} at {refusing_url} refused the request for lack of capacity after 1 retry")
    assert "Exceeds maximum queue size" in line and "raise --retries" in line


@pytest.mark.parametrize(
    "args,model",
    [
        (("clients.gpt2", "hello"), "gpt2"),
        (("clients.gpt2", "hello", "--protocol", "grpc"), "gpt2"),
        (("clients.gpt2", "hello", "--stream"), "gpt2_stream"),
        (("clients.clo", "IMAGE", "--entry", "ensemble_jpeg"), "ensemble_jpeg"),
    ],
)
def test_clients_name_the_model_and_timeout_when_the_server_never_answers(
    args: tuple[str, ...], model: str, silent_url: str, png: Path
) -> None:
    done = run_cli(*(str(png) if a == "IMAGE" else a for a in args), "--url", silent_url, "--timeout", "1")
    assert one_error_line(done) == (
        f"error: no answer from {model} at {silent_url} within 1 s: the server is overloaded or stuck; "
        "check its log, or raise --timeout"
    )


def test_clo_reports_a_bad_image_as_a_usage_error_when_the_file_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_bytes(b"not an image at all")
    done = run_cli("clients.clo", str(path))
    assert done.returncode == 2 and done.stderr.startswith("error: not a decodable image")
    assert "Traceback" not in done.stderr
