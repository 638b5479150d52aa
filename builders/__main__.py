"""Command line: `python -m builders {vision,gpt2,all} [options]`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from builders.errors import BuildError
from builders.triton_config import QueueLimits

DEFAULT_REPO = Path(__file__).resolve().parent.parent / "model_repository"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m builders",
        description="Export models to ONNX and write a Triton model repository. Without weights, the vision models "
        "use the stand-ins `make train` trained on synthetic CLO frames (weights/clo), and GPT-2 gets deterministic "
        "random weights; --random-weights makes the vision models random too (a loud warning says so).",
    )
    p.add_argument(
        "pipeline",
        choices=["vision", "gpt2", "all"],
        help="'all' empties the repository first, then builds every pipeline (vision, then gpt2)",
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
    p.add_argument(
        "--yolo-weights",
        type=Path,
        help="ultralytics YOLOv8 .pt checkpoint, or its ONNX export (default: the trained stand-in in weights/clo)",
    )
    p.add_argument(
        "--effnet-weights",
        type=Path,
        help="EfficientNetV2-S state_dict (.pt/.pth), regression or ImageNet head (default: the trained stand-in)",
    )
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="vision: seeded random weights instead of the trained stand-ins (plumbing only; outputs are meaningless)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random stand-in weights (default 0)")
    p.add_argument(
        "--cpu-threads",
        type=int,
        default=2,
        help="cpu target: onnxruntime intra-op threads of yolov8 and efficientnet_v2 (default 2; 1 favours "
        "throughput under concurrency, 2 latency of one request)",
    )
    p.add_argument(
        "--max-image-bytes", type=int, default=32 * 1024 * 1024, help="ensemble_jpeg: largest encoded image accepted"
    )
    p.add_argument(
        "--max-image-pixels", type=int, default=7680 * 4320, help="ensemble_jpeg: largest decoded image (pixels)"
    )
    limits = p.add_argument_group("overload (every dynamically batched model)")
    limits.add_argument(
        "--max-queue-size",
        type=int,
        help="requests a model's queue holds before refusing with UNAVAILABLE (default: cpu 16, gpu 64)",
    )
    limits.add_argument(
        "--queue-timeout-ms",
        type=int,
        help="longest wait in a model's queue before refusing with UNAVAILABLE; "
        "clients may ask for less or more per request (default: cpu 5000, gpu 1000)",
    )
    gpt2 = p.add_argument_group("gpt2")
    gpt2.add_argument(
        "--model",
        help="GPT-2 checkpoint: a save_pretrained directory, or a hub name already in the local HF cache "
        "(default: an offline stand-in with random weights)",
    )
    gpt2.add_argument(
        "--gpt2-size",
        choices=["tiny", "124m"],
        default="tiny",
        help="shape of the offline stand-in: tiny (2 layers, 128 wide) or 124m (GPT-2 small); ignored with --model",
    )
    gpt2.add_argument("--optimize", action="store_true", help="serve the decoder with onnxruntime transformer fusions")
    gpt2.add_argument("--int8", action="store_true", help="serve the decoder dynamically quantized to int8 (CPU)")
    gpt2.add_argument(
        "--max-slots", type=int, default=8, help="requests the generation loop decodes together (default 8)"
    )
    gpt2.add_argument(
        "--max-pending",
        type=int,
        default=32,
        help="requests waiting for a generation slot; more are refused with UNAVAILABLE (default 32)",
    )
    gpt2.add_argument(
        "--max-prompt-bytes",
        type=int,
        default=32 * 1024,
        help="longest prompt in UTF-8 bytes, refused before tokenizing (default 32768)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for var, value in {"HF_HUB_OFFLINE": "1", "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False"}.items():
        os.environ.setdefault(var, value)
    from builders import repository  # heavy imports (torch) after argument parsing

    start = time.perf_counter()
    try:
        if args.pipeline == "all":
            repository.clean(args.out)
        if args.pipeline in ("vision", "all"):
            _build_vision(args)
        if args.pipeline in ("gpt2", "all"):
            _build_gpt2(args)
    except BuildError as exc:
        logging.getLogger("tritonyard.build").error("build failed: %s", exc)
        return 1
    logging.getLogger("tritonyard.build").info("built %s in %.0fs", args.out, time.perf_counter() - start)
    return 0


def _queue(args: argparse.Namespace) -> QueueLimits:
    return QueueLimits(args.max_queue_size, args.queue_timeout_ms)


def _build_vision(args: argparse.Namespace) -> None:
    from builders import vision

    vision.build(
        vision.VisionConfig(
            device=args.device,
            tensorrt_fp16=args.tensorrt_fp16,
            dynamic_batching=not args.no_dynamic_batching,
            yolo_weights=args.yolo_weights,
            effnet_weights=args.effnet_weights,
            random_weights=args.random_weights,
            seed=args.seed,
            max_image_bytes=args.max_image_bytes,
            max_image_pixels=args.max_image_pixels,
            cpu_threads=args.cpu_threads,
            queue=_queue(args),
        ),
        args.out,
    )


def _build_gpt2(args: argparse.Namespace) -> None:
    from builders import gpt2

    gpt2.build(
        gpt2.Gpt2Config(
            device=args.device,
            tensorrt_fp16=args.tensorrt_fp16,
            dynamic_batching=not args.no_dynamic_batching,
            model=args.model,
            size=args.gpt2_size,
            optimize=args.optimize,
            int8=args.int8,
            seed=args.seed,
            max_slots=args.max_slots,
            max_pending=args.max_pending,
            max_prompt_bytes=args.max_prompt_bytes,
            queue=_queue(args),
        ),
        args.out,
    )


if __name__ == "__main__":
    sys.exit(main())
