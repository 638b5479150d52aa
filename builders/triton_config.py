"""Typed model specs rendered to Triton `config.pbtxt` through Triton's own `ModelConfig` proto.

One spec describes a model; a `Target` decides how it is served:
- gpu: ONNX steps use the onnxruntime backend on KIND_GPU (what the NGC image and KServe run);
- cpu: ONNX steps run in the generic Python-backend onnxruntime model on KIND_CPU, because the
  pip-installed tritonserver has no onnxruntime backend (`builders.cpu_runner` owns its parameters).

Each non-ensemble spec carries a `Policy` (max_batch_size, instances, dynamic batching, queue bounds);
whatever it leaves None, the `Target` supplies (`Target.resolve`). `with_policies` layers per-model
overrides (the builder's --instances, --batching, ...) over the specs' own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from builders import cpu_runner, warmup
from builders.errors import BuildError
from builders.warmup import Warmup
from tritonyard_contract import OutputCheck, TensorSpec

Device = Literal["cpu", "gpu"]
ModelConfig = model_config_pb2.ModelConfig
ORT_MODEL_SOURCE = cpu_runner.SOURCE  # kept for callers that ship the cpu runner's sources


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
class Batching:
    """A model's dynamic batching; None picks the target's default."""

    enabled: bool | None = None  # False: no dynamic_batching (and so no queue policy) in the config
    preferred_batch_sizes: tuple[int, ...] | None = None  # each <= the model's max_batch_size
    max_queue_delay_us: int | None = None

    def __post_init__(self) -> None:
        sizes = self.preferred_batch_sizes
        if sizes is not None and (not sizes or min(sizes) < 1):
            raise BuildError(f"preferred batch sizes must be >= 1, got {list(sizes)}")
        if self.max_queue_delay_us is not None and self.max_queue_delay_us < 0:
            raise BuildError(f"--max-queue-delay-us must be >= 0, got {self.max_queue_delay_us}")


@dataclass(frozen=True)
class Policy:
    """How Triton schedules one model; every None picks the target's default (`Target.resolve`)."""

    max_batch_size: int | None = None
    instances: int | None = None  # instance_group count; the kind comes from the target and the model type
    batching: Batching = Batching()
    queue: QueueLimits = QueueLimits()

    def __post_init__(self) -> None:
        if self.max_batch_size is not None and self.max_batch_size < 1:
            raise BuildError(f"--max-batch-size must be >= 1, got {self.max_batch_size}")
        if self.instances is not None and self.instances < 1:
            raise BuildError(f"--instances must be >= 1, got {self.instances}")

    def over(self, base: Policy) -> Policy:
        """This policy's set fields on top of `base`'s."""
        return _layer(self, base)


def _layer(top, base):
    changes = {}
    for f in dataclasses.fields(top):
        value = getattr(top, f.name)
        if dataclasses.is_dataclass(value):
            changes[f.name] = _layer(value, getattr(base, f.name))
        elif value is not None:
            changes[f.name] = value
    return replace(base, **changes)


@dataclass(frozen=True)
class Resolved:
    """One model's policy with every default filled in: what its config.pbtxt says."""

    max_batch_size: int
    instances: int
    dynamic_batching: bool
    preferred_batch_sizes: tuple[int, ...]
    max_queue_delay_us: int
    max_queue_size: int
    queue_timeout_us: int


@dataclass(frozen=True)
class Target:
    """Where the repository will be served, and every model's default policy there."""

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

    @property
    def onnx_kind(self) -> str:
        """Instance kind of ONNX models (and of Python models that run one on the GPU themselves); other Python
        models do CPU work (decoding, tokenizing) and stay KIND_CPU."""
        return "KIND_GPU" if self.device == "gpu" else "KIND_CPU"

    def resolve(self, policy: Policy = Policy()) -> Resolved:
        """`policy` with this target's defaults wherever it says None."""
        batch = policy.max_batch_size or self.max_batch_size
        preferred = policy.batching.preferred_batch_sizes
        if preferred is None:  # the target's sizes that fit a lowered max_batch_size
            preferred = tuple(s for s in self.preferred_batch_sizes if s <= batch)
        elif max(preferred) > batch:
            raise BuildError(f"preferred batch sizes {list(preferred)} exceed max_batch_size {batch}")
        queue = policy.queue
        enabled = policy.batching.enabled
        delay = policy.batching.max_queue_delay_us
        return Resolved(
            max_batch_size=batch,
            instances=policy.instances or 1,
            dynamic_batching=self.dynamic_batching if enabled is None else enabled,
            preferred_batch_sizes=preferred,
            max_queue_delay_us=self.queue_delay_us if delay is None else delay,
            max_queue_size=queue.max_queue_size or self.max_queue_size,
            queue_timeout_us=self.queue_timeout_us if queue.timeout_ms is None else queue.timeout_ms * 1000,
        )


NO_DYNAMIC_BATCHING = Policy(batching=Batching(enabled=False))


@dataclass(frozen=True)
class OnnxModel:
    """An ONNX step; `model.onnx` sits in its version folder.

    The cpu_* fields, concat_batch and output_checks only apply on the cpu target, where the generic
    Python-backend onnxruntime model serves it (`builders.cpu_runner`).
    """

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    cpu_threads: int = 2  # onnxruntime intra-op threads on the cpu target
    # Concatenating a batch copies every input; for 99.5 MB frames running requests one by one is cheaper.
    concat_batch: bool = True
    output_checks: tuple[OutputCheck, ...] = ()  # cpu target only: the Python model enforces them
    policy: Policy = Policy()
    warmup: Warmup | None = Warmup()  # run on each instance before the model is ready (builders.warmup); None: none


