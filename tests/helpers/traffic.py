"""Steady `ensemble_jpeg` traffic for the fault and rollout tests, and a vision-only repository copy.

Each thread has its own tritonclient (its HTTP client is not thread safe) and records every request:
when it was sent and answered (time.monotonic, the supervisor's clock), and what came back. No
retries: every failure the server reports must show up here.
"""

from __future__ import annotations

import io
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from builders.vision import VisionConfig, specs
from clients.synthetic import synthetic_frame
from tritonyard_contract import CROP, DETECTIONS, IMAGE_BYTES, OIL_PCT, PIPELINE_OUTPUTS


@dataclass(frozen=True)
class Outcome:
    """One request: sent/answered times, outputs on success, the error message otherwise."""

    sent: float
    answered: float
    outputs: dict[str, np.ndarray] | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def oil(self) -> float:
        return float(self.outputs[OIL_PCT.name].reshape(-1)[0])


def small_jpeg(seed: int = 3, size: tuple[int, int] = (480, 270)) -> bytes:
    """A synthetic frame, shrunk: the server still letterboxes it into the 4K frame."""
    buf = io.BytesIO()
    synthetic_frame(seed=seed).resize(size).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def infer(client: httpclient.InferenceServerClient, jpeg: bytes) -> dict[str, np.ndarray]:
    """ensemble_jpeg once; every pipeline output as an array without the batch dimension."""
    tensor = httpclient.InferInput(IMAGE_BYTES.name, [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[jpeg]], dtype=object))
    outputs = [httpclient.InferRequestedOutput(t.name, binary_data=True) for t in PIPELINE_OUTPUTS]
    result = client.infer("ensemble_jpeg", [tensor], outputs=outputs)
    return {t.name: result.as_numpy(t.name)[0] for t in PIPELINE_OUTPUTS}


def matches(outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray], oil_atol: float = 1e-3) -> bool:
    """Same shapes as the contract and the same values as the reference (atol as the vision parity tests)."""
    for spec in PIPELINE_OUTPUTS:
        if outputs[spec.name].shape != spec.dims:
            return False
    atol = {DETECTIONS.name: 1e-3, CROP.name: 1e-5, OIL_PCT.name: oil_atol}
    return all(np.allclose(outputs[n], reference[n], atol=a, rtol=0) for n, a in atol.items())


class Traffic:
    """`threads` clients sending ensemble_jpeg back to back until stop(); outcomes() lists what happened."""

    def __init__(self, url: str, jpeg: bytes, threads: int = 3, timeout: float = 120.0) -> None:
        self.url, self.jpeg, self.timeout = url, jpeg, timeout
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._outcomes: list[Outcome] = []
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        client = httpclient.InferenceServerClient(self.url, network_timeout=self.timeout, connection_timeout=10)
        try:
            while not self._stop.is_set():
                sent = time.monotonic()
                try:
                    outputs = infer(client, self.jpeg)
                    outcome = Outcome(sent, time.monotonic(), outputs, None)
                except InferenceServerException as exc:
                    outcome = Outcome(sent, time.monotonic(), None, str(exc))
                with self._lock:
                    self._outcomes.append(outcome)
        finally:
            client.close()

    def outcomes(self) -> list[Outcome]:
        with self._lock:
            return list(self._outcomes)

    def wait_for(self, condition: Callable[[list[Outcome]], bool], timeout: float, what: str) -> None:
        """Poll the outcomes until `condition` holds; fail with `what` after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not condition(self.outcomes()):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(0.1)

    def successes_after(self, moment: float) -> int:
        return sum(1 for o in self.outcomes() if o.ok and o.sent > moment)

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout)


def vision_repository(source: Path, dest: Path) -> Path:
    """The vision models of `source` in `dest`, hard-linked where possible (only read, never written)."""
    for spec in specs(VisionConfig()):
        try:
            shutil.copytree(source / spec.name, dest / spec.name, copy_function=os.link, ignore=_no_pycache)
        except OSError:  # another filesystem: copy instead
            shutil.rmtree(dest / spec.name, ignore_errors=True)
            shutil.copytree(source / spec.name, dest / spec.name, ignore=_no_pycache)
    return dest


def _no_pycache(_folder: str, names: list[str]) -> list[str]:
    return [n for n in names if n == "__pycache__"]
