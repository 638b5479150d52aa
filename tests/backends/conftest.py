"""Built version folders for the model.py tests: the GPT-2 stand-in's models, for each target.

The default build: the trained stand-in committed in weights/gpt2 (a few MB, exported in seconds).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from builders import gpt2


@pytest.fixture(scope="session")
def gpt2_cpu_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cpu target: gpt2_stream runs its model.onnx on the CPU provider, its cache in numpy arrays."""
    repo = tmp_path_factory.mktemp("gpt2_cpu_repo")
    gpt2.build(gpt2.Gpt2Config(device="cpu"), repo)
    return repo


@pytest.fixture(scope="session")
def gpt2_gpu_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The gpu target: gpt2_stream on the CUDA provider with its cache in torch tensors (tests run it on the CPU)."""
    repo = tmp_path_factory.mktemp("gpt2_gpu_repo")
    gpt2.build(gpt2.Gpt2Config(device="gpu"), repo)
    return repo
