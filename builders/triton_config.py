"""Typed model specs rendered to Triton `config.pbtxt` through Triton's own `ModelConfig` proto.

One spec describes a model; a `Target` decides how it is served:
- gpu: ONNX steps use the onnxruntime backend on KIND_GPU (what the NGC image and KServe run);
- cpu: ONNX steps run in the generic Python-backend onnxruntime model on KIND_CPU, because the
  pip-installed tritonserver has no onnxruntime backend.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from builders.contract import TensorSpec
from builders.errors import BuildError

Device = Literal["cpu", "gpu"]
ModelConfig = model_config_pb2.ModelConfig


@dataclass(frozen=True)
class QueueLimits:
    """Bounds on a dynamically batched model's queue; None picks the target's default.

    A full queue, or a request that waited longer than the timeout, is rejected with UNAVAILABLE
    (HTTP 503), so overload shows up as fast, retryable errors instead of ever-growing latency.
    """

    max_queue_size: int | None = None
    timeout_ms: int | None = None  # clients may ask for another timeout per request (allow_timeout_override)

    def __post_init__(self) -> None:
        if self.max_queue_size is not None and self.max_queue_size < 1:
            raise BuildError(f"--max-queue-size must be >= 1, got {self.max_queue_size}")
        if self.timeout_ms is not None and self.timeout_ms < 1:
            raise BuildError(f"--queue-timeout-ms must be >= 1, got {self.timeout_ms}")


@dataclass(frozen=True)
class Target:
    """Where the repository will be served, and how hard to batch there."""

    device: Device = "cpu"
    tensorrt_fp16: bool = False  # gpu only: TensorRT execution accelerator at FP16
    dynamic_batching: bool = True
    queue: QueueLimits = QueueLimits()

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "gpu"):
            raise BuildError(f"unknown device {self.device!r}: use cpu or gpu")
        if self.tensorrt_fp16 and self.device != "gpu":
            raise BuildError("--tensorrt-fp16 needs DEVICE=gpu: TensorRT only runs on GPU instances")

    @property
    def max_batch_size(self) -> int:
        # A 4K FP32 frame is 99.5 MB: 8 of them fit a GPU step; 4 already saturate 2 CPU cores.
        return 8 if self.device == "gpu" else 4

    @property
    def preferred_batch_sizes(self) -> list[int]:
        return [4, 8] if self.device == "gpu" else [2, 4]

    @property
    def queue_delay_us(self) -> int:
        # GPU steps are short, so wait little; on CPU a step is tens of ms and 2 ms is noise.
        return 500 if self.device == "gpu" else 2000

    @property
    def max_queue_size(self) -> int:
        if self.queue.max_queue_size is not None:
            return self.queue.max_queue_size
        # cpu: a vision step serves ~5-10 frames/s, so 16 queued frames is 2-3 s of work and 1.6 GB of
        # 99.5 MB frames; gpu: steps take milliseconds, so 8 full batches of 8 still drain in well under 1 s.
        return 64 if self.device == "gpu" else 16

    @property
    def queue_timeout_us(self) -> int:
        if self.queue.timeout_ms is not None:
            return self.queue.timeout_ms * 1000
        # A request that waited this long in one step's queue is stale for a live camera: fail it
        # retryably rather than let latency grow. cpu allows a full queue at its slowest (16 x ~250 ms).
        return 1_000_000 if self.device == "gpu" else 5_000_000


@dataclass(frozen=True)
class OutputCheck:
    """Reject a request whose `output` leaves [low, high] or is not finite, blaming input `blame`.

    Checking a small output is how the cpu target validates a 99.5 MB input cheaply: every frame
    pixel feeds one letterbox average, so a NaN/Inf pixel always reaches the output.
    """

    output: str
    low: float
    high: float
    blame: str
    meaning: str  # what the client sent wrong, in words for the error message


@dataclass(frozen=True)
class OnnxModel:
    """An ONNX step; `model.onnx` sits in its version folder."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    cpu_threads: int = 2  # onnxruntime intra-op threads on the cpu target
    # Concatenating a batch copies every input; for 99.5 MB frames running requests one by one is cheaper.
    concat_batch: bool = True
    output_checks: tuple[OutputCheck, ...] = ()  # cpu target only: the Python model enforces them


@dataclass(frozen=True)
class PythonModel:
    """A Python-backend model whose sources live in `python_backends/<source>/`."""

    name: str
    source: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    parameters: dict[str, str] = field(default_factory=dict)
    instances: int = 1
    optional_inputs: frozenset[str] = frozenset()
    decoupled: bool = False  # responses go through the response sender: 0..n per request (streaming)
    # The model batches in its own engine and execute() returns at once: Triton's dynamic batcher only adds
    # stalls there (on 2.51 a burst reached execute() in 0.5 s waves), so such a model gets none and must
    # bound its own backlog.
    own_batching: bool = False
    shared: tuple[str, ...] = ()  # more modules shipped beside model.py, as "<python_backends folder>/<file>.py"


