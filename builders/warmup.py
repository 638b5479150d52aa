"""Warmup: the requests Triton runs on every model instance before the model reports ready (`model_warmup`).

The first request after a load otherwise pays for what the model does only once: onnxruntime's arena and
thread pools, the Python stub's shared memory growing to a batch of 99.5 MB frames, Pillow's decoder, the
GPT-2 engine's first prefill and decode steps, gpt2's first BLS call and, on the gpu target with TensorRT, the
engine build. Triton runs each warmup sample through the model's own `execute` when an instance loads; a sample
that fails, fails the load (the error names the sample), so a model is never ready cold or broken.

Every non-ensemble spec carries a `Warmup`; `config` renders it into the spec's `ModelConfig` and `write_files`
puts the data files in `<model>/warmup/`, where Triton reads `input_data_file`. One sample per batch size the
model sees: 1, the dynamic batcher's preferred sizes and max_batch_size (cpu 1, 2, 4; gpu 1, 4, 8).

The inputs are realistic where zeros would not exercise the real path: a tiny valid JPEG for the decoder (it
letterboxes it into the full 4K frame), a prompt and max_tokens for GPT-2 (so a prefill and decode steps run),
a detection row for the crop step (so it crops at a box, not the fallback square), a letterboxed picture and a
crop that are not flat. A frame of zeros is a valid black frame, and the letterbox and crop graphs do the same
work whatever the pixels, so the 99.5 MB (FP32) and 24.9 MB (UINT8) frames use Triton's zero_data instead of a
file. Triton refuses `model_warmup` on ensembles ("model_warmup can not be specified for ensemble"): an ensemble
holds no code or state of its own, and each of its steps is warmed here.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from builders.errors import BuildError
from tritonyard_contract import (
    CROP,
    DET_LETTERBOX,
    DETECTIONS,
    FRAME,
    FRAME_U8,
    IMAGE_BYTES,
    LETTERBOXED,
    MAX_TOKENS,
    PAD_VALUE,
    TEXT_INPUT,
    TensorSpec,
)

FOLDER = "warmup"  # Triton reads every input_data_file from <model dir>/warmup/
PROMPT = "The oil level in the pot is"
NEW_TOKENS = 8  # a prefill and 7 decode steps per warmup request
JPEG_SIZE = (64, 36)  # 16:9 like the camera, so the decoder letterboxes it into the whole 4K frame


@dataclass(frozen=True)
class Warmup:
    """How a model is warmed: its required inputs always, plus `optional` ones (e.g. GPT-2's max_tokens)."""

    optional: tuple[TensorSpec, ...] = ()
    count: int = 1  # runs of each sample
    max_batch: int | None = None  # the most requests one sample may send at once (what the model admits); None: any

    def __post_init__(self) -> None:
        if self.count < 1:
            raise BuildError(f"warmup count must be >= 1, got {self.count}")
        if self.max_batch is not None and self.max_batch < 1:
            raise BuildError(f"warmup max_batch must be >= 1, got {self.max_batch}")


def batch_sizes(max_batch_size: int, preferred: tuple[int, ...], cap: int | None = None) -> tuple[int, ...]:
    """The batch sizes a model sees: one request alone, the batcher's preferred sizes, and the largest batch, none
    above `cap` (a model that refuses more requests at once would fail its own warmup)."""
    return tuple(n for n in sorted({1, *preferred, max_batch_size}) if cap is None or n <= cap)


# --- the samples: raw bytes as Triton reads an input_data_file (BYTES: a 4-byte length before each element) ---


def _bytes_element(data: bytes) -> bytes:
    return struct.pack("<I", len(data)) + data


def _jpeg() -> bytes:
    """A tiny valid JPEG: a gray room with a lit glass in it, so the decoder runs its real decode and resize."""
    from PIL import Image, ImageDraw

    w, h = JPEG_SIZE
    img = Image.new("RGB", JPEG_SIZE, (90, 90, 96))
    draw = ImageDraw.Draw(img)
    draw.rectangle((w * 0.55, h * 0.2, w * 0.7, h * 0.85), fill=(205, 210, 215))
    draw.rectangle((w * 0.55, h * 0.5, w * 0.7, h * 0.85), fill=(190, 140, 40))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return _bytes_element(buf.getvalue())


def _letterboxed() -> bytes:
    """YOLO's input as `preprocessing` makes it: gray bands, and a picture with a bright box in the middle."""
    box = DET_LETTERBOX
    image = np.full(LETTERBOXED.dims, PAD_VALUE / 255, np.float32)
    ramp = np.linspace(0.2, 0.6, box.new_w, dtype=np.float32)
    image[:, box.pad_y : box.pad_y + box.new_h, box.pad_x : box.pad_x + box.new_w] = ramp
    image[:, 260:420, 300:360] = 0.9
    return image.tobytes()


def _detections() -> bytes:
    """One detection (x1, y1, x2, y2, score, class in letterbox pixels) and zero rows: the crop-at-a-box path."""
    rows = np.zeros(DETECTIONS.dims, np.float32)
    rows[0] = (300.0, 260.0, 360.0, 420.0, 0.9, 0.0)
    return rows.tobytes()


def _crop() -> bytes:
    """The oil step's input: a glass, light above the oil line and amber below it (pixels / 255)."""
    crop = np.empty(CROP.dims, np.float32)
    crop[:, : CROP.dims[1] * 2 // 5] = np.array([0.8, 0.82, 0.85], np.float32)[:, None, None]
    crop[:, CROP.dims[1] * 2 // 5 :] = np.array([0.75, 0.55, 0.15], np.float32)[:, None, None]
    return crop.tobytes()


# Tensor name -> the sample's bytes, or None for Triton's zero_data. A numeric input without an entry is warmed with
# zero_data; a BYTES one cannot be (zeros are empty strings, which no text or image model accepts): the build fails
# and says so, so a new model cannot ship cold, or with a warmup that fails its load, by accident.
SAMPLES: dict[str, Callable[[], bytes] | None] = {
    FRAME.name: None,
    FRAME_U8.name: None,
    LETTERBOXED.name: _letterboxed,
    DETECTIONS.name: _detections,
    CROP.name: _crop,
    IMAGE_BYTES.name: _jpeg,
    TEXT_INPUT.name: lambda: _bytes_element(PROMPT.encode()),
    MAX_TOKENS.name: lambda: np.array([NEW_TOKENS], np.int32).tobytes(),
}


def _tensors(model: str, inputs: tuple[TensorSpec, ...], warmup: Warmup, optional: frozenset[str]) -> list[TensorSpec]:
    """The inputs every warmup request sets: the required ones and the optional ones the Warmup names."""
    wanted = {t.name for t in warmup.optional}
    tensors = [t for t in inputs if t.name not in optional or t.name in wanted]
    for t in tensors:
        if t.name not in SAMPLES and t.dtype == "TYPE_STRING":
            raise BuildError(f"{model}: no warmup sample for BYTES input {t.name}; add one to builders.warmup.SAMPLES")
        if any(d < 1 for d in t.dims):
            raise BuildError(f"{model}: warmup input {t.name} has variable dims {list(t.dims)}")
    return tensors


def config(
    model: str,
    inputs: tuple[TensorSpec, ...],
    warmup: Warmup,
    sizes: tuple[int, ...],
    optional: frozenset[str] = frozenset(),
) -> list[dict]:
    """`model_warmup` entries (protobuf JSON names) for a model with these inputs (`optional`: the names of those
    it may go without): one sample per batch size."""
    data = {}
    for t in _tensors(model, inputs, warmup, optional):
        source = {"zeroData": True} if SAMPLES.get(t.name) is None else {"inputDataFile": t.name}
        data[t.name] = {"dataType": t.dtype, "dims": list(t.dims), **source}
    return [{"name": f"batch_{n}", "batchSize": n, "count": warmup.count, "inputs": data} for n in sizes]


def write_files(
    model_dir: Path, inputs: tuple[TensorSpec, ...], warmup: Warmup, optional: frozenset[str] = frozenset()
) -> list[Path]:
    """Write the sample files `config` names into `<model_dir>/warmup/`; returns them."""
    written = []
    for t in _tensors(model_dir.name, inputs, warmup, optional):
        make = SAMPLES.get(t.name)
        if make is None:
            continue
        path = model_dir / FOLDER / t.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(make())
        written.append(path)
    return written
