"""One real tritonserver for the load tests, started on the session's repository and warmed up."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from clients import gpt2
from clients.clo import CloClient
from clients.synthetic import synthetic_frame
from serving.launcher import TritonServer, free_ports


@pytest.fixture(scope="package")
def server(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """Ready, with one request through each pipeline done, so first-call costs stay out of the measurements."""
    log = tmp_path_factory.mktemp("loadtests_triton") / "tritonserver.log"
    with TritonServer(model_repo, *free_ports(3), log_file=log, ready_timeout=600) as triton:
        buf = io.BytesIO()
        synthetic_frame().save(buf, "JPEG", quality=92)
        clo = CloClient(triton.http_url)
        try:
            clo.infer_encoded(buf.getvalue(), (3840, 2160))
        finally:
            clo.close()
        gpt2.generate(triton.http_url, "The oil level in the", max_tokens=4)
        yield triton
