"""A stand-in for `triton_python_backend_utils`, enough to run our model.py files off-server.

It mirrors, with the real module's names and semantics, the calls our models make: tensors, responses and errors
with codes, the logger, response senders with the final flag (decoupled models answer through them), request
cancellation, and BLS: `InferenceRequest(...).exec()` / `async_exec()`, answered by the handler a test registers
for that model name (`bls_model`; `onnx_model` is one that checks the request against the model's config.pbtxt
and runs its model.onnx, as Triton's onnxruntime backend would).

`load_model` runs a model from a built version folder, `<repo>/<model>/1/`: what Triton loads, model.py with the
files the builder copied beside it, imported with that folder first on sys.path (as the stub process does) and
initialized with the args Triton passes. The integration tests run the same folders inside a real tritonserver.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import threading
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1  # the flag a response sender's last send carries
TRITONSERVER_MEMORY_CPU, TRITONSERVER_MEMORY_CPU_PINNED, TRITONSERVER_MEMORY_GPU = 0, 1, 2
DTYPES = {
    "TYPE_BOOL": np.bool_,
    "TYPE_UINT8": np.uint8,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_STRING": np.object_,
}


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

    def is_cpu(self) -> bool:
        return True


class InferenceResponse:
    def __init__(self, output_tensors: list[Tensor] | None = None, error: TritonError | None = None) -> None:
        self._tensors, self._error = list(output_tensors or []), error

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error

    def output_tensors(self) -> list[Tensor]:
        return list(self._tensors)


@dataclass(frozen=True)
class PreferredMemory:
    preferred_memory_type: int = TRITONSERVER_MEMORY_CPU
    preferred_device_id: int = 0


class ResponseSender:
    """Records every send as (response, flags); nothing may follow the final flag, as in Triton."""

    def __init__(self, request: Request) -> None:
        self._request = request
        self.sent: list[tuple[InferenceResponse | None, int]] = []
        self.final = threading.Event()

    def send(self, response: InferenceResponse | None = None, flags: int = 0) -> None:
        if self.final.is_set():
            raise TritonError("Unable to send response. Response sender has been closed.")
        self.sent.append((response, flags))
        if flags & TRITONSERVER_RESPONSE_COMPLETE_FINAL:
            self.final.set()

    def is_cancelled(self) -> bool:
        return self._request.is_cancelled()

    def responses(self, timeout: float = 60.0) -> list[InferenceResponse]:
        """The responses sent, once the final flag came (fails after `timeout` seconds without it)."""
        if not self.final.wait(timeout):
            raise AssertionError(f"no final flag within {timeout} s; sent so far: {self.sent}")
        return [r for r, _ in self.sent if r is not None]


class Request:
    """What the backend hands `execute`: named input tensors, an id, a response sender and a cancelled flag."""

    def __init__(self, inputs: dict[str, np.ndarray] | None = None, request_id: str = "", **named: np.ndarray) -> None:
        self._inputs = {n: Tensor(n, a) for n, a in {**(inputs or {}), **named}.items()}
        self._id, self._cancelled = request_id, threading.Event()
        self.sender = ResponseSender(self)
        self._parameters = "{}"  # what request.parameters() returns: a JSON object, as in Triton

    def parameters(self) -> str:
        return self._parameters

    def inputs(self) -> list[Tensor]:
        return list(self._inputs.values())

    def request_id(self) -> str:
        return self._id

    def get_response_sender(self) -> ResponseSender:
        return self.sender

    def is_cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """The client went away (a test's hook; Triton sets this itself)."""
        self._cancelled.set()


class Logger:
    lines: list[str] = []

    @classmethod
    def log_info(cls, msg: str) -> None:
        cls.lines.append(msg)

    log_warn = log_error = log_verbose = log_info


def get_input_tensor_by_name(request: Request | InferenceRequest, name: str) -> Tensor | None:
    return next((t for t in request.inputs() if t.name() == name), None)


def get_output_tensor_by_name(response: InferenceResponse, name: str) -> Tensor | None:
    return next((t for t in response.output_tensors() if t.name() == name), None)


def output(response: InferenceResponse, name: str) -> np.ndarray:
    """A test's shortcut: the named output as an array (fails when the response has none)."""
    tensor = get_output_tensor_by_name(response, name)
    assert tensor is not None, f"no output {name!r} (error: {response.error() and response.error().message()})"
    return tensor.as_numpy()


def using_decoupled_model_transaction_policy(model_config: dict) -> bool:
    return bool(model_config.get("model_transaction_policy", {}).get("decoupled", False))


# --- BLS ---

Handler = Callable[["InferenceRequest"], InferenceResponse]
BLS_MODELS: dict[str, Handler] = {}  # model name -> what answers its BLS requests
BLS_CALLS: list[InferenceRequest] = []  # every BLS request executed, in order


class InferenceRequest:
    """A BLS request. exec() answers with the registered model's response, keeping only the requested outputs."""

    def __init__(
        self,
        model_name: str,
        inputs: list[Tensor],
        requested_output_names: list[str],
        request_id: str = "",
        correlation_id: int = 0,
        model_version: int = -1,
        flags: int = 0,
        timeout: int = 0,
        preferred_memory: PreferredMemory | None = None,
        trace: object = None,
        parameters: dict | str | None = None,
    ) -> None:
        self.model_name, self._inputs = model_name, list(inputs)
        self.requested_output_names = list(requested_output_names)
        self.preferred_memory = preferred_memory or PreferredMemory()
        self._id = request_id
        self.parameters = parameters if isinstance(parameters, dict) else json.loads(parameters or "{}")

    def inputs(self) -> list[Tensor]:
        return list(self._inputs)

    def request_id(self) -> str:
        return self._id

    def exec(self, decoupled: bool = False):
        """The response; with `decoupled`, an iterator over the responses the (decoupled) model sent."""
        if not decoupled:
            return self._unary()
        BLS_CALLS.append(self)
        handler = BLS_MODELS.get(self.model_name)
        error = TritonError(f"Model '{self.model_name}' is not ready.", TritonError.NOT_FOUND)
        responses = handler(self) if handler else [InferenceResponse(error=error)]
        return iter(responses if isinstance(responses, list) else [responses])

    def _unary(self) -> InferenceResponse:
        BLS_CALLS.append(self)
        handler = BLS_MODELS.get(self.model_name)
        if handler is None:
            error = TritonError(f"Model '{self.model_name}' is not ready.", TritonError.NOT_FOUND)
            return InferenceResponse(error=error)
        try:
            response = handler(self)
        except TritonError as exc:
            return InferenceResponse(error=exc)
        if response.has_error():
            return response
        produced = {t.name(): t for t in response.output_tensors()}
        missing = [n for n in self.requested_output_names if n not in produced]
        if missing:
            return InferenceResponse(error=TritonError(f"{self.model_name}: no output {missing}", TritonError.INTERNAL))
        return InferenceResponse([produced[n] for n in self.requested_output_names])

    async def async_exec(self, decoupled: bool = False) -> InferenceResponse:
        await asyncio.sleep(0)
        return self.exec(decoupled)


def decoupled_model(model) -> Handler:
    """A handler answering BLS requests with a loaded decoupled model: what it sent, in order."""

    def handle(request: InferenceRequest) -> list[InferenceResponse]:
        inner = Request({t.name(): t.as_numpy() for t in request.inputs()}, request.request_id())
        inner._parameters = json.dumps(request.parameters)
        model.execute([inner])
        return inner.sender.responses()

    return handle


@contextmanager
def bls_model(name: str, handler: Handler) -> Iterator[list[InferenceRequest]]:
    """Answer BLS requests to `name` with `handler` inside the block; yields the list of requests it receives."""
    if name in BLS_MODELS:
        raise RuntimeError(f"a BLS handler for {name!r} is registered already")
    received: list[InferenceRequest] = []

    def recording(request: InferenceRequest) -> InferenceResponse:
        received.append(request)
        return handler(request)

    BLS_MODELS[name] = recording
    try:
        yield received
    finally:
        del BLS_MODELS[name]


def onnx_model(model_dir: Path) -> Handler:
    """A handler serving `<model_dir>/1/model.onnx` on the CPU, refusing what Triton would refuse first:
    unknown or missing inputs, another dtype, another shape, or a batch above max_batch_size."""
    import onnxruntime as ort

    config = read_config(model_dir)
    specs = {t["name"]: t for t in config.get("input", [])}
    max_batch = int(config.get("max_batch_size", 0))
    session = ort.InferenceSession(str(model_dir / "1" / "model.onnx"), providers=["CPUExecutionProvider"])

    def check(name: str, array: np.ndarray) -> None:
        spec = specs.get(name)
        if spec is None:
            raise TritonError(f"unexpected inference input '{name}' for model '{config['name']}'", 3)
        if array.dtype != DTYPES[spec["data_type"]]:
            raise TritonError(f"{name}: data-type {array.dtype}, expected {spec['data_type']}", 3)
        dims = [int(d) for d in spec["dims"]]
        shape = list(array.shape)
        if max_batch:
            if not 1 <= shape[0] <= max_batch:
                raise TritonError(f"{name}: batch size {shape[0]} outside 1..{max_batch}", 3)
            shape = shape[1:]
        if len(shape) != len(dims) or any(d not in (-1, s) for d, s in zip(dims, shape)):
            raise TritonError(f"{name}: shape {list(array.shape)}, expected dims {dims}", 3)

    def handle(request: InferenceRequest) -> InferenceResponse:
        feeds = {t.name(): t.as_numpy() for t in request.inputs()}
        for name, array in feeds.items():
            check(name, array)
        missing = [n for n, s in specs.items() if n not in feeds and not s.get("optional")]
        if missing:
            raise TritonError(f"expected {len(specs)} inputs but got {len(feeds)}: missing {missing}", 3)
        names = request.requested_output_names
        return InferenceResponse([Tensor(n, a) for n, a in zip(names, session.run(names, feeds))])

    return handle


# --- loading a model the way the stub process does ---

MODULE = types.ModuleType("triton_python_backend_utils")  # what `import triton_python_backend_utils` gives a model
for _name in (
    "TritonError",
    "Tensor",
    "InferenceResponse",
    "InferenceRequest",
    "PreferredMemory",
    "Logger",
    "get_input_tensor_by_name",
    "get_output_tensor_by_name",
    "using_decoupled_model_transaction_policy",
    "TRITONSERVER_RESPONSE_COMPLETE_FINAL",
    "TRITONSERVER_MEMORY_CPU",
    "TRITONSERVER_MEMORY_CPU_PINNED",
    "TRITONSERVER_MEMORY_GPU",
):
    setattr(MODULE, _name, globals()[_name])


def read_config(model_dir: Path) -> dict:
    """config.pbtxt as the dict `initialize` gets (JSON of ModelConfig with the proto's field names)."""
    config = text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    return json_format.MessageToDict(config, preserving_proto_field_name=True)


@contextmanager
def _own_modules(folder: Path) -> Iterator[None]:
    """Import the folder's own modules and packages (model.py's siblings, the shipped contract) from it, not
    from a same-named module another model or the project loaded; put the others back afterwards."""
    own = {p.stem for p in folder.glob("*.py")} | {p.parent.name for p in folder.glob("*/__init__.py")}
    clashes = lambda name: name.split(".")[0] in own or name == MODULE.__name__  # noqa: E731
    saved = {n: m for n, m in sys.modules.items() if clashes(n)}
    for name in saved:
        del sys.modules[name]
    sys.modules[MODULE.__name__] = MODULE
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        sys.path.remove(str(folder))
        for name in [n for n in sys.modules if clashes(n)]:
            del sys.modules[name]
        sys.modules.update(saved)


def load_model(model_dir: Path, parameters: dict[str, str | None] | None = None, version: str = "1"):
    """`<model_dir>/<version>/model.py`'s TritonPythonModel, initialized with config.pbtxt; `parameters` set config
    parameters (None removes one), as an edited config.pbtxt would."""
    config = read_config(model_dir)
    params = config.setdefault("parameters", {})
    for key, value in (parameters or {}).items():
        params.pop(key) if value is None else params.update({key: {"string_value": value}})
    folder = model_dir / version
    with _own_modules(folder):
        spec = importlib.util.spec_from_file_location(f"{model_dir.name}_model", folder / "model.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # as for any imported module (dataclasses look their module up)
        spec.loader.exec_module(module)
        model = module.TritonPythonModel()
        if hasattr(model, "initialize"):
            model.initialize(
                {
                    "model_config": json.dumps(config),
                    "model_name": config.get("name", model_dir.name),
                    "model_version": version,
                    "model_repository": str(model_dir),
                    "model_instance_kind": "CPU",
                    "model_instance_name": f"{model_dir.name}_0_0",
                    "model_instance_device_id": "0",
                }
            )
    return model


@contextmanager
def loaded(model_dir: Path, parameters: dict[str, str | None] | None = None) -> Iterator:
    """`load_model`, finalized when the block ends (models with threads, such as gpt2's engine, need it)."""
    model = load_model(model_dir, parameters)
    try:
        yield model
    finally:
        if hasattr(model, "finalize"):
            model.finalize()
