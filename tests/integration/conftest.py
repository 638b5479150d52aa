"""A real tritonserver serving the session's vision repository, and the check that the integration tests
leave no stub and no /dev/shm region of theirs behind."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving import reaper
from serving.launcher import TritonServer, free_ports
from serving.supervisor import STUB_NAME
from tests.helpers.servers import cmdline

OURS = reaper.PREFIX_ROOT + "ty"  # every server the launcher starts names its regions OURS<tag>_...


def _left_behind(since: float) -> list[str]:
    """Regions of our servers (created after `since`) that no live process holds, and stubs of ours whose
    tritonserver is gone."""
    found = []
    for region in reaper.regions(OURS):
        prefix = region.name[: region.name.index("_", len(OURS)) + 1]
        try:
            created = region.stat().st_mtime
        except FileNotFoundError:
            continue
        if created >= since and not reaper.holders(prefix):
            found.append(f"region {region.name}")
    for pid in reaper.holders(OURS):
        args = cmdline(pid)
        if args and Path(args[0]).name == STUB_NAME and not any(Path(a).name == "tritonserver" for a in _parent(pid)):
            found.append(f"stub pid {pid} {' '.join(args)[:160]}")
    return found


def _parent(pid: int) -> list[str]:
    try:
        ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return []
    return cmdline(ppid)


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """After the last integration test: no stub of ours alive without its server, no region of ours unheld.

    Waits a few seconds first: another pytest session on the same host may be stopping a server of its own.
    """
    started = time.time()
    yield
    deadline = time.monotonic() + 15
    while (left := _left_behind(started)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert left == [], "left behind by the integration tests:\n" + "\n".join(left)


@pytest.fixture(scope="session")
def triton(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """Started once; waits for /v2/health/ready and fails with the server's log tail otherwise.

    Locked down like `make serve`: explicit model control with every model loaded, and the
    repository API behind a per-run admin key (`triton.admin_key`, `triton.admin_headers`).
    Tests that kill stubs or load versions start a server of their own instead.
    """
    log = tmp_path_factory.mktemp("triton") / "tritonserver.log"
    with TritonServer(model_repo, *free_ports(3), log_file=log, ready_timeout=600) as server:
        yield server
