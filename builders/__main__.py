"""Command line: `python -m builders {vision,all} [options]`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from builders.errors import BuildError

DEFAULT_REPO = Path(__file__).resolve().parent.parent / "model_repository"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m builders",
        description="Export models to ONNX and write a Triton model repository. Without weights, the real "
        "architectures get deterministic random weights (a loud warning says so).",
    )
    p.add_argument(
        "pipeline", choices=["vision", "all"], help="'all' empties the repository first, then builds every pipeline"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path(os.environ.get("MODEL_REPOSITORY", DEFAULT_REPO)),
        help="repository folder (default: $MODEL_REPOSITORY or ./model_repository)",
    )
    p.add_argument(
        "--device",
        choices=["cpu", "gpu"],
        default=os.environ.get("DEVICE", "cpu"),
        help="cpu: Python-backend onnxruntime, KIND_CPU (runs here); gpu: onnxruntime backend, KIND_GPU (NGC/KServe)",
    )
    p.add_argument(
        "--tensorrt-fp16", action="store_true", help="gpu only: enable the TensorRT FP16 execution accelerator"
    )
    p.add_argument(
        "--no-dynamic-batching", action="store_true", help="write configs without dynamic_batching (for benchmarks)"
    )
    p.add_argument("--yolo-weights", type=Path, help="ultralytics YOLOv8 .pt checkpoint, or a ready .onnx used as-is")
    p.add_argument(
        "--effnet-weights", type=Path, help="EfficientNetV2-S state_dict (.pt/.pth), regression or ImageNet head"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random stand-in weights (default 0)")
    p.add_argument(
        "--max-image-bytes", type=int, default=32 * 1024 * 1024, help="ensemble_jpeg: largest encoded image accepted"
    )
    p.add_argument(
        "--max-image-pixels", type=int, default=7680 * 4320, help="ensemble_jpeg: largest decoded image (pixels)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for var, value in {"HF_HUB_OFFLINE": "1", "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False"}.items():
        os.environ.setdefault(var, value)
    from builders import repository, vision  # heavy imports (torch) after argument parsing

    start = time.perf_counter()
    try:
        cfg = vision.VisionConfig(
            device=args.device,
            tensorrt_fp16=args.tensorrt_fp16,
            dynamic_batching=not args.no_dynamic_batching,
            yolo_weights=args.yolo_weights,
            effnet_weights=args.effnet_weights,
            seed=args.seed,
            max_image_bytes=args.max_image_bytes,
            max_image_pixels=args.max_image_pixels,
        )
        if args.pipeline == "all":
            repository.clean(args.out)
        vision.build(cfg, args.out)
    except BuildError as exc:
        logging.getLogger("tritonyard.build").error("build failed: %s", exc)
        return 1
    logging.getLogger("tritonyard.build").info("built %s in %.0fs", args.out, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
