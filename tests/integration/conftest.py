"""A real tritonserver serving the session's vision repository."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.launcher import TritonServer, free_ports


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