@dataclass(frozen=True)
class PythonModel:
    """A Python-backend model whose sources live in `python_backends/<source>/`."""

    name: str
    source: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    parameters: dict[str, str] = field(default_factory=dict)
    optional_inputs: frozenset[str] = frozenset()
    decoupled: bool = False  # responses go through the response sender: 0..n per request (streaming)
    shared: tuple[str, ...] = ()  # more modules shipped beside model.py, as "<python_backends folder>/<file>.py"
    policy: Policy = Policy()
    gpu: bool = False  # computes on the GPU itself (e.g. an onnxruntime session): KIND_GPU on the gpu target
    warmup: Warmup | None = Warmup()  # run on each instance before the model is ready (builders.warmup); None: none


@dataclass(frozen=True)
class EnsembleStep:
    """One step of an ensemble: `input_map`/`output_map` go model tensor -> ensemble tensor."""

    model: str
    input_map: dict[str, str]
    output_map: dict[str, str]


@dataclass(frozen=True)
class Ensemble:
    """Steps chained by Triton; no policy of its own (its steps' queues bound it)."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    steps: tuple[EnsembleStep, ...]
    max_batch_size: int | None = None  # None: the target's; `with_policies` lowers it to its steps' smallest


ModelSpec = OnnxModel | PythonModel | Ensemble


def with_policies(specs: list[ModelSpec], overrides: Mapping[str, Policy], target: Target) -> list[ModelSpec]:
    """`specs` with each override layered over its model's own policy.

    Ensembles get the smallest max_batch_size of their steps (Triton refuses a larger one).
    """
    known = {s.name: s for s in specs}
    for name in overrides:
        if name not in known:
            raise BuildError(f"unknown model {name!r}: this build has {', '.join(known)}")
        if isinstance(known[name], Ensemble):
            raise BuildError(f"{name} is an ensemble: it has no policy of its own, set its steps' instead")
    layered = [replace(s, policy=overrides[s.name].over(s.policy)) if s.name in overrides else s for s in specs]
    by_name = {s.name: s for s in layered}

    def step_limit(ens: Ensemble) -> int:
        steps = [by_name[s.model] for s in ens.steps if not isinstance(by_name.get(s.model, ens), Ensemble)]
        return min((target.resolve(s.policy).max_batch_size for s in steps), default=target.max_batch_size)

    return [
        replace(s, max_batch_size=step_limit(s))
        if isinstance(s, Ensemble) and step_limit(s) < (s.max_batch_size or target.max_batch_size)
        else s
        for s in layered
    ]


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


def _batching(policy: Resolved) -> dict:
    if not policy.dynamic_batching:
        return {}
    return {
        "dynamicBatching": {
            "preferredBatchSize": list(policy.preferred_batch_sizes),
            "maxQueueDelayMicroseconds": policy.max_queue_delay_us,
            "defaultQueuePolicy": {
                "maxQueueSize": policy.max_queue_size,
                "timeoutAction": "REJECT",
                "defaultTimeoutMicroseconds": policy.queue_timeout_us,
                "allowTimeoutOverride": True,
            },
        }
    }


def _onnx_dict(spec: OnnxModel, target: Target) -> dict:
    if target.device == "cpu":
        return cpu_runner.serving(spec)
    serving: dict = {"platform": "onnxruntime_onnx"}
    if target.tensorrt_fp16:
        trt = {"name": "tensorrt", "parameters": {"precision_mode": "FP16", "max_workspace_size_bytes": str(1 << 30)}}
        serving["optimization"] = {"executionAccelerators": {"gpuExecutionAccelerator": [trt]}}
    return serving


def _python_dict(spec: PythonModel) -> dict:
    body: dict = {"backend": "python"}
    if spec.parameters:
        body["parameters"] = {k: {"stringValue": str(v)} for k, v in sorted(spec.parameters.items())}
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
    optional = spec.optional_inputs if isinstance(spec, PythonModel) else frozenset()
    body: dict = {"name": spec.name, "input": _tensors(spec.inputs, optional), "output": _tensors(spec.outputs)}
    if isinstance(spec, Ensemble):
        body.update(maxBatchSize=spec.max_batch_size or target.max_batch_size, **_ensemble_dict(spec))
    else:
        try:
            policy = target.resolve(spec.policy)
        except BuildError as exc:
            raise BuildError(f"{spec.name}: {exc}") from exc
        on_device = isinstance(spec, OnnxModel) or (isinstance(spec, PythonModel) and spec.gpu)
        kind = target.onnx_kind if on_device else "KIND_CPU"
        body.update(maxBatchSize=policy.max_batch_size, instanceGroup=[{"kind": kind, "count": policy.instances}])
        body.update(_batching(policy))
        body.update(_onnx_dict(spec, target) if isinstance(spec, OnnxModel) else _python_dict(spec))
        if spec.warmup is not None:
            sizes = warmup.batch_sizes(policy.max_batch_size, policy.preferred_batch_sizes, spec.warmup.max_batch)
            body["modelWarmup"] = warmup.config(spec.name, spec.inputs, spec.warmup, sizes, optional)
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
