"""Nothing left behind: however `python -m serving` ends, its tritonserver, every Python stub and the
server's /dev/shm regions are gone within seconds (serving/launcher.py, serving/reaper.py).

Each case starts the real launcher on a one-model repository, finds its tritonserver and that server's
region prefix from the server's command line, checks the stub and its region exist under that prefix,
ends things one way, and then looks for any process or region of the prefix.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from serving import reaper
from serving.launcher import TritonServer, free_ports
from serving.supervisor import alive, scan_stubs
from tests.conftest import ROOT
from tests.helpers.servers import ECHO_MODEL, children, cmdline, launched_server, leftovers, tiny_repo

pytestmark = pytest.mark.integration

GONE_WITHIN_S = 10.0  # the bound docs/reliability.md states


@dataclass
class Launched:
    process: subprocess.Popen
    server_pid: int
    prefix: str
    stubs: list[int]
    watchdog: int


@pytest.fixture
def launched(tmp_path: Path) -> Iterator[Launched]:
    """`python -m serving` serving one Python model, ready, with its stub and region under its own prefix."""
    http, grpc, metrics = free_ports(3)
    ports = ["--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)]
    repo = tiny_repo(tmp_path / "repo", "echo", ECHO_MODEL)
    cmd = [sys.executable, "-m", "serving", "--model-repository", str(repo), "--quiet", *ports]
    process = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    prefix = ""
    try:
        deadline = time.monotonic() + 120
        while not _ready(http):
            assert process.poll() is None and time.monotonic() < deadline, "the launcher never got ready"
            time.sleep(0.3)
        server_pid, prefix = launched_server(process.pid)
        stubs = list(scan_stubs(server_pid)[0])
        (watchdog,) = [p for p in children(process.pid) if any(a.endswith("reaper.py") for a in cmdline(p))]
        assert stubs and set(stubs) <= set(reaper.holders(prefix)), "the stub does not carry the server's prefix"
        assert reaper.regions(prefix), f"no /dev/shm region named {prefix}*"
        yield Launched(process, server_pid, prefix, stubs, watchdog)
    finally:
        process.kill()
        process.wait()
        if prefix:
            reaper.reap(prefix)  # a failed test must not leave its own server behind either


def _ready(http: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def assert_nothing_left(launched: Launched, timeout: float = GONE_WITHIN_S) -> float:
    processes, regions, took = leftovers(launched.prefix, timeout)
    assert processes == [] and regions == [], (processes, regions)
    assert not alive(launched.server_pid) and not any(alive(pid) for pid in launched.stubs)
    return took


def test_launcher_leaves_no_stub_or_region_when_it_is_killed_with_sigkill(launched: Launched) -> None:
    os.kill(launched.process.pid, signal.SIGKILL)  # no handler runs: the kernel and the watchdog clean up
    launched.process.wait()
    took = assert_nothing_left(launched)
    deadline = time.monotonic() + GONE_WITHIN_S
    while alive(launched.watchdog) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(launched.watchdog), "the watchdog did not exit after cleaning up"
    sys.stdout.write(f"launcher SIGKILLed: server, stub and regions gone in {took:.2f}s\n")


def test_launcher_leaves_no_stub_or_region_when_tritonserver_is_killed_with_sigkill(launched: Launched) -> None:
    os.kill(launched.server_pid, signal.SIGKILL)  # the stub is orphaned and Triton removes no region
    assert launched.process.wait(timeout=GONE_WITHIN_S) == 1
    assert "tritonserver exited with code -9" in launched.process.stderr.read()
    took = assert_nothing_left(launched)
    sys.stdout.write(f"tritonserver SIGKILLed: launcher exited 1, stub and regions gone {took:.2f}s later\n")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_launcher_leaves_no_stub_or_region_when_it_is_stopped(launched: Launched, signum: int) -> None:
    launched.process.send_signal(signum)
    assert launched.process.wait(timeout=60) == 0
    assert "stopping tritonserver" in launched.process.stderr.read()
    assert_nothing_left(launched, timeout=0)  # stop() removed everything before the launcher exited
    assert not alive(launched.watchdog)


def test_launcher_removes_the_regions_triton_leaves_when_a_stub_was_killed(tmp_path: Path) -> None:
    """What `make test` used to leave: Triton 2.51 never frees the region of an instance whose stub died."""
    repo = tiny_repo(tmp_path / "repo", "echo", ECHO_MODEL)
    with TritonServer(repo, *free_ports(3), extra_args=("--exit-timeout-secs=2",)) as server:
        (stub,) = scan_stubs(server.process.pid)[0]
        regions = reaper.regions(server.shm_prefix)
        assert regions
        os.kill(stub, signal.SIGKILL)
    processes, left, _ = leftovers(server.shm_prefix, timeout=0)
    assert processes == [] and left == [], (processes, left)
    assert server.watchdog is None and not any(p.exists() for p in regions)
