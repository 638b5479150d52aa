"""Command line: `python -m builders {vision,gpt2,all} [options]`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from builders.errors import BuildError
from builders.offline import stay_offline
from builders.triton_config import Batching, Policy, QueueLimits

DEFAULT_REPO = Path(__file__).resolve().parent.parent / "model_repository"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m builders",
        fromfile_prefix_chars="@",  # @FILE: more flags, one per line (make tune's loadtests/tuning/cpu.args)
        description="Export models to ONNX and write a Triton model repository. Without weights, the vision models "
        "use the stand-ins `make train` trained on synthetic CLO frames (weights/clo), and GPT-2 the small one "
        "`make train-gpt2` trained on Shakespeare (weights/gpt2); --random-weights gives seeded random weights "
        "instead (a loud warning says so).",
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
        "--tensorrt-fp16",
        action="store_true",
        help="gpu only: TensorRT FP16 accelerator on the vision ONNX models (not GPT-2)",
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
        "--effnet-input-px",
        type=int,
        help="side the oil regressor was trained to read (a divisor of 384): the served 384 px crop is "
        "average-pooled to it inside the graph (default: 384 for --effnet-weights, the stand-in's recorded side)",
    )
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="seeded random weights instead of the trained stand-ins, for vision and GPT-2 (GPT-2: the --gpt2-size "
        "shape, tiny by default); plumbing only, outputs are meaningless",
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
    limits = p.add_argument_group(
        "overload (every dynamically batched model; MODEL=VALUE sets one model, comma-separated or repeated)"
    )
    limits.add_argument(
        "--max-queue-size",
        action="append",
        metavar="N|MODEL=N",
        help="requests a model's queue holds before refusing with UNAVAILABLE (default: cpu 16, gpu 64)",
    )
    limits.add_argument(
        "--queue-timeout-ms",
        action="append",
        metavar="MS|MODEL=MS",
        help="longest wait in a model's queue before refusing with UNAVAILABLE; "
        "clients may ask for less or more per request (default: cpu 5000, gpu 1000)",
    )
    policy = p.add_argument_group(
        "per-model scheduling (MODEL=VALUE, comma-separated or repeated; ensembles have none, set their steps')"
    )
    policy.add_argument(
        "--instances",
        action="append",
        metavar="MODEL=N",
        help="instance count of a model, e.g. yolov8=2,efficientnet_v2=1 (default 1; image_decoder 2 on gpu); "
        "the kind follows the target (ONNX models and gpt2_stream KIND_GPU on gpu, the rest KIND_CPU)",
    )
    policy.add_argument(
        "--threads",
        action="append",
        metavar="MODEL=N",
        help="cpu target: onnxruntime intra-op threads of an ONNX model, over --cpu-threads and the defaults "
        "(preprocessing and postprocessing 1), e.g. yolov8=1,efficientnet_v2=2; `make tune` writes its choice "
        "as a file of flags: `@loadtests/tuning/cpu.args`",
    )
    policy.add_argument(
        "--max-batch-size",
        action="append",
        metavar="MODEL=N",
        help="a model's max_batch_size (default: cpu 4, gpu 8); ensembles take their steps' smallest",
    )
    policy.add_argument(
        "--batching",
        action="append",
        metavar="MODEL=on|off",
        help="dynamic batching of a model, over --no-dynamic-batching (default: on, off for gpt2 and gpt2_stream)",
    )
    policy.add_argument(
        "--max-queue-delay-us",
        action="append",
        metavar="MODEL=US",
        help="how long a model's dynamic batcher waits to fill a batch (default: cpu 2000, gpu 500)",
    )
    gpt2 = p.add_argument_group("gpt2")
    gpt2.add_argument(
        "--model",
        help="GPT-2 checkpoint: a save_pretrained directory, or a hub name already in the local HF cache "
        "(default: the trained stand-in in weights/gpt2, a small GPT-2 trained on Shakespeare)",
    )
    gpt2.add_argument(
        "--gpt2-size",
        choices=["tiny", "124m"],
        help="GPT-2 gets the random-weight stand-in of this shape (as with --random-weights): tiny (2 layers, "
        "128 wide) or 124m (GPT-2 small's shape, for benchmarks); ignored with --model",
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
    stay_offline()
    from builders import repository  # heavy imports (torch) after argument parsing

    start = time.perf_counter()
    try:
        _queue(args)  # bad values fail before the repository is touched
        policies = _split_policies(args, _policies(args))
        if args.pipeline == "all":
            repository.clean(args.out)
        if args.pipeline in ("vision", "all"):
            _build_vision(args, policies["vision"])
        if args.pipeline in ("gpt2", "all"):
            _build_gpt2(args, policies["gpt2"])
    except BuildError as exc:
        logging.getLogger("tritonyard.build").error("build failed: %s", exc)
        return 1
    logging.getLogger("tritonyard.build").info("built %s in %.0fs", args.out, time.perf_counter() - start)
    return 0


def _assignments(flag: str, values: list[str] | None, bare: bool = False) -> tuple[str | None, dict[str, str]]:
    """`--flag a=1,b=2 --flag c=3` as (None, {a: 1, b: 2, c: 3}); with `bare`, a plain value (the last wins)
    is allowed too and comes first: `--flag 16,a=32` is ("16", {a: 32})."""
    default, per_model = None, {}
    for entry in (e.strip() for v in values or [] for e in v.split(",")):
        name, sep, value = entry.partition("=")
        if sep and name.strip() and value.strip():
            per_model[name.strip()] = value.strip()
        elif bare and not sep and entry:
            default = entry
        else:
            example = f"{flag} 16 or {flag} yolov8=32" if bare else f"{flag} yolov8=2"
            raise BuildError(f"{flag} {entry!r}: expected {'a number or ' if bare else ''}MODEL=VALUE, e.g. {example}")
    return default, per_model


def _int(flag: str, value: str | None, model: str = "") -> int | None:
    try:
        return None if value is None else int(value)
    except ValueError:
        raise BuildError(f"{flag} {model + '=' if model else ''}{value}: not an integer") from None


TARGET_WIDE = ("--max-queue-size", "--queue-timeout-ms")  # flags whose plain value sets every model's default


def _queue(args: argparse.Namespace) -> QueueLimits:
    """The target-wide queue bounds: plain --max-queue-size / --queue-timeout-ms values."""
    size = _assignments("--max-queue-size", args.max_queue_size, bare=True)[0]
    timeout = _assignments("--queue-timeout-ms", args.queue_timeout_ms, bare=True)[0]
    return QueueLimits(_int("--max-queue-size", size), _int("--queue-timeout-ms", timeout))


def _policies(args: argparse.Namespace) -> dict[str, Policy]:
    """Per-model overrides from MODEL=VALUE flags, by model name."""
    ints = {
        "--instances": args.instances,
        "--max-batch-size": args.max_batch_size,
        "--max-queue-delay-us": args.max_queue_delay_us,
        "--max-queue-size": args.max_queue_size,
        "--queue-timeout-ms": args.queue_timeout_ms,
    }
    values: dict[str, dict[str, int | bool]] = {}
    for flag, given in ints.items():
        for model, value in _assignments(flag, given, bare=flag in TARGET_WIDE)[1].items():
            values.setdefault(model, {})[flag] = _int(flag, value, model)
    for model, value in _assignments("--batching", args.batching)[1].items():
        if value.lower() not in ("on", "off"):
            raise BuildError(f"--batching {model}={value}: use on or off")
        values.setdefault(model, {})["--batching"] = value.lower() == "on"
    policies = {}
    for model, v in values.items():
        try:
            policies[model] = Policy(
                max_batch_size=v.get("--max-batch-size"),
                instances=v.get("--instances"),
                batching=Batching(enabled=v.get("--batching"), max_queue_delay_us=v.get("--max-queue-delay-us")),
                queue=QueueLimits(v.get("--max-queue-size"), v.get("--queue-timeout-ms")),
            )
        except BuildError as exc:
            raise BuildError(f"{model}: {exc}") from None
    return policies


def _split_policies(args: argparse.Namespace, policies: dict[str, Policy]) -> dict[str, dict[str, Policy]]:
    """The overrides by pipeline; a model no selected pipeline builds, or an ensemble, is an error."""
    split: dict[str, dict[str, Policy]] = {"vision": {}, "gpt2": {}}
    if not policies:
        return split
    from builders import gpt2, vision

    pipelines = ["vision", "gpt2"] if args.pipeline == "all" else [args.pipeline]
    models = {"vision": [s.name for s in vision.specs(vision.VisionConfig(device=args.device))], "gpt2": gpt2.MODELS}
    for name, policy in policies.items():
        owner = next((p for p in pipelines if name in models[p]), None)
        if owner is None:
            known = ", ".join(m for p in pipelines for m in models[p])
            raise BuildError(f"unknown model {name!r}: `{args.pipeline}` builds {known}")
        split[owner][name] = policy
    vision.specs(vision.VisionConfig(device=args.device, policies=split["vision"]))  # refuses ensembles
    return split


def vision_config(argv: list[str]):
    """The `VisionConfig` that `python -m builders vision ARGV` builds, for tools that re-render configs over
    already exported models (loadtests/tune.py); BuildError on bad flags."""
    args = _parser().parse_args(["vision", *argv])
    return _vision_config(args, _split_policies(args, _policies(args))["vision"])


def _build_vision(args: argparse.Namespace, policies: dict[str, Policy]) -> None:
    from builders import vision

    vision.build(_vision_config(args, policies), args.out)


def _vision_config(args: argparse.Namespace, policies: dict[str, Policy]):
    from builders import vision

    return vision.VisionConfig(
        device=args.device,
        tensorrt_fp16=args.tensorrt_fp16,
        dynamic_batching=not args.no_dynamic_batching,
        yolo_weights=args.yolo_weights,
        effnet_weights=args.effnet_weights,
        effnet_input_px=args.effnet_input_px,
        random_weights=args.random_weights,
        seed=args.seed,
        max_image_bytes=args.max_image_bytes,
        max_image_pixels=args.max_image_pixels,
        cpu_threads=args.cpu_threads,
        threads=_threads(args),
        queue=_queue(args),
        policies=policies,
    )


def _threads(args: argparse.Namespace) -> dict[str, int]:
    """--threads MODEL=N as {model: N}; the vision specs refuse unknown or non-ONNX models."""
    return {m: _int("--threads", v, m) for m, v in _assignments("--threads", args.threads)[1].items()}


def _build_gpt2(args: argparse.Namespace, policies: dict[str, Policy]) -> None:
    from builders import gpt2

    gpt2.build(
        gpt2.Gpt2Config(
            device=args.device,
            tensorrt_fp16=args.tensorrt_fp16,
            dynamic_batching=not args.no_dynamic_batching,
            model=args.model,
            random_weights=args.random_weights or args.gpt2_size is not None,
            size=args.gpt2_size or "tiny",
            optimize=args.optimize,
            int8=args.int8,
            seed=args.seed,
            max_slots=args.max_slots,
            max_pending=args.max_pending,
            max_prompt_bytes=args.max_prompt_bytes,
            queue=_queue(args),
            policies=policies,
        ),
        args.out,
    )


if __name__ == "__main__":
    sys.exit(main())