@dataclass(frozen=True)
class EnsembleStep:
    """One step of an ensemble: `input_map`/`output_map` go model tensor -> ensemble tensor."""

    model: str
    input_map: dict[str, str]
    output_map: dict[str, str]


@dataclass(frozen=True)
class Ensemble:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    steps: tuple[EnsembleStep, ...]


ModelSpec = OnnxModel | PythonModel | Ensemble

ORT_MODEL_SOURCE = "onnx_runtime"  # python_backends/onnx_runtime: the generic cpu-target ORT model


def _tensors(specs: tuple[TensorSpec, ...], optional: frozenset[str] = frozenset()) -> list[dict]:
    return [
        {
            "name": t.name,
            "dataType": t.dtype,
            "dims": list(t.dims),
            **({"optional": True} if t.name in optional else {}),
        }
        for t in specs
    ]


def _batching(target: Target) -> dict:
    if not target.dynamic_batching:
        return {}
    return {
        "dynamicBatching": {
            "preferredBatchSize": target.preferred_batch_sizes,
            "maxQueueDelayMicroseconds": target.queue_delay_us,
            "defaultQueuePolicy": {
                "maxQueueSize": target.max_queue_size,
                "timeoutAction": "REJECT",
                "defaultTimeoutMicroseconds": target.queue_timeout_us,
                "allowTimeoutOverride": True,
            },
        }
    }


def _params(values: dict[str, str]) -> dict:
    return {"parameters": {k: {"stringValue": str(v)} for k, v in sorted(values.items())}} if values else {}


def _checks_json(checks: tuple[OutputCheck, ...]) -> str:
    return json.dumps([dataclasses.asdict(c) for c in checks], sort_keys=True)


def _onnx_dict(spec: OnnxModel, target: Target) -> dict:
    if target.device == "gpu":
        serving: dict = {
            "platform": "onnxruntime_onnx",
            "instanceGroup": [{"kind": "KIND_GPU", "count": 1}],
        }
        if target.tensorrt_fp16:
            trt = {
                "name": "tensorrt",
                "parameters": {"precision_mode": "FP16", "max_workspace_size_bytes": str(1 << 30)},
            }
            serving["optimization"] = {"executionAccelerators": {"gpuExecutionAccelerator": [trt]}}
    else:
        serving = {
            "backend": "python",
            "instanceGroup": [{"kind": "KIND_CPU", "count": 1}],
            **_params(
                {
                    "intra_op_threads": str(spec.cpu_threads),
                    "concat_batch": "true" if spec.concat_batch else "false",
                    **({"output_checks": _checks_json(spec.output_checks)} if spec.output_checks else {}),
                }
            ),
        }
    return serving


def _python_dict(spec: PythonModel, target: Target) -> dict:
    # Python steps do CPU work (decoding, tokenizing) on either target, so they stay KIND_CPU.
    body = {
        "backend": "python",
        "instanceGroup": [{"kind": "KIND_CPU", "count": spec.instances}],
        **_params(spec.parameters),
    }
    if spec.decoupled:
        body["modelTransactionPolicy"] = {"decoupled": True}
    return body


def _ensemble_dict(spec: Ensemble) -> dict:
    steps = [
        {"modelName": s.model, "modelVersion": -1, "inputMap": s.input_map, "outputMap": s.output_map}
        for s in spec.steps
    ]
    return {"platform": "ensemble", "ensembleScheduling": {"step": steps}}


def model_config(spec: ModelSpec, target: Target) -> ModelConfig:
    """Build the `ModelConfig` proto for one model on one target."""
    body: dict = {"name": spec.name, "maxBatchSize": target.max_batch_size}
    optional = spec.optional_inputs if isinstance(spec, PythonModel) else frozenset()
    body["input"] = _tensors(spec.inputs, optional)
    body["output"] = _tensors(spec.outputs)
    if isinstance(spec, Ensemble):
        body.update(_ensemble_dict(spec))
    else:
        if not (isinstance(spec, PythonModel) and spec.own_batching):
            body.update(_batching(target))
        body.update(_onnx_dict(spec, target) if isinstance(spec, OnnxModel) else _python_dict(spec, target))
    try:
        return json_format.ParseDict(body, ModelConfig())
    except json_format.ParseError as exc:  # a spec bug, not a user error, but say where
        raise BuildError(f"{spec.name}: invalid model config: {exc}") from exc


def write_config(config: ModelConfig, repo: Path) -> Path:
    """Write `<repo>/<name>/config.pbtxt` and return its path."""
    path = repo / config.name / "config.pbtxt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text_format.MessageToString(config))
    return path


def read_config(path: Path) -> ModelConfig:
    """Parse a `config.pbtxt` back into a `ModelConfig` (used by checks and tests)."""
    return text_format.Parse(path.read_text(), ModelConfig())
