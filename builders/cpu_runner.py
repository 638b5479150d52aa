"""The cpu target's ONNX runner: the generic Python-backend model in `python_backends/onnx_runtime/`.

The pip-installed tritonserver has no onnxruntime backend, so on the cpu target every `OnnxModel` is
served by that one `model.py`, configured through string `parameters` in its config.pbtxt. This module
is the only place that knows those parameters; keep it in step with `Params.from_config` in model.py.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING

from tritonyard_contract import OutputCheck as OutputCheck  # one definition, in the contract; re-exported

if TYPE_CHECKING:
    from builders.triton_config import OnnxModel

SOURCE = "onnx_runtime"  # python_backends/<SOURCE>/model.py, shipped into each such model's version folder
BACKEND = "python"

# The config parameters model.py reads (Params.from_config), all as strings.
THREADS = "intra_op_threads"  # onnxruntime intra-op threads, >= 1
CONCAT_BATCH = "concat_batch"  # "true": run a dynamic batch as one session call; "false": request by request
OUTPUT_CHECKS = "output_checks"  # JSON list of OutputCheck fields; absent: no checks


def parameters(spec: OnnxModel) -> dict[str, str]:
    """The wrapper's parameters for `spec`, by name."""
    params = {THREADS: str(spec.cpu_threads), CONCAT_BATCH: "true" if spec.concat_batch else "false"}
    if spec.output_checks:
        params[OUTPUT_CHECKS] = json.dumps([dataclasses.asdict(c) for c in spec.output_checks], sort_keys=True)
    return params


def serving(spec: OnnxModel) -> dict:
    """The ModelConfig fields (protobuf JSON names) that make `spec` a model of the wrapper.

    The renderer adds what every model has: name, tensors, max_batch_size, batching and instances.
    """
    values = parameters(spec)
    return {"backend": BACKEND, "parameters": {k: {"stringValue": values[k]} for k in sorted(values)}}
