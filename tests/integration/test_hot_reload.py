"""Hot reload under load: publish efficientnet_v2 version 2, load it, roll it back; no request fails.

Version 2 is the same network exported by the builder with another seed, so the oil level it
returns differs from version 1's. Traffic runs through `ensemble_jpeg` the whole time.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.http as httpclient

from builders import onnx_export
from builders.nets.efficientnet_v2 import build_oil_regressor
from serving import rollout
from serving.launcher import TritonServer, free_ports
from serving.supervisor import TritonAdmin
from tests.helpers.traffic import Outcome, Traffic, infer, matches, small_jpeg, vision_repository
from tritonyard_contract import CROP, OIL_PCT

pytestmark = pytest.mark.integration

MODEL = "efficientnet_v2"
SETTLE = 4  # answers sent after a switch that must all come from the new version


@pytest.fixture(scope="module")
def version_2(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete version folder: version 1's model.py, and model.onnx exported by the builder with seed 1."""
    folder = tmp_path_factory.mktemp("efficientnet_v2-next")
    module, _ = build_oil_regressor(None, seed=1)
    example = torch.rand(1, *CROP.dims, generator=torch.Generator().manual_seed(1))
    onnx_export.export(module, (example,), folder / "model.onnx", [CROP.name], [OIL_PCT.name])
    shutil.copy2(model_repo / MODEL / "1" / "model.py", folder / "model.py")
    return folder


@pytest.fixture(scope="module")
def server(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """A server of its own on a copy of the vision models (versions are added to it), supervisor on."""
    root = tmp_path_factory.mktemp("hot-reload")
    repo = vision_repository(model_repo, root / "repo")
    with TritonServer(repo, *free_ports(3), log_file=root / "tritonserver.log", supervise=True) as triton:
        yield triton


def version_of(outcome: Outcome, references: dict[int, dict[str, np.ndarray]]) -> int | None:
    """Which version's reference an answer equals (every output), or None."""
    found = [v for v, ref in references.items() if matches(outcome.outputs, ref, oil_atol=1e-3)]
    return found[0] if len(found) == 1 else None


def check_switch(outcomes: list[Outcome], references: dict, start: float, done: float, end: float, new: int) -> None:
    """Between `start` (load called) and `end`: answers sent after `done` (load returned) are all `new`, and once
    one `new` answer arrived, every request sent later got `new` too (never a mix of versions afterwards)."""
    window = [o for o in outcomes if start <= o.sent < end]
    got = [(o, version_of(o, references)) for o in window]
    assert all(v == new for o, v in got if o.sent > done), [(round(o.sent - start, 2), v) for o, v in got]
    first_new = min((o.answered for o, v in got if v == new), default=None)
    assert first_new is not None and first_new <= done + 60
    assert all(v == new for o, v in got if o.sent > first_new)


def test_new_version_serves_without_failures_when_published_and_loaded_under_load(
    server: TritonServer, version_2: Path
) -> None:
    repo, admin, jpeg = server.repository, TritonAdmin(server.http_url, server.admin_key), small_jpeg()
    client = httpclient.InferenceServerClient(server.http_url, network_timeout=120)
    v1 = infer(client, jpeg)
    client.close()
    [oil_v2] = onnx_export.run(version_2 / "model.onnx", {CROP.name: v1[CROP.name][np.newaxis]})
    v2 = {**v1, OIL_PCT.name: oil_v2[0]}
    assert abs(float(oil_v2[0][0]) - float(v1[OIL_PCT.name][0])) > 0.1  # the versions are told apart
    references = {1: v1, 2: v2}

    with Traffic(server.http_url, jpeg) as traffic:
        traffic.wait_for(lambda o: sum(x.ok for x in o) >= 3, 120, "3 answers from version 1")
        load_started = time.monotonic()
        version = rollout.roll_out(repo, admin, MODEL, version_2)
        loaded = time.monotonic()
        traffic.wait_for(lambda _: traffic.successes_after(loaded) >= SETTLE, 120, "answers after the load")
        rollback_started = time.monotonic()
        serving_now = rollout.rollback(repo, admin, MODEL, version)
        rolled_back = time.monotonic()
        traffic.wait_for(lambda _: traffic.successes_after(rolled_back) >= SETTLE, 120, "answers after rollback")
    outcomes = traffic.outcomes()

    assert version == 2 and serving_now == 1
    failed = [o.error for o in outcomes if not o.ok]
    assert failed == []
    unknown = [o for o in outcomes if version_of(o, references) is None]
    assert unknown == []  # every answer is exactly version 1's or version 2's
    assert all(version_of(o, references) == 1 for o in outcomes if o.answered < load_started)
    check_switch(outcomes, references, load_started, loaded, rollback_started, new=2)
    check_switch(outcomes, references, rollback_started, rolled_back, float("inf"), new=1)
    assert admin.state(MODEL, "1") == "READY" and not (repo / MODEL / "2").exists()
    assert admin.ready("ensemble_jpeg") and admin.ready("ensemble")
    assert server.supervisor.reloads == []  # an admin reload is not a dead stub
    counts = {v: sum(version_of(o, references) == v for o in outcomes) for v in references}
    sys.stdout.write(
        f"{len(outcomes)} requests, 0 failed; version 1 answers {counts[1]}, version 2 answers {counts[2]}; "
        f"load took {loaded - load_started:.2f}s, rollback {rolled_back - rollback_started:.2f}s\n"
    )


def test_failed_rollout_changes_nothing_when_the_new_version_does_not_load(
    server: TritonServer, version_2: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(version_2, broken)
    (broken / "model.onnx").write_bytes(b"not an onnx model")
    admin, jpeg = TritonAdmin(server.http_url, server.admin_key), small_jpeg()
    before = sorted(p.name for p in (server.repository / MODEL).iterdir())
    client = httpclient.InferenceServerClient(server.http_url, network_timeout=120)
    try:
        expected = infer(client, jpeg)
        with pytest.raises(rollout.RolloutError, match="did not load, removed it again"):
            rollout.roll_out(server.repository, admin, MODEL, broken)
        assert sorted(p.name for p in (server.repository / MODEL).iterdir()) == before
        assert matches(infer(client, jpeg), expected)  # the loaded version kept serving
    finally:
        client.close()
    assert server.supervisor.reloads == []
