"""A busy port fails fast: `python -m serving` checks the HTTP, gRPC, metrics and OpenAI ports before it
starts anything, and ends in under a second with one line naming the port and the variable that moves it.

Real processes and real sockets; no tritonserver is ever started (that is the point).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.launcher import PortInUse, TritonServer, free_ports
from tests.conftest import ROOT

FAST_S = 1.0


@pytest.fixture
def taken() -> Iterator[int]:
    """A port something else listens on (127.0.0.1)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def serve(tmp_path: Path, flags: dict[str, int], env: dict[str, str] | None = None) -> tuple[int, list[str], float]:
    """`python -m serving` on an empty repository folder; (exit code, stderr lines, seconds it ran)."""
    args = [a for flag, port in flags.items() for a in (flag, str(port))]
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "serving", "--model-repository", str(tmp_path), "--quiet", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stderr.splitlines(), time.monotonic() - started


@pytest.mark.parametrize(
    "kind,flag,variable",
    [
        ("HTTP", "--http-port", "HTTP_PORT"),
        ("gRPC", "--grpc-port", "GRPC_PORT"),
        ("metrics", "--metrics-port", "METRICS_PORT"),
        ("OpenAI", "--openai-port", "OPENAI_PORT"),
    ],
)
def test_serve_cli_fails_in_under_a_second_naming_the_port_and_its_variable_when_the_port_is_taken(
    tmp_path: Path, taken: int, kind: str, flag: str, variable: str
) -> None:
    free = dict(zip(("--http-port", "--grpc-port", "--metrics-port", "--openai-port"), free_ports(4), strict=True))
    code, lines, seconds = serve(tmp_path, free | {flag: taken})
    assert code == 1 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: {kind} port {taken} on 127.0.0.1 is already in use"), lines[0]
    assert f"make serve {variable}=<port>" in lines[0] and flag in lines[0]
    assert seconds < FAST_S, f"{seconds:.2f}s"


def test_serve_cli_checks_the_port_the_environment_variable_names_when_no_flag_is_given(
    tmp_path: Path, taken: int
) -> None:
    http, metrics = free_ports(2)
    env = {"HTTP_PORT": str(http), "GRPC_PORT": str(taken), "METRICS_PORT": str(metrics)}
    code, lines, _ = serve(tmp_path, {}, env)
    assert code == 1 and lines[0].startswith(f"error: gRPC port {taken} "), lines


def test_serve_cli_fails_naming_both_when_two_ports_are_the_same(tmp_path: Path) -> None:
    port, grpc = free_ports(2)
    code, lines, seconds = serve(tmp_path, {"--http-port": port, "--metrics-port": port, "--grpc-port": grpc})
    assert code == 1 and len(lines) == 1 and seconds < FAST_S
    assert lines[0].startswith(f"error: the metrics port {port} is also the HTTP port"), lines[0]
    assert "make serve METRICS_PORT=<port>" in lines[0]


def test_make_serve_passes_the_openai_port_variable_to_the_launcher() -> None:
    """OPENAI_PORT is a make variable only; the other three reach the launcher through the environment."""
    dry = subprocess.run(["make", "-n", "serve", "OPENAI_PORT=4321"], cwd=ROOT, capture_output=True, text=True)
    line = next(x for x in dry.stdout.splitlines() if "-m serving" in x)
    assert "--openai-port 4321" in line


def test_launcher_starts_no_process_when_a_port_is_taken(tmp_path: Path, taken: int) -> None:
    http, metrics = free_ports(2)
    server = TritonServer(tmp_path, http_port=http, grpc_port=taken, metrics_port=metrics)
    with pytest.raises(PortInUse, match=f"gRPC port {taken} on 127.0.0.1 is already in use"):
        server.start()
    assert server.process is None and server.watchdog is None
