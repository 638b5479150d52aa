"""Fixtures for the kserve/ manifests: overlays rendered by the pinned kubectl, KServe's CRDs, a scratch copy.

They need `make kubectl-tools` (kubectl in .tools/bin) and ../shared/kserve-crds; without either
they fail and say so: nothing here is skipped.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest

from deploy_kserve import KSERVE_DIR, OVERLAYS, render, schema, tools
from deploy_kserve.objects import Check

KSERVE = KSERVE_DIR


@pytest.fixture(scope="session")
def kubectl() -> tools.Kubectl:
    """The pinned kubectl; fails with the fix (`make kubectl-tools`) when it is missing or another version."""
    try:
        return tools.kubectl()
    except tools.ToolError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def schemas() -> schema.Schemas:
    """The crd level: KServe's CRDs from ../shared/kserve-crds; fails naming the path when they are absent."""
    try:
        return schema.load()
    except schema.CrdsMissing as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def rendered_overlays(kubectl: tools.Kubectl) -> dict[str, list[dict]]:
    """Every overlay rendered once by `kubectl kustomize`."""
    return {name: render.render(KSERVE / "overlays" / name, kubectl) for name in OVERLAYS}


@pytest.fixture
def gpu_objects(rendered_overlays: dict[str, list[dict]]) -> list[dict]:
    """A fresh copy of the rendered gpu overlay, for a test to break."""
    return copy.deepcopy(rendered_overlays["gpu"])


@pytest.fixture
def kserve_copy(tmp_path: Path) -> Path:
    """A scratch copy of kserve/ whose files a test may edit."""
    dest = tmp_path / "kserve"
    shutil.copytree(KSERVE, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def find(objects: list[dict], kind: str, name: str | None = None) -> dict:
    """The one object of `kind` (named `name`, where several objects share the kind)."""
    (obj,) = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    return obj


def failing(checks: list[Check]) -> dict[str, list[str]]:
    """Name -> problems of every failing check."""
    return {c.name: c.problems for c in checks if not c.ok}
