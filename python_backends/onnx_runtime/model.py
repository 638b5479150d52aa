"""Generic onnxruntime model for Triton's Python backend (the cpu target).

The pip-installed tritonserver has no onnxruntime backend, so every ONNX step of the cpu target
runs here: `model.onnx` beside this file, tensor names and dtypes from the model's config.
"""

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils
from tritonyard_contract.onnx_session import MODEL_FILE, cpu_session
from tritonyard_contract.params import ModelParams, param
from tritonyard_contract.tensors import OutputCheck

DEFAULT_INTRA_OP_THREADS = 2
# Benchmarks only (loadtests/profile_vision): a folder named here gets, when the model unloads, one JSON line per
# `execute` with CLOCK_MONOTONIC ns (Triton's trace clock) around it and its session.run. Kept in memory meanwhile.
TIMINGS_ENV = "TRITONYARD_STUB_TIMINGS"
MAX_TIMINGS = 20000


def _output_checks(text: str) -> tuple:
    return tuple(OutputCheck(**c) for c in json.loads(text))


@dataclass(frozen=True)
class Params(ModelParams):
    """The model's `parameters` from config.pbtxt, read once."""

    intra_op_threads: int = param(DEFAULT_INTRA_OP_THREADS, minimum=1)
    concat_batch: bool = True
    output_checks: tuple = param((), parse=_output_checks)


class TritonPythonModel:
    """Runs one ONNX model; dynamic batches are concatenated into one session run when allowed."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        self.name = args["model_name"]
        self.params = Params.from_config(config)
        self.inputs = [t["name"] for t in config["input"]]
        self.outputs = [t["name"] for t in config["output"]]
        path = Path(args["model_repository"]) / args["model_version"] / MODEL_FILE
        self.session = cpu_session(path, self.params.intra_op_threads)
        self.timings_dir = os.environ.get(TIMINGS_ENV)
        self.timings: list = []
        self.run_ns = 0
        pb_utils.Logger.log_info(f"{self.name}: loaded {path.name} with {self.params}")

    def execute(self, requests: list) -> list:
        if self.timings_dir is None:
            return self._execute(requests)
        entered, self.run_ns = time.monotonic_ns(), 0
        responses = self._execute(requests)
        if len(self.timings) < MAX_TIMINGS:
            self.timings.append((entered, self.run_ns, time.monotonic_ns(), len(requests)))
        return responses

    def _execute(self, requests: list) -> list:
        feeds = [{n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.inputs} for r in requests]
        if self.params.concat_batch and len(feeds) > 1:
            try:
                return self._run_concatenated(feeds)
            except Exception as exc:  # noqa: BLE001 - fall back so one bad request cannot fail the batch
                pb_utils.Logger.log_warn(f"{self.name}: batched run failed ({exc}); running requests one by one")
        return [self._run_one(f) for f in feeds]

    def _session_run(self, feed: dict) -> list:
        started = time.monotonic_ns()
        try:
            return self.session.run(self.outputs, feed)
        finally:
            self.run_ns += time.monotonic_ns() - started

    def _run_concatenated(self, feeds: list[dict]) -> list:
        sizes = [len(f[self.inputs[0]]) for f in feeds]
        merged = {n: np.concatenate([f[n] for f in feeds]) for n in self.inputs}
        results = self._session_run(merged)
        bounds = np.cumsum([0, *sizes])
        return [self._respond([r[lo:hi] for r in results]) for lo, hi in zip(bounds[:-1], bounds[1:])]

    def _run_one(self, feed: dict):
        try:
            results = self._session_run(feed)
        except Exception as exc:  # noqa: BLE001 - report it on this request only
            return pb_utils.InferenceResponse(
                error=pb_utils.TritonError(f"{self.name}: onnxruntime failed: {exc}", pb_utils.TritonError.INTERNAL)
            )
        return self._respond(results)

    def _respond(self, results: list[np.ndarray]):
        """One request's response, or INVALID_ARG naming the input when an output check fails."""
        by_name = dict(zip(self.outputs, results))
        for check in self.params.output_checks:
            if check.violated(by_name[check.output]):
                return pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"{check.blame}: {check.meaning}", pb_utils.TritonError.INVALID_ARG)
                )
        return pb_utils.InferenceResponse([pb_utils.Tensor(n, r) for n, r in zip(self.outputs, results)])

    def finalize(self) -> None:
        self.session = None
        if self.timings_dir and self.timings:
            keys = ("entered_ns", "run_ns", "left_ns", "requests")
            lines = [json.dumps({"model": self.name, **dict(zip(keys, t))}) for t in self.timings]
            path = Path(self.timings_dir) / f"{self.name}-{os.getpid()}.jsonl"
            path.write_text("\n".join(lines) + "\n")
