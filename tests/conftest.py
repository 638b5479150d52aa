"""Shared test setup: offline hubs, and one vision repository built per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
for _var, _value in {"HF_HUB_OFFLINE": "1", "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False"}.items():
    os.environ.setdefault(_var, _value)


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cpu-target repository with every pipeline, built once with the defaults (trained vision stand-ins)."""
    from builders import gpt2, vision

    repo = tmp_path_factory.mktemp("model_repository")
    vision.build(vision.VisionConfig(), repo)
    gpt2.build(gpt2.Gpt2Config(), repo)
    return repo
