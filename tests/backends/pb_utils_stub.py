"""A stand-in for `triton_python_backend_utils`, enough to unit-test model.py files off-server.

It mirrors the calls our models make (tensors, responses, errors with codes, the logger); the
integration tests run the same files inside a real tritonserver.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np

BACKENDS = Path(__file__).resolve().parents[2] / "python_backends"


class TritonError(Exception):
    UNKNOWN, INTERNAL, NOT_FOUND, INVALID_ARG, UNAVAILABLE, UNSUPPORTED, ALREADY_EXISTS, CANCELLED = range(8)

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self._message, self._code = message, code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code


class Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self._name, self._array = name, np.asarray(array)

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


class InferenceResponse:
    def __init__(self, output_tensors: list[Tensor] | None = None, error: TritonError | None = None) -> None:
        self.tensors = {t.name(): t for t in output_tensors or []}
        self.error = error

    def has_error(self) -> bool:
        return self.error is not None

    def output(self, name: str) -> np.ndarray:
        return self.tensors[name].as_numpy()


class Request:
    """What the backend hands `execute`: named input tensors."""

    def __init__(self, **inputs: np.ndarray) -> None:
        self.inputs = {n: Tensor(n, a) for n, a in inputs.items()}


class Logger:
    lines: list[str] = []

    @classmethod
    def log_info(cls, msg: str) -> None:
        cls.lines.append(msg)

    log_warn = log_error = log_verbose = log_info


def get_input_tensor_by_name(request: Request, name: str) -> Tensor | None:
    return request.inputs.get(name)


def load_model(source: str, config: dict, version_dir: Path, name: str = "model_under_test"):
    """Import python_backends/<source>/model.py the way the stub does and call initialize()."""
    stub = types.ModuleType("triton_python_backend_utils")
    for obj in (TritonError, Tensor, InferenceResponse, Logger, get_input_tensor_by_name):
        setattr(stub, obj.__name__, obj)
    sys.modules["triton_python_backend_utils"] = stub
    folder = BACKENDS / source
    sys.path.insert(0, str(folder))  # the stub puts the version folder on sys.path for sibling files
    try:
        spec = importlib.util.spec_from_file_location(f"{source}_model", folder / "model.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(folder))
    model = module.TritonPythonModel()
    model.initialize(
        {
            "model_config": json.dumps(config),
            "model_name": name,
            "model_version": version_dir.name,
            "model_repository": str(version_dir.parent),
            "model_instance_kind": "CPU",
        }
    )
    return model
