"""The one onnxruntime session factory: the served models, the builders' checks and the benchmarks' floor.

onnxruntime is imported when a session is made, so the rest of the contract needs only numpy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MODEL_FILE = "model.onnx"


def cpu_session(source: str | Path | bytes, threads: int | None = 2, *, quiet: bool = False) -> Any:
    """A CPU `InferenceSession` set up as the served ones are: `threads` intra-op threads (None: onnxruntime's
    default), one inter-op thread, sequential, and no spinning (idle spinning threads steal the cores the
    next pipeline step needs). `quiet` logs errors only. `source` is a path or a serialized model."""
    import onnxruntime as ort

    ort.disable_telemetry_events()
    opts = ort.SessionOptions()
    if quiet:
        opts.log_severity_level = 3
    if threads is not None:
        if threads < 1:
            raise ValueError(f"onnxruntime threads must be >= 1, got {threads}")
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    model = source if isinstance(source, bytes) else str(source)
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
