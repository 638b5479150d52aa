"""The reference a vision benchmark checks against: the served ONNX files run in-process with onnxruntime.

`InProcessChain` runs a repository's four steps one after another (the FP32 chain, or ensemble_jpeg's
`_u8` chain on the decoder's UINT8 frame); it is the compute floor, the FastAPI baseline's engine and
the in-process twin of each served step in the latency budget. `check_outputs` compares an answer with
its `Expected` outputs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clients.lib.checks import ResponseError, check_vision_outputs
from tritonyard_contract import CROP, DETECTIONS, FRAME, FRAME_U8, LETTERBOXED, OIL_PCT
from tritonyard_contract.onnx_session import MODEL_FILE, cpu_session

# Served and in-process runs share kernels and files; only thread counts and scheduling differ.
OIL_ATOL, CROP_ATOL, DET_ATOL = 1e-2, 1e-3, 1e-2  # oil %, crop pixels 0..1, boxes in 640 px and scores
ONNX_STEPS = ("preprocessing", "yolov8", "postprocessing", "efficientnet_v2")  # the FP32 chain, in order
U8_STEPS = ("preprocessing_u8", "yolov8", "postprocessing_u8", "efficientnet_v2")  # ensemble_jpeg's after decoding
THREADS_PARAM = "intra_op_threads"  # builders.cpu_runner.THREADS: what each served step's session gets


class WrongAnswer(RuntimeError):
    """A response arrived but does not match the reference: counted as an error."""


@dataclass(frozen=True)
class Expected:
    """What the in-process chain answers for the reference frame: (detections, crop, oil), batch of 1."""

    det: np.ndarray
    crop: np.ndarray
    oil: np.ndarray


@dataclass(frozen=True)
class Reference:
    """The frame every sender sends, its JPEG, and the in-process answers: `fp32` for the FP32 frame,
    `jpeg` for the JPEG bytes (decoded to UINT8 and run through the `_u8` steps, as ensemble_jpeg does)."""

    frame: np.ndarray  # [3, 2160, 3840] FP32
    jpeg: bytes
    fp32: Expected
    from_jpeg: Expected

    @property
    def oil_pct(self) -> float:
        return float(self.fp32.oil[0, 0])


def check_outputs(det: np.ndarray, crop: np.ndarray, oil: np.ndarray, want: Expected) -> None:
    """Raise WrongAnswer unless the outputs pass the client checks and equal the reference run's
    detections, crop and oil level (within the tolerances above)."""
    try:
        check_vision_outputs({DETECTIONS.name: det, CROP.name: crop, OIL_PCT.name: oil})
    except ResponseError as exc:
        raise WrongAnswer(str(exc)) from None
    for name, got, ref, atol in (("oil", oil, want.oil, OIL_ATOL), ("detections", det, want.det, DET_ATOL)):
        if not np.allclose(got, ref, rtol=0, atol=atol):
            raise WrongAnswer(f"{name} differ from the reference by {np.abs(got - ref).max():.3g} (> {atol:g})")
    if not np.allclose(crop, want.crop, rtol=0, atol=CROP_ATOL):
        raise WrongAnswer(f"crop differs from the reference by {np.abs(crop - want.crop).max():.3g} (> {CROP_ATOL:g})")


def served_threads(repo: Path, steps: tuple[str, ...] = (*ONNX_STEPS, *U8_STEPS)) -> dict[str, int]:
    """The onnxruntime intra-op threads each served step of `repo` runs with, read from its config.pbtxt."""
    from builders.triton_config import read_config

    threads = {}
    for step in steps:
        params = read_config(repo / step / "config.pbtxt").parameters
        threads[step] = int(params[THREADS_PARAM].string_value) if THREADS_PARAM in params else 2
    return threads


class InProcessChain:
    """The four model.onnx files run one after another with onnxruntime: the compute floor.

    `u8`: ensemble_jpeg's chain, which takes the decoder's UINT8 [2160, 3840, 3] frame. `threads`: one
    count for every step, or a count per step (served_threads: the settings the server runs with).
    `last_ms` holds each step's milliseconds of the last call."""

    def __init__(self, repo: Path, threads: int | dict[str, int] = 2, *, u8: bool = False) -> None:
        self.steps = U8_STEPS if u8 else ONNX_STEPS
        count = threads.get if isinstance(threads, dict) else lambda _step: threads
        self.sessions = {step: cpu_session(repo / step / "1" / MODEL_FILE, count(step)) for step in self.steps}
        self.frame_name = FRAME_U8.name if u8 else FRAME.name
        self.last_ms: dict[str, float] = {}

    def _run(self, step: str, feed: dict) -> np.ndarray:
        started = time.perf_counter()
        [out] = self.sessions[step].run(None, feed)
        self.last_ms[step] = (time.perf_counter() - started) * 1000
        return out

    def outputs(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(detections, crop, oil) of one frame ([3, 2160, 3840] FP32, or UINT8 HWC with `u8`), batch of 1."""
        pre, yolo, post, effnet = self.steps
        x = frame[np.newaxis]
        letterboxed = self._run(pre, {self.frame_name: x})
        det = self._run(yolo, {LETTERBOXED.name: letterboxed})
        crop = self._run(post, {self.frame_name: x, DETECTIONS.name: det})
        oil = self._run(effnet, {CROP.name: crop})
        return det, crop, oil

    def expected(self, frame: np.ndarray) -> Expected:
        return Expected(*self.outputs(frame))

    def __call__(self, frame: np.ndarray) -> float:
        """Oil level of one [3, 2160, 3840] frame."""
        return float(self.outputs(frame)[2][0, 0])


def step_ms(chain: InProcessChain, frame: np.ndarray, requests: int) -> dict[str, float]:
    """Median milliseconds of each step of `chain` on `frame`, one frame at a time (after a warm-up)."""
    chain.outputs(frame)
    samples: dict[str, list[float]] = {step: [] for step in chain.steps}
    for _ in range(requests):
        chain.outputs(frame)
        for step, ms in chain.last_ms.items():
            samples[step].append(ms)
    return {step: round(float(np.median(v)), 2) for step, v in samples.items()}
