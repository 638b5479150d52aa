"""Shared test setup: offline hubs, the test tiers, and the repositories built once per session.

Tiers (pyproject.toml registers the marks; `make test-fast` runs the first two):
- unit: no server, and no built repository unless also slow (pure code, small exports into tmp folders);
- model_py: model.py files from built version folders, with triton_python_backend_utils stubbed (tests/backends/);
- integration: a real tritonserver;
- slow (on top of a tier): a minute or more without a server.
Every test gets exactly one tier: its own mark, else its folder's. A test using the session's `triton` must be
integration, and one needing the full `model_repo` without a server is also slow (the build exports and checks
every network), so `-m "unit and not slow"` never builds it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from builders.offline import stay_offline  # noqa: E402 - after the sys.path insert above

stay_offline()

TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "model_py", "integration")
FOLDER_TIERS = {
    "unit": "unit",
    "kserve": "unit",
    "backends": "model_py",
    "integration": "integration",
    "loadtests": "integration",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reverse", action="store_true", help="run the tests in reverse order (no test may rely on another's run)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--reverse"):
        items.reverse()
    for item in items:
        marked = {m.name for m in item.iter_markers() if m.name in TIERS}
        folder = Path(item.path).resolve().relative_to(TESTS).parts[0]
        tier = marked.pop() if len(marked) == 1 else None if marked else FOLDER_TIERS.get(folder)
        if tier is None:
            raise pytest.UsageError(f"{item.nodeid}: mark it with exactly one tier of {TIERS}")
        fixtures = set(getattr(item, "fixturenames", ()))
        if "triton" in fixtures and tier != "integration":
            raise pytest.UsageError(f"{item.nodeid}: uses the session's tritonserver but its tier is {tier}")
        item.add_marker(tier)
        if "model_repo" in fixtures and tier != "integration":
            item.add_marker("slow")


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cpu-target repository with every pipeline, built once with the defaults (trained vision stand-ins)."""
    from builders import gpt2, vision

    repo = tmp_path_factory.mktemp("model_repository")
    vision.build(vision.VisionConfig(), repo)
    gpt2.build(gpt2.Gpt2Config(), repo)
    return repo


@pytest.fixture(scope="session")
def gpt2_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """A 124M-shaped GPT-2 saved by transformers' save_pretrained (tests/helpers/gpt2_checkpoint.py)."""
    from tests.helpers.gpt2_checkpoint import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("gpt2_checkpoint"), tmp_path_factory.mktemp("gpt2_checkpoint_bpe"))


@pytest.fixture(scope="session")
def gpt2_reference(gpt2_checkpoint):
    """transformers' own loading of `gpt2_checkpoint`: (GPT2LMHeadModel, GPT2TokenizerFast)."""
    from tests.helpers.gpt2_checkpoint import load_reference

    return load_reference(gpt2_checkpoint)


@pytest.fixture(scope="session")
def gpt2_checkpoint_repo(gpt2_checkpoint, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The GPT-2 models built from `gpt2_checkpoint` with `--model DIR` (the cpu target)."""
    from builders import gpt2

    out = tmp_path_factory.mktemp("gpt2_checkpoint_repo")
    gpt2.build(gpt2.Gpt2Config(model=str(gpt2_checkpoint.path)), out)
    return out
