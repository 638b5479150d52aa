"""Write models into a Triton repository: version folders, shipped sources, configs and checks."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import tritonyard_contract
from builders import warmup
from builders.errors import BuildError
from builders.triton_config import (
    ORT_MODEL_SOURCE,
    Ensemble,
    ModelSpec,
    OnnxModel,
    PythonModel,
    Target,
    model_config,
    write_config,
)

BACKENDS_DIR = Path(__file__).resolve().parent.parent / "python_backends"
CONTRACT_DIR = Path(tritonyard_contract.__file__).resolve().parent  # shipped whole into every Python model
VERSION = "1"
KEEP = {"README.md"}  # the only tracked file in model_repository/


def clean(repo: Path) -> None:
    """Empty a repository folder (keeping its README) so a build starts from scratch."""
    repo.mkdir(parents=True, exist_ok=True)
    for entry in repo.iterdir():
        if entry.name not in KEEP:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


@contextmanager
def staged(repo: Path, names: Sequence[str]) -> Iterator[Path]:
    """Build into a staging folder and swap the named models in only if every step succeeded."""
    staging = repo / f".staging-{names[0]}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
        for name in names:
            if not (staging / name / "config.pbtxt").is_file():
                raise BuildError(f"{name}: the build wrote no config.pbtxt")
            shutil.rmtree(repo / name, ignore_errors=True)
            (staging / name).rename(repo / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def version_dir(repo: Path, name: str) -> Path:
    path = repo / name / VERSION
    path.mkdir(parents=True, exist_ok=True)
    return path


def _ship_sources(source: str, dest: Path, shared: Sequence[str] = ()) -> None:
    """Copy a python_backends/<source> folder's modules (and `shared` ones) beside model.py, with the contract
    package. Models import nothing else of ours, so each version folder runs on its own.
    """
    folder = BACKENDS_DIR / source
    if not (folder / "model.py").is_file():
        raise BuildError(f"python backend source {folder}/model.py is missing")
    files = [f for f in folder.glob("*.py") if f.name != "__init__.py"] + [BACKENDS_DIR / s for s in shared]
    for src in files:
        if not src.is_file():
            raise BuildError(f"python backend source {src} is missing")
        shutil.copy2(src, dest / src.name)
    contract = dest / CONTRACT_DIR.name
    shutil.rmtree(contract, ignore_errors=True)
    shutil.copytree(CONTRACT_DIR, contract, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def add_model(repo: Path, spec: ModelSpec, target: Target) -> str:
    """Write one model's config and sources; ONNX steps must already have `1/model.onnx`.

    Returns a short description of how the model is served, for the summary.
    """
    folder = version_dir(repo, spec.name)
    if isinstance(spec, OnnxModel):
        if not (folder / "model.onnx").is_file():
            raise BuildError(f"{spec.name}: {folder}/model.onnx was not exported")
        if target.device == "cpu":
            _ship_sources(ORT_MODEL_SOURCE, folder)
        served_by = "onnxruntime (GPU)" if target.device == "gpu" else "python + onnxruntime (CPU)"
    elif isinstance(spec, PythonModel):
        _ship_sources(spec.source, folder, spec.shared)
        served_by = "python (decoupled)" if spec.decoupled else "python"
    else:
        served_by = "ensemble"
    if not isinstance(spec, Ensemble) and spec.warmup is not None:  # Triton refuses model_warmup on ensembles
        optional = spec.optional_inputs if isinstance(spec, PythonModel) else frozenset()
        warmup.write_files(repo / spec.name, spec.inputs, spec.warmup, optional)
    write_config(model_config(spec, target), repo)
    return served_by


def check_ensembles(specs: Sequence[ModelSpec]) -> None:
    """Every ensemble step maps tensors that exist with the same dtype and dims on both sides."""
    by_name = {s.name: s for s in specs}
    for ens in (s for s in specs if isinstance(s, Ensemble)):
        available = {t.name: t for t in ens.inputs}
        for step in ens.steps:
            model = by_name.get(step.model)
            if model is None:
                raise BuildError(f"{ens.name}: step model {step.model!r} is not built")
            inputs, outputs = {t.name: t for t in model.inputs}, {t.name: t for t in model.outputs}
            for model_tensor, ens_tensor in step.input_map.items():
                src, dst = available.get(ens_tensor), inputs.get(model_tensor)
                if src is None or dst is None or (src.dtype, src.dims) != (dst.dtype, dst.dims):
                    raise BuildError(f"{ens.name}: {step.model}.{model_tensor} <- {ens_tensor} does not chain")
            for model_tensor, ens_tensor in step.output_map.items():
                if model_tensor not in outputs:
                    raise BuildError(f"{ens.name}: {step.model} has no output {model_tensor}")
                available[ens_tensor] = outputs[model_tensor]
        for out in ens.outputs:
            got = available.get(out.name)
            if got is None or (got.dtype, got.dims) != (out.dtype, out.dims):
                raise BuildError(f"{ens.name}: output {out.name} is not produced with {out.dtype} {out.dims}")


def check_config(repo: Path, name: str) -> None:
    """Parse `<name>/config.pbtxt` back through `ModelConfig`; Triton would refuse what fails here."""
    from builders.triton_config import read_config

    path = repo / name / "config.pbtxt"
    try:
        config = read_config(path)
    except Exception as exc:
        raise BuildError(f"{path} does not parse as a Triton ModelConfig: {exc}") from exc
    if config.name != name:
        raise BuildError(f"{path} names the model {config.name!r}, but its folder is {name!r}")
