"""The alternative users would write instead of Triton: FastAPI + onnxruntime, the four models per request.

    python -m loadtests.baselines.fastapi_server --repository model_repository --port 8300

POST /infer       body: the raw FP32 [3, 2160, 3840] frame (99.5 MB, C order)
POST /infer_jpeg  body: JPEG/PNG bytes, decoded exactly as `ensemble_jpeg` does
Both answer JSON: {"oil_pct", "detections" [300][6], "crop_shape"}. Requests run in FastAPI's
thread pool, so concurrent requests share the sessions, as a typical deployment does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from clients.lib.images import to_frame
from loadtests.bench_vision import InProcessChain
from tritonyard_contract import FRAME
from tritonyard_contract.images import ImageError, decode

MAX_BYTES, MAX_PIXELS = 32 * 1024 * 1024, 7680 * 4320  # the same caps as image_decoder's defaults
FRAME_BYTES = int(np.prod(FRAME.dims)) * 4


def create_app(repository: Path, threads: int) -> FastAPI:
    """The app over one InProcessChain (one onnxruntime session per model, shared by all requests)."""
    chain = InProcessChain(repository, threads)
    app = FastAPI(title="tritonyard FastAPI baseline")

    def answer(frame: np.ndarray) -> dict:
        det, crop, oil = chain.outputs(frame)
        return {"oil_pct": float(oil[0, 0]), "detections": det[0].tolist(), "crop_shape": list(crop.shape)}

    @app.post("/infer")
    async def infer(request: Request) -> dict:
        body = await request.body()
        if len(body) != FRAME_BYTES:
            raise HTTPException(400, f"expected {FRAME_BYTES} bytes of FP32 frame, got {len(body)}")
        frame = np.frombuffer(body, np.float32).reshape(FRAME.dims)
        return await run_in_threadpool(answer, frame)

    @app.post("/infer_jpeg")
    async def infer_jpeg(request: Request) -> dict:
        body = await request.body()

        def decode_and_answer() -> dict:
            try:
                image = decode(body, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
            except ImageError as exc:
                raise HTTPException(400, str(exc)) from None
            # The decoder's UINT8 HWC frame as `ensemble`'s FP32 CHW (what ensemble_jpeg's _u8 steps read as bytes).
            return answer(to_frame(image))

        return await run_in_threadpool(decode_and_answer)

    @app.get("/health")
    async def health() -> dict:
        return {"ok": True}

    return app


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.baselines.fastapi_server",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--repository", type=Path, required=True, help="a built repository (its four model.onnx)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8300)
    p.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads per session")
    args = p.parse_args(argv)
    uvicorn.run(create_app(args.repository, args.threads), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
