"""The alternative users would write instead of Triton: FastAPI + onnxruntime, the four models per request.

    python -m loadtests.baselines.fastapi_server --repository model_repository --port 8300

POST /infer       body: the raw FP32 [3, 2160, 3840] frame (99.5 MB, C order): the same bytes as the tensor
                  data of Triton's binary HTTP request; runs the repository's FP32 chain (as `ensemble`)
POST /infer_jpeg  body: JPEG/PNG bytes, decoded exactly as `image_decoder` does (the contract's `decode` and
                  UINT8 frame), then the `_u8` chain (as `ensemble_jpeg`)
Both answer the three outputs as raw little-endian float32 bytes, detections [300, 6], crop [3, 384, 384],
oil % [1], back to back (`parse_answer` reads them), as Triton's binary outputs carry them. Each session
gets the intra-op threads the repository's config gives that step (no spinning: the shared session
factory), so both servers run the same ONNX files with the same thread settings. Requests run in
FastAPI's thread pool and share the sessions, as a typical deployment does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import uvicorn
from fastapi import FastAPI, HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool

from loadtests.vision_reference import InProcessChain, served_threads
from tritonyard_contract import CROP, DETECTIONS, FRAME, OIL_PCT
from tritonyard_contract.images import ImageError, decode, to_frame_u8

MAX_BYTES, MAX_PIXELS = 32 * 1024 * 1024, 7680 * 4320  # the same caps as image_decoder's defaults
FRAME_BYTES = int(np.prod(FRAME.dims)) * 4
ANSWER = tuple((1, *t.dims) for t in (DETECTIONS, CROP, OIL_PCT))  # shapes of the answer's three arrays


def encode_answer(det: np.ndarray, crop: np.ndarray, oil: np.ndarray) -> bytes:
    return b"".join(np.ascontiguousarray(a, "<f4").tobytes() for a in (det, crop, oil))


def parse_answer(body: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(detections, crop, oil) from an answer's bytes; ValueError when the size is wrong."""
    sizes = [int(np.prod(shape)) for shape in ANSWER]
    if len(body) != 4 * sum(sizes):
        raise ValueError(f"answer is {len(body)} bytes, expected {4 * sum(sizes)}")
    flat = np.frombuffer(body, "<f4")
    bounds = np.cumsum([0, *sizes])
    det, crop, oil = (flat[lo:hi].reshape(s) for lo, hi, s in zip(bounds[:-1], bounds[1:], ANSWER))
    return det, crop, oil


def create_app(repository: Path, threads: int | None = None) -> FastAPI:
    """The app over two InProcessChains (one onnxruntime session per model, shared by all requests)."""
    counts = served_threads(repository) if threads is None else threads
    fp32, u8 = InProcessChain(repository, counts), InProcessChain(repository, counts, u8=True)
    app = FastAPI(title="tritonyard FastAPI baseline")

    @app.post("/infer")
    async def infer(request: Request) -> Response:
        body = await request.body()
        if len(body) != FRAME_BYTES:
            raise HTTPException(400, f"expected {FRAME_BYTES} bytes of FP32 frame, got {len(body)}")
        frame = np.frombuffer(body, np.float32).reshape(FRAME.dims)
        answer = await run_in_threadpool(lambda: encode_answer(*fp32.outputs(frame)))
        return Response(answer, media_type="application/octet-stream")

    @app.post("/infer_jpeg")
    async def infer_jpeg(request: Request) -> Response:
        body = await request.body()

        def decode_and_answer() -> bytes:
            try:
                image = decode(body, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
            except ImageError as exc:
                raise HTTPException(400, str(exc)) from None
            return encode_answer(*u8.outputs(to_frame_u8(image)))

        return Response(await run_in_threadpool(decode_and_answer), media_type="application/octet-stream")

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
    p.add_argument("--repository", type=Path, required=True, help="a built repository (its model.onnx files)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8300)
    p.add_argument(
        "--threads", type=int, help="onnxruntime intra-op threads of every session (default: each step's config)"
    )
    args = p.parse_args(argv)
    uvicorn.run(create_app(args.repository, args.threads), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
