"""Export torch modules to ONNX and check every export against its source."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch

from builders.errors import BuildError
from tritonyard_contract.onnx_session import cpu_session

OPSET = 17  # GridSample needs 16; the legacy exporter is proven here up to 17


def finalize_model(model: onnx.ModelProto, path: Path) -> None:
    """Pin the IR version to the lowest the model's opsets allow (8 for opset 17), validate and save.

    onnx 1.23 stamps IR 14, which onnxruntime refuses; a user's export at opset 19+ needs more than 8.
    """
    model.ir_version = onnx.helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise BuildError(f"{path.parent.parent.name}: exported ONNX is invalid: {exc}") from exc
    onnx.save(model, str(path))


def export(
    module: torch.nn.Module,
    example: Sequence[torch.Tensor],
    path: Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: dict[str, dict[int, str]] | None = None,
) -> onnx.ModelProto:
    """Export `module` (eval mode); by default only the batch dimension of every input and output is dynamic."""
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = dynamic_axes or {n: {0: "batch"} for n in [*input_names, *output_names]}
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about constant or python-valued shapes are expected
            torch.onnx.export(
                module.eval(),
                tuple(example),
                str(path),
                dynamo=False,
                opset_version=OPSET,
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes=axes,
            )
    except Exception as exc:
        raise BuildError(f"ONNX export to {path} failed: {exc}") from exc
    model = onnx.load(str(path))
    finalize_model(model, path)
    return model


def run(model: onnx.ModelProto | Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run an ONNX model with onnxruntime on the CPU."""
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return cpu_session(source, threads=None, quiet=True).run(None, feeds)


def check(label: str, actual: Sequence[np.ndarray], expected: Sequence[np.ndarray], tolerance: float) -> float:
    """Max abs difference over all outputs; raise BuildError when it exceeds `tolerance`."""
    diffs = []
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        if a.shape != e.shape:
            raise BuildError(f"{label}: output {i} has shape {a.shape}, the source gives {e.shape}")
        diffs.append(float(np.max(np.abs(a.astype(np.float64) - e.astype(np.float64)), initial=0.0)))
    worst = float("nan") if any(np.isnan(diffs)) else max(diffs, default=0.0)
    if not worst <= tolerance:  # NaN fails too
        raise BuildError(f"{label}: ONNX differs from its torch source by {worst:.3g} (tolerance {tolerance:g})")
    return worst
