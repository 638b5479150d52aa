"""The import rules of docs/architecture.md, checked on the sources, and the contract shipped with every model."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from builders import repository, vision
from builders.triton_config import Target
from tests.conftest import ROOT

OURS = {"builders", "clients", "loadtests", "python_backends", "serving", "training", "tritonyard_contract", "tests"}


def imports(path: Path, top_level_only: bool = False) -> set[str]:
    """Top-level package names a file imports (relative imports excluded); only module-level ones if asked."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def sources(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", sources("clients"), ids=lambda p: str(p.relative_to(ROOT)))
def test_clients_import_no_builder_or_server_code(path: Path) -> None:
    assert imports(path) & OURS <= {"clients", "tritonyard_contract", "training"}


@pytest.mark.parametrize("path", sources("tritonyard_contract"), ids=lambda p: str(p.relative_to(ROOT)))
def test_contract_needs_only_the_standard_library_and_numpy(path: Path) -> None:
    allowed = set(sys.stdlib_module_names) | {"numpy", "tritonyard_contract"}
    if path.name == "images.py":
        allowed.add("PIL")  # image acceptance needs Pillow; the package's __init__ does not import it
    assert imports(path, top_level_only=True) <= allowed
    assert imports(path) <= allowed | {"onnxruntime"}  # onnxruntime only inside the session factory


def test_importing_the_contract_loads_no_pillow_or_onnxruntime() -> None:
    """The readiness probe and the text models import the contract too: only `images` needs Pillow."""
    code = "import sys, tritonyard_contract.params; print(sorted({'PIL', 'onnxruntime'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr


@pytest.mark.parametrize("path", sources("python_backends"), ids=lambda p: str(p.relative_to(ROOT)))
def test_models_import_nothing_of_ours_but_the_shipped_contract(path: Path) -> None:
    assert imports(path) & OURS <= {"tritonyard_contract"}


def test_builder_ships_the_contract_beside_every_model_py(tmp_path: Path) -> None:
    spec = next(s for s in vision.specs(vision.VisionConfig()) if s.name == "image_decoder")
    repository.add_model(tmp_path, spec, Target("cpu"))
    version = tmp_path / "image_decoder" / "1"
    shipped = sorted(p.relative_to(version).as_posix() for p in (version / "tritonyard_contract").rglob("*"))
    expected = sorted(
        p.relative_to(ROOT).as_posix() for p in (ROOT / "tritonyard_contract").glob("*.py")
    )  # the package's modules, no bytecode
    assert shipped == expected
    assert [p.name for p in version.glob("*.py")] == ["model.py"]  # image decoding is the contract's images module
