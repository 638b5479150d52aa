"""Request tensors for tritonclient's HTTP and gRPC APIs, named and typed as the contract says.

`api` is the tritonclient module in use (`tritonclient.http` or `tritonclient.grpc`): over HTTP every
tensor travels as binary data, never as JSON numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import ModuleType

import numpy as np

from tritonyard_contract.tensors import (
    FRAME,
    IMAGE_BYTES,
    MAX_TOKENS,
    PIPELINE_OUTPUTS,
    SEED,
    STOP,
    TEMPERATURE,
    TEXT_INPUT,
    TOP_K,
    TOP_P,
    TensorSpec,
)

GENERATE_OPTIONS = (MAX_TOKENS, TEMPERATURE, TOP_K, TOP_P, SEED)  # scalar options, by input name


def api_for(protocol: str) -> ModuleType:
    """tritonclient.http or tritonclient.grpc."""
    if protocol == "http":
        import tritonclient.http as api
    elif protocol == "grpc":
        import tritonclient.grpc as api
    else:
        raise ValueError(f"protocol must be http or grpc, got {protocol!r}")
    return api


def is_http(api: ModuleType) -> bool:
    return api.__name__.endswith("http")


def tensor(api: ModuleType, spec: TensorSpec, array: np.ndarray):
    """One InferInput holding `array` (batch dimension included) as `spec`'s datatype."""
    inp = api.InferInput(spec.name, list(array.shape), spec.datatype)
    if is_http(api):
        inp.set_data_from_numpy(array, binary_data=True)
    else:
        inp.set_data_from_numpy(array)
    return inp


def outputs(api: ModuleType, specs: Sequence[TensorSpec] = PIPELINE_OUTPUTS) -> list:
    """Requested outputs; binary over HTTP."""
    kw = {"binary_data": True} if is_http(api) else {}
    return [api.InferRequestedOutput(t.name, **kw) for t in specs]


def frame_input(api: ModuleType, frame: np.ndarray):
    """The FP32 [3, 2160, 3840] frame for `ensemble`, as a batch of one."""
    return tensor(api, FRAME, np.ascontiguousarray(frame[np.newaxis], dtype=np.float32))


def shm_frame_input(api: ModuleType, region: str, nbytes: int, shape: Sequence[int]):
    """The frame input read from registered shared memory instead of the request body."""
    inp = api.InferInput(FRAME.name, list(shape), FRAME.datatype)
    inp.set_shared_memory(region, nbytes)
    return inp


def image_input(api: ModuleType, data: bytes):
    """Encoded JPEG/PNG bytes for `ensemble_jpeg`, as a batch of one."""
    return tensor(api, IMAGE_BYTES, np.array([[data]], dtype=np.object_))


def generate_inputs(api: ModuleType, prompt: str, options: Mapping | None = None) -> list:
    """text_input plus whichever optional generation inputs `options` gives (None: the server's default)."""
    options = options or {}
    inputs = [tensor(api, TEXT_INPUT, np.array([[prompt.encode()]], dtype=np.object_))]
    for spec in GENERATE_OPTIONS:
        if options.get(spec.name) is not None:
            inputs.append(tensor(api, spec, np.array([[options[spec.name]]], dtype=spec.np_dtype)))
    if options.get(STOP.name):
        inputs.append(tensor(api, STOP, np.array([[s.encode() for s in options[STOP.name]]], dtype=np.object_)))
    return inputs


def first(result, name: str):
    """The first element of an output: str for BYTES, int otherwise."""
    value = result.as_numpy(name).reshape(-1)[0]
    return value.decode() if isinstance(value, bytes) else int(value)
