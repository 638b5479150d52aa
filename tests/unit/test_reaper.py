"""serving/reaper.py and the supervisor's hung-stub kill, on real processes standing in for stubs (no tritonserver).

A stand-in is a Python process whose command line is a stub's (`triton_python_backend_stub <model.py> <region>
... <instance> DEFAULT`) and which, like a stub whose server was killed, ignores SIGTERM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from serving import reaper
from serving.supervisor import STUB_NAME, Supervisor, alive

STANDIN = """import pathlib, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
pathlib.Path(sys.argv[0]).with_name("running").touch()
while True:
    time.sleep(1)
"""


def standin_stub(tmp_path: Path, prefix: str, model: str = "echo") -> subprocess.Popen:
    """A process with a stub's command line, the region name `<prefix>...` in it, ignoring SIGTERM."""
    script = tmp_path / model / "1" / "model.py"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(STANDIN)
    args = [f"/b/python/{STUB_NAME}", str(script), f"{prefix}0a1b", "1048576", "1048576", "1", "/b", "7"]
    stub = subprocess.Popen([*args, f"{model}_0_0", "DEFAULT"], executable=sys.executable)
    assert wait_until(script.with_name("running").exists), "the stand-in stub never started"
    return stub


def wait_until(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def ignored(pid: int) -> set[int]:
    """The signals a process ignores (SigIgn in /proc/PID/status)."""
    (line,) = [x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("SigIgn:")]
    mask = int(line.split()[1], 16)
    return {n for n in range(1, 64) if mask >> (n - 1) & 1}


@pytest.fixture
def prefix() -> str:
    prefix = reaper.new_prefix()
    yield prefix
    reaper.reap(prefix)


def test_reaper_kills_stubs_that_ignore_sigterm_and_removes_only_their_regions_when_reaping(
    tmp_path: Path, prefix: str
) -> None:
    stubs = [standin_stub(tmp_path, prefix, m) for m in ("a", "b")]
    other = reaper.new_prefix()
    mine, theirs = Path("/dev/shm") / f"{prefix}0a1b", Path("/dev/shm") / f"{other}0a1b"
    mine.write_bytes(b"x")
    theirs.write_bytes(b"x")
    try:
        assert wait_until(lambda: sorted(reaper.holders(prefix)) == sorted(s.pid for s in stubs))
        stubs[0].send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert stubs[0].poll() is None  # ignored, as a real orphaned stub does

        killed, removed = reaper.reap(prefix)
        assert sorted(killed) == sorted(s.pid for s in stubs) and removed == [mine.name]
        assert all(s.wait(timeout=5) == -signal.SIGKILL for s in stubs)
        assert not mine.exists() and theirs.exists() and reaper.holders(prefix) == []
    finally:
        theirs.unlink(missing_ok=True)
        for s in stubs:
            s.kill()
            s.wait()


def test_reaper_watchdog_cleans_up_when_its_launcher_is_killed_with_sigkill(tmp_path: Path, prefix: str) -> None:
    # A "launcher" that starts the watchdog the way TritonServer does, then waits to be killed.
    launcher_code = (
        "import subprocess, sys, time\n"
        f"w = subprocess.Popen([sys.executable, {reaper.__file__!r}, '--tag', {reaper.tag(prefix)!r}],"
        " stdin=subprocess.PIPE, start_new_session=True)\n"
        "print(w.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    launcher = subprocess.Popen([sys.executable, "-c", launcher_code], stdout=subprocess.PIPE, text=True)
    watchdog = int(launcher.stdout.readline())
    stub = standin_stub(tmp_path, prefix)
    region = Path("/dev/shm") / f"{prefix}0a1b"
    region.write_bytes(b"x")
    try:
        assert wait_until(lambda: reaper.holders(prefix) == [stub.pid])  # not the watchdog: it holds the tag only
        assert wait_until(lambda: ignored(watchdog) >= {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # Ctrl-C, kill, a closed terminal
            os.kill(watchdog, signum)
        time.sleep(0.3)
        assert alive(watchdog) and stub.poll() is None  # ignored: only the launcher's end counts
        launcher.kill()  # SIGKILL: nothing runs in the launcher, its end of the pipe just closes
        launcher.wait()
        assert stub.wait(timeout=10) == -signal.SIGKILL
        assert wait_until(lambda: not region.exists()) and wait_until(lambda: not alive(watchdog))
    finally:
        launcher.kill()
        stub.kill()
        stub.wait()
        region.unlink(missing_ok=True)


def test_reaper_refuses_a_tag_that_could_match_other_servers() -> None:
    with pytest.raises(SystemExit):
        reaper.main(["--tag", "ty"])
    with pytest.raises(ValueError):
        reaper.tag("some_other_prefix_")


class ReadyAdmin:
    def state(self, model: str, version: str) -> str:
        return "READY"


def test_supervisor_kills_a_stub_stopped_longer_than_hung_after_then_reloads_its_model(
    tmp_path: Path, prefix: str
) -> None:
    stub = standin_stub(tmp_path, prefix, "yolov8")
    supervisor = Supervisor(os.getpid(), ReadyAdmin(), hung_after=0.5)
    reloaded: list[tuple[str, str]] = []
    supervisor._reload = lambda model, reason, attempts: reloaded.append((model, reason))
    try:
        assert wait_until(lambda: supervisor.check_once() or stub.pid in supervisor._known)
        os.kill(stub.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        assert wait_until(lambda: supervisor.check_once() or supervisor.hung_kills, timeout=5)
        assert supervisor.hung_kills[0][:2] == (stub.pid, "yolov8_0_0")
        assert 0.5 <= supervisor.hung_kills[0][2] - stopped < 2.0
        assert wait_until(lambda: supervisor.check_once() or reloaded, timeout=5)
        ((model, reason),) = reloaded
        assert model == "yolov8" and f"stub pid {stub.pid} of instance yolov8_0_0 hung" in reason
        assert stub.wait(timeout=5) == -signal.SIGKILL
    finally:
        stub.kill()
        stub.wait()


def test_supervisor_leaves_a_briefly_stopped_stub_alone_when_it_continues(tmp_path: Path, prefix: str) -> None:
    stub = standin_stub(tmp_path, prefix, "yolov8")
    supervisor = Supervisor(os.getpid(), ReadyAdmin(), hung_after=2.0)
    try:
        assert wait_until(lambda: supervisor.check_once() or stub.pid in supervisor._known)
        os.kill(stub.pid, signal.SIGSTOP)
        for _ in range(5):
            supervisor.check_once()
            time.sleep(0.1)
        os.kill(stub.pid, signal.SIGCONT)
        for _ in range(25):  # past hung_after since the stop
            supervisor.check_once()
            time.sleep(0.1)
        assert supervisor.hung_kills == [] and stub.poll() is None
    finally:
        stub.kill()
        stub.wait()
