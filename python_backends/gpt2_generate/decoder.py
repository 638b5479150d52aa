"""gpt2_stream's KV-cache decoder: one onnxruntime session over the model.onnx in its own version folder, run with
IO binding, so the cache stays where the session computes it.

The engine keeps the batch's cache as arrays of one kind (`ArrayOps`) and re-batches it with that kind's ops:
- `NumpyOps`: host arrays, for the CPU execution provider (the cpu target: no torch in the server's memory);
- `TorchOps`: torch tensors on the session's device. With the CUDA execution provider the cache never leaves the
  GPU: outputs are bound to preallocated device tensors, fed back as the next step's inputs by pointer, and joined,
  left-padded and dropped with torch on the device. Only the last position's logits ([batch, vocab]) come to the
  host, for sampling. The same code runs on the CPU with torch CPU tensors and the CPU provider (the tests do).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tritonyard_contract.onnx_session import cpu_session
from tritonyard_contract.tensors import ATTENTION_MASK, INPUT_IDS, LOGITS, POSITION_IDS, past_names, present_names

CUDA, CPU = "cuda", "cpu"


class NumpyOps:
    """Cache arrays in host memory."""

    ort_device = CPU

    def __init__(self, device_id: int = 0) -> None:
        self.device_id = device_id

    def empty(self, shape: tuple[int, ...]) -> np.ndarray:
        return np.empty(shape, np.float32)

    def cat(self, parts: list, axis: int = 0) -> np.ndarray:
        return np.concatenate(parts, axis=axis)

    def left_pad(self, x: np.ndarray, width: int, axis: int) -> np.ndarray:
        missing = width - x.shape[axis]
        if missing <= 0:
            return x
        pad = [(0, 0)] * x.ndim
        pad[axis] = (missing, 0)
        return np.pad(x, pad)

    def rows(self, x: np.ndarray, keep: list[int]) -> np.ndarray:
        return x[keep]

    def contiguous(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x)

    def ptr(self, x: np.ndarray) -> int:
        return x.ctypes.data

    def host(self, x: np.ndarray) -> np.ndarray:
        return x


class TorchOps(NumpyOps):
    """Cache tensors on a torch device: `cuda` (the gpu target) or `cpu` (the same code, tested on the CPU)."""

    def __init__(self, device: str, device_id: int = 0) -> None:
        import torch

        self.torch = torch
        self.ort_device = device
        self.device_id = device_id
        self.device = torch.device(f"cuda:{device_id}" if device == CUDA else "cpu")

    def empty(self, shape: tuple[int, ...]):
        return self.torch.empty(shape, dtype=self.torch.float32, device=self.device)

    def cat(self, parts: list, axis: int = 0):
        return self.torch.cat(parts, dim=axis)

    def left_pad(self, x, width: int, axis: int):
        missing = width - x.shape[axis]
        if missing <= 0:
            return x
        pad = [0, 0] * (x.dim() - 1 - axis) + [missing, 0]  # torch pads from the last dimension backwards
        return self.torch.nn.functional.pad(x, pad)

    def rows(self, x, keep: list[int]):
        return x.index_select(0, self.torch.as_tensor(keep, device=self.device))

    def contiguous(self, x):
        return x.contiguous()

    def ptr(self, x) -> int:
        return x.data_ptr()

    def host(self, x) -> np.ndarray:
        return x.float().cpu().numpy()


@dataclass(frozen=True)
class Geometry:
    """Decoder dims from the model's config parameters."""

    n_layer: int
    n_head: int
    head_dim: int
    vocab_size: int


def make_ops(cache_arrays: str, provider: str, device_id: int) -> NumpyOps:
    """The cache arrays for a provider: numpy (host) or torch (on the provider's device)."""
    if provider == CUDA and cache_arrays != "torch":
        raise ValueError(
            "parameter cache_arrays must be torch with execution_provider cuda (the cache stays on the GPU)"
        )
    return TorchOps(provider, device_id) if cache_arrays == "torch" else NumpyOps(device_id)


def make_session(path: Path, provider: str, device_id: int, threads: int):
    """A session on the CPU provider (set up as every served one is) or the CUDA provider on `device_id`."""
    if provider == CPU:
        return cpu_session(path, threads)
    import onnxruntime as ort

    ort.disable_telemetry_events()
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise RuntimeError(f"execution_provider cuda: this onnxruntime has only {available} (install onnxruntime-gpu)")
    providers = [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
    return ort.InferenceSession(str(path), providers=providers)


class Decoder:
    """One decoder step over a batch: host ids/mask/positions in, last-position logits (host) and the cache out."""

    def __init__(self, session, geometry: Geometry, ops: NumpyOps) -> None:
        self.session, self.geometry, self.ops = session, geometry, ops
        self.past_names, self.present_names = past_names(geometry.n_layer), present_names(geometry.n_layer)

    def empty_cache(self, batch: int) -> list:
        g = self.geometry
        return [self.ops.empty((batch, g.n_head, 0, g.head_dim)) for _ in self.past_names]

    def run(self, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray, past: list) -> tuple[np.ndarray, list]:
        g, ops = self.geometry, self.ops
        device, device_id = ops.ort_device, ops.device_id
        binding = self.session.io_binding()
        binding.bind_cpu_input(INPUT_IDS.name, ids)
        binding.bind_cpu_input(ATTENTION_MASK.name, mask)
        binding.bind_cpu_input(POSITION_IDS.name, positions)
        past = [ops.contiguous(p) for p in past]  # kept alive until the run ends
        for name, p in zip(self.past_names, past):
            binding.bind_input(name, device, device_id, np.float32, list(p.shape), ops.ptr(p))
        batch, width = ids.shape
        logits = ops.empty((batch, width, g.vocab_size))
        present = [ops.empty((batch, g.n_head, mask.shape[1], g.head_dim)) for _ in self.present_names]
        binding.bind_output(LOGITS, device, device_id, np.float32, list(logits.shape), ops.ptr(logits))
        for name, p in zip(self.present_names, present):
            binding.bind_output(name, device, device_id, np.float32, list(p.shape), ops.ptr(p))
        self.session.run_with_iobinding(binding)
        return ops.host(logits[:, -1, :]), present
