"""The built repository's files, read without a server: only ONNX, JSON and source ship, and no model code
unpickles or lets a request reach the file system (the rules are in tests/helpers/static_checks.py)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import ROOT
from tests.helpers.static_checks import SHIPPED_SUFFIXES, execute_reach, pickle_uses, served_sources, shipped_files


def test_repository_ships_only_onnx_json_and_source_when_built(model_repo: Path) -> None:
    files = shipped_files(model_repo)
    # model_warmup's input_data_file samples: raw tensor bytes without a suffix, checked below like the rest
    samples = {p for p in files if p.parent.name == "warmup"}
    suffixes = {p.suffix for p in files if p not in samples}
    assert samples and suffixes <= SHIPPED_SUFFIXES, sorted(suffixes - SHIPPED_SUFFIXES)
    for path in files:
        head = path.read_bytes()[:4]
        assert not head.startswith(b"PK\x03\x04"), f"{path}: a zip archive (torch.save format)"
        assert not (head[:1] == b"\x80" and head[1:2] in b"\x02\x03\x04\x05"), f"{path}: a pickle"
        if path.suffix == ".json":
            json.loads(path.read_text())  # tokenizers are plain JSON
    weights = [p for p in files if p.suffix == ".onnx"]
    assert weights and all(p.stat().st_size > 0 for p in weights)
    assert [p.name for p in files if p.suffix == ".json"]  # the tokenizers


def test_model_code_never_unpickles_when_parsed(model_repo: Path) -> None:
    sources = sorted((ROOT / "python_backends").rglob("*.py")) + [
        p for ps in served_sources(model_repo).values() for p in ps
    ]
    assert len(sources) > 10
    found = {str(p): pickle_uses(p.read_text()) for p in sources}
    assert {p: uses for p, uses in found.items() if uses} == {}


def test_execute_paths_never_touch_files_when_models_are_parsed(model_repo: Path) -> None:
    checked = {}
    for model, paths in served_sources(model_repo).items():
        reached, offending = execute_reach({p.as_posix(): p.read_text() for p in paths})
        assert "execute" in reached, model
        assert offending == [], model
        checked[model] = len(reached)
    assert {"image_decoder", "efficientnet_v2", "gpt2", "gpt2_stream"} <= set(checked)
