"""Fixtures for the kserve/ manifests: rendered overlays, both validation levels, a scratch copy."""

from __future__ import annotations

import copy
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

KSERVE = ROOT / "kserve"
sys.path.insert(0, str(KSERVE))  # kserve/ holds scripts (validate.py, upload.py...), not a package

import crd_schema  # noqa: E402
import kustomize_lite  # noqa: E402
import validate  # noqa: E402

LEVELS = ["crd", "fallback"]


def schemas_for(level: str) -> validate.Schemas:
    """The schemas of one validation level; the crd level is skipped where ../shared is absent."""
    if level == "crd":
        if not crd_schema.DEFAULT_CRD_DIR.is_dir():
            pytest.skip(f"{crd_schema.DEFAULT_CRD_DIR} is absent: only the fallback level can run")
        return validate.select_schemas(crd_schema.DEFAULT_CRD_DIR)
    return validate.select_schemas(None)


@pytest.fixture(params=LEVELS)
def schemas(request: pytest.FixtureRequest) -> validate.Schemas:
    """Each validation level in turn."""
    return schemas_for(request.param)


@pytest.fixture(scope="session")
def rendered_overlays() -> dict[str, list[dict]]:
    """Every overlay rendered once by the built-in renderer."""
    return {name: kustomize_lite.render(KSERVE / "overlays" / name) for name in validate.OVERLAYS}


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


def find(objects: list[dict], kind: str) -> dict:
    """The one object of `kind`."""
    (obj,) = [o for o in objects if o["kind"] == kind]
    return obj


def failing(checks: list[validate.Check]) -> dict[str, list[str]]:
    """Name -> problems of every failing check."""
    return {c.name: c.problems for c in checks if not c.ok}
