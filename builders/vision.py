"""The CLO vision pipeline builder: four ONNX steps, a JPEG decoder and two ensembles.

`build(cfg, out_dir)` exports each step, checks it against its torch source, and writes the
models for the chosen target. Run it as `python -m builders vision`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
import torch

from builders import onnx_export, progress, repository
from builders.errors import BuildError
from builders.nets import yolo, yolo_import
from builders.nets.efficientnet_v2 import build_oil_regressor
from builders.nets.frame_ops import CropBestBox, CropBestBoxU8, LetterboxFrame, LetterboxFrameU8
from builders.triton_config import (
    Device,
    Ensemble,
    EnsembleStep,
    ModelSpec,
    OnnxModel,
    OutputCheck,
    Policy,
    PythonModel,
    QueueLimits,
    Target,
    with_policies,
)
from tritonyard_contract import (
    CROP,
    DETECTIONS,
    FRAME,
    FRAME_U8,
    IMAGE_BYTES,
    LETTERBOXED,
    OIL_PCT,
    PIPELINE_OUTPUTS,
    TensorSpec,
)

log = logging.getLogger("tritonyard.build")

# The trained stand-ins `make train` writes (committed): what a build uses unless weights are given or refused.
STAND_IN_DIR = Path(__file__).resolve().parent.parent / "weights" / "clo"
STAND_IN_YOLO = STAND_IN_DIR / "yolov8n_clo.pt"
STAND_IN_OIL = STAND_IN_DIR / "oil_effnetv2s.pt"
STAND_IN_METRICS = STAND_IN_DIR / "metrics.json"  # `make train`'s record, which holds the recipe's input side
STAND_IN_NOTE = "trained on synthetic CLO frames by `make train`, not a production model"

# Max abs diff allowed between an export and its torch source, in each output's own units.
TOLERANCE = {
    "preprocessing": 1e-5,
    "preprocessing_u8": 1e-5,
    "postprocessing_u8": 1e-3,  # written-out bilinear vs grid_sample: grid normalisation rounds differently
    "yolov8 raw head": 1e-2,
    "yolov8": 1e-2,
    "postprocessing": 1e-4,
    "efficientnet_v2": 1e-2,
}


@dataclass(frozen=True)
class VisionConfig:
    """What to build; the defaults are the offline stand-in (random weights, cpu target)."""

    device: Device = "cpu"
    tensorrt_fp16: bool = False
    dynamic_batching: bool = True
    yolo_weights: Path | None = None  # ultralytics .pt, or a ready .onnx; None: the trained stand-in
    effnet_weights: Path | None = None  # EfficientNetV2-S state_dict (regression or ImageNet head); None: stand-in
    effnet_input_px: int | None = None  # side the regressor reads (384 crop pooled to it); None: 384, stand-in's own
    random_weights: bool = False  # plumbing only: seeded random init wherever no weights file is given
    seed: int = 0
    max_image_bytes: int = 32 * 1024 * 1024
    max_image_pixels: int = 7680 * 4320
    cpu_threads: int = 2  # intra-op threads of the two networks on the cpu target
    threads: Mapping[str, int] = field(default_factory=dict)  # per ONNX model, over cpu_threads (--threads)
    queue: QueueLimits = QueueLimits()  # queue bounds of every dynamically batched step (target defaults)
    policies: Mapping[str, Policy] = field(default_factory=dict)  # per-model overrides (--instances, ...)

    def __post_init__(self) -> None:
        if self.cpu_threads < 1:
            raise BuildError(f"--cpu-threads must be >= 1, got {self.cpu_threads}")
        for name, n in self.threads.items():
            if n < 1:
                raise BuildError(f"--threads {name}={n}: must be >= 1")

    @property
    def target(self) -> Target:
        return Target(self.device, self.tensorrt_fp16, self.dynamic_batching, self.queue)

    def weights(self, given: Path | None, stand_in: Path) -> Path | None:
        """The file to load: the one given, else the trained stand-in, else None (random init, --random-weights)."""
        if given is not None or self.random_weights:
            return given
        if not stand_in.is_file():
            raise BuildError(
                f"the trained stand-in {stand_in} is missing: run `make train` to make it, pass your own weights, "
                "or build with --random-weights (plumbing only)"
            )
        return stand_in


# Bad pixels are caught on small outputs instead of scanning 99.5 MB frames: each frame pixel feeds one
# letterbox average, so NaN/Inf always shows there; the crop check covers postprocessing called alone.
_EPS = 1e-4
PIXELS = "pixels must be finite numbers in 0..255 (found NaN, Inf or out-of-range values)"
CHECKS = {
    "preprocessing": (OutputCheck(LETTERBOXED.name, -_EPS, 1 + _EPS, FRAME.name, PIXELS),),
    "yolov8": (OutputCheck(DETECTIONS.name, -1e6, 1e6, LETTERBOXED.name, "values must be finite numbers"),),
    "postprocessing": (
        OutputCheck(CROP.name, -_EPS, 1 + _EPS, FRAME.name, f"{PIXELS} in the crop, or {DETECTIONS.name} not finite"),
    ),
    "efficientnet_v2": (OutputCheck(OIL_PCT.name, 0.0, 100.0, CROP.name, "values must be finite numbers"),),
}


def _pipeline_steps(frame: TensorSpec = FRAME, suffix: str = "") -> tuple[EnsembleStep, ...]:
    same = lambda *ts: {t.name: t.name for t in ts}  # noqa: E731 - models use the ensemble's tensor names
    return (
        EnsembleStep(f"preprocessing{suffix}", same(frame), same(LETTERBOXED)),
        EnsembleStep("yolov8", same(LETTERBOXED), same(DETECTIONS)),
        EnsembleStep(f"postprocessing{suffix}", same(frame, DETECTIONS), same(CROP)),
        EnsembleStep("efficientnet_v2", same(CROP), same(OIL_PCT)),
    )


def specs(cfg: VisionConfig) -> list[ModelSpec]:
    """Every model of the pipeline, in build order."""
    decode = EnsembleStep("image_decoder", {IMAGE_BYTES.name: IMAGE_BYTES.name}, {FRAME_U8.name: FRAME_U8.name})
    models: list[ModelSpec] = [
        OnnxModel(
            "preprocessing",
            (FRAME,),
            (LETTERBOXED,),
            cpu_threads=1,
            concat_batch=False,
            output_checks=CHECKS["preprocessing"],
        ),
        OnnxModel("yolov8", (LETTERBOXED,), (DETECTIONS,), cfg.cpu_threads, output_checks=CHECKS["yolov8"]),
        OnnxModel(
            "postprocessing",
            (FRAME, DETECTIONS),
            (CROP,),
            cpu_threads=1,
            concat_batch=False,
            output_checks=CHECKS["postprocessing"],
        ),
        OnnxModel("efficientnet_v2", (CROP,), (OIL_PCT,), cfg.cpu_threads, output_checks=CHECKS["efficientnet_v2"]),
        # ensemble_jpeg's own letterbox and crop read the decoded bytes; decoded pixels cannot be NaN.
        OnnxModel("preprocessing_u8", (FRAME_U8,), (LETTERBOXED,), cpu_threads=1, concat_batch=False),
        OnnxModel("postprocessing_u8", (FRAME_U8, DETECTIONS), (CROP,), cpu_threads=1, concat_batch=False),
        PythonModel(
            "image_decoder",
            "image_decoder",
            (IMAGE_BYTES,),
            (FRAME_U8,),
            parameters={"max_bytes": str(cfg.max_image_bytes), "max_pixels": str(cfg.max_image_pixels)},
            # two decoders on gpu; cpu: the target's default (1)
            policy=Policy(instances=2 if cfg.device == "gpu" else None),
        ),
        Ensemble("ensemble", (FRAME,), PIPELINE_OUTPUTS, _pipeline_steps()),
        Ensemble("ensemble_jpeg", (IMAGE_BYTES,), PIPELINE_OUTPUTS, (decode, *_pipeline_steps(FRAME_U8, "_u8"))),
    ]
    onnx = {m.name for m in models if isinstance(m, OnnxModel)}
    unknown = sorted(set(cfg.threads) - onnx)
    if unknown:
        raise BuildError(f"--threads {unknown[0]}: not an ONNX model of this build ({', '.join(sorted(onnx))})")
    models = [replace(m, cpu_threads=cfg.threads[m.name]) if m.name in cfg.threads else m for m in models]
    return with_policies(models, cfg.policies, cfg.target)


def _sample_frames(seed: int, batch: int = 2) -> torch.Tensor:
    """Synthetic CLO frames with oilers in them (FP32 [B,3,2160,3840], 0..255), so trained weights find boxes."""
    from training.scenes import render

    images = [np.asarray(render(seed, 900_000 + i, count=2 - i % 2).image) for i in range(batch)]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()


def _checked_export(
    label: str,
    module: torch.nn.Module,
    inputs: tuple[torch.Tensor, ...],
    path: Path,
    in_names: list[str],
    out_names: list[str],
) -> tuple[onnx.ModelProto, list[np.ndarray]]:
    """Export to `path`, compare with torch on `inputs`; returns the model and its ONNX outputs."""
    model = onnx_export.export(module, inputs, path, in_names, out_names)
    with torch.no_grad():
        expected = module(*inputs)
    expected = [t.numpy() for t in (expected if isinstance(expected, tuple) else (expected,))]
    actual = onnx_export.run(model, {n: t.numpy() for n, t in zip(in_names, inputs)})
    tolerance = TOLERANCE[label]
    diff = onnx_export.check(label, actual, expected, tolerance)
    log.info("  %s: max abs diff vs torch %.2e (tolerance %g)", label, diff, tolerance)
    return model, actual


def _model_path(repo: Path, name: str) -> Path:
    return repository.version_dir(repo, name) / "model.onnx"


def _export_preprocessing(repo: Path, frames: torch.Tensor) -> np.ndarray:
    path = _model_path(repo, "preprocessing")
    _, [letterboxed] = _checked_export(
        "preprocessing", LetterboxFrame(), (frames,), path, [FRAME.name], [LETTERBOXED.name]
    )
    return letterboxed


def _export_yolo(cfg: VisionConfig, repo: Path, letterboxed: np.ndarray) -> None:
    path = _model_path(repo, "yolov8")
    weights = cfg.weights(cfg.yolo_weights, STAND_IN_YOLO)
    if weights is not None and weights.suffix == ".onnx":
        # Raw head -> our NMS graph appended; nms=True export -> used as exported; batch fixed at 1 -> Scan per image.
        model, how = yolo_import.import_onnx(weights, input_name=LETTERBOXED.name, output_name=DETECTIONS.name)
        onnx_export.finalize_model(model, path)
        got = onnx_export.run(path, {LETTERBOXED.name: letterboxed})[0]
        if got.shape[1:] != DETECTIONS.dims:
            raise BuildError(f"{weights}: output shape {got.shape[1:]} is not {DETECTIONS.dims}")
        log.info("  yolov8: %s (no torch source to compare with)", how)
        return
    module, num_classes, source = yolo.build_yolov8(weights, seed=cfg.seed)
    if weights is None:
        progress.warn_random_weights("yolov8", source)
    elif weights == STAND_IN_YOLO:
        source = f"{source}, {STAND_IN_NOTE}"
    log.info("  yolov8: %s", source)
    # The raw head is checked against torch first, then the NMS graph against the NumPy reference.
    raw_path = path.with_name("raw.onnx")
    backbone, [raw] = _checked_export(
        "yolov8 raw head", module, (torch.from_numpy(letterboxed),), raw_path, ["images"], ["raw"]
    )
    raw_path.unlink()
    merged = yolo.attach_nms(backbone, num_classes, input_name=LETTERBOXED.name, output_name=DETECTIONS.name)
    onnx_export.finalize_model(merged, path)
    got = onnx_export.run(merged, {LETTERBOXED.name: letterboxed})[0]
    diff = onnx_export.check("yolov8 NMS", [got], [yolo.reference_nms(raw)], TOLERANCE["yolov8"])
    found = int((got[:, :, 4] > 0).sum())
    log.info("  yolov8: NMS graph vs numpy reference %.2e; %d boxes found in the check frames", diff, found)
    if found == 0 and weights == STAND_IN_YOLO:
        raise BuildError(f"{weights}: the trained stand-in found no oiler in the synthetic check frames")
    if found == 0 and weights is not None:
        log.warning("  yolov8: %s found no box in the synthetic check frames (other classes?)", weights.name)


def _check_detections(batch: int) -> torch.Tensor:
    # Row 0 of image 0 is a real box (in letterbox pixels); image 1 has none, exercising the fallback crop.
    det = torch.zeros(batch, *DETECTIONS.dims)
    det[0, 0] = torch.tensor([100.0, 200.0, 300.0, 400.0, 0.9, 0.0])
    return det


def _export_postprocessing(repo: Path, frames: torch.Tensor) -> None:
    det = _check_detections(frames.shape[0])
    names = [FRAME.name, DETECTIONS.name]
    _checked_export(
        "postprocessing", CropBestBox(), (frames, det), _model_path(repo, "postprocessing"), names, [CROP.name]
    )


def _export_u8_steps(repo: Path, frames: torch.Tensor) -> None:
    """ensemble_jpeg's letterbox and crop on bytes, each also checked against its FP32 twin on the same pixels."""
    u8 = frames.round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    same_pixels = u8.permute(0, 3, 1, 2).to(torch.float32)
    det = _check_detections(frames.shape[0])
    path = _model_path(repo, "preprocessing_u8")
    _, got = _checked_export("preprocessing_u8", LetterboxFrameU8(), (u8,), path, [FRAME_U8.name], [LETTERBOXED.name])
    with torch.no_grad():
        twin = [LetterboxFrame()(same_pixels).numpy()]
    onnx_export.check("preprocessing_u8 vs preprocessing", got, twin, TOLERANCE["preprocessing_u8"])
    path = _model_path(repo, "postprocessing_u8")
    names = [FRAME_U8.name, DETECTIONS.name]
    _, got = _checked_export("postprocessing_u8", CropBestBoxU8(), (u8, det), path, names, [CROP.name])
    with torch.no_grad():
        twin = [CropBestBox()(same_pixels, det).numpy()]
    diff = onnx_export.check("postprocessing_u8 vs postprocessing", got, twin, TOLERANCE["postprocessing_u8"])
    log.info("  postprocessing_u8: max abs diff vs the FP32 crop %.2e", diff)


def stand_in_oil_input_px(metrics: Path = STAND_IN_METRICS) -> int:
    """The side the trained stand-in regressor reads, as `make train` recorded it (384 where it says nothing)."""
    try:
        recipe = json.loads(metrics.read_text()).get("oil_recipe", {})
    except (OSError, ValueError) as e:
        raise BuildError(f"cannot read the stand-in's training record {metrics}: {e}") from e
    return int(recipe.get("input_px", CROP.dims[-1]))


def _effnet_input_px(cfg: VisionConfig, weights: Path | None) -> int:
    if cfg.effnet_input_px is not None:
        return cfg.effnet_input_px
    return stand_in_oil_input_px() if weights == STAND_IN_OIL else CROP.dims[-1]


def _export_effnet(cfg: VisionConfig, repo: Path) -> None:
    weights = cfg.weights(cfg.effnet_weights, STAND_IN_OIL)
    input_px = _effnet_input_px(cfg, weights)
    module, source = build_oil_regressor(weights, seed=cfg.seed, input_px=input_px)
    if weights is None:
        progress.warn_random_weights("efficientnet_v2", source)
    elif weights == STAND_IN_OIL:
        source = f"{source}, {STAND_IN_NOTE}"
    if input_px != CROP.dims[-1]:
        source = f"{source}; reads the crop at {input_px} px (average-pooled inside the graph)"
    log.info("  efficientnet_v2: %s", source)
    crops = torch.rand(2, *CROP.dims, generator=torch.Generator().manual_seed(cfg.seed))
    path = _model_path(repo, "efficientnet_v2")
    _checked_export("efficientnet_v2", module, (crops,), path, [CROP.name], [OIL_PCT.name])


def build(cfg: VisionConfig, out_dir: Path) -> list[str]:
    """Build the vision models into `out_dir` (a Triton model repository); returns their names."""
    all_specs = specs(cfg)
    repository.check_ensembles(all_specs)
    target = cfg.target
    names = [s.name for s in all_specs]
    steps = progress.Progress(f"vision pipeline, {cfg.device} target -> {out_dir}", 7)
    with repository.staged(out_dir, names) as repo:
        frames = _sample_frames(cfg.seed)
        with steps.step("export preprocessing (letterbox 3840x2160 -> 640x640)"):
            letterboxed = _export_preprocessing(repo, frames)
        with steps.step("export yolov8 + NMS"):
            _export_yolo(cfg, repo, letterboxed)
        with steps.step("export postprocessing (crop best box -> 384x384)"):
            _export_postprocessing(repo, frames)
        with steps.step("export efficientnet_v2 (oil level regression)"):
            _export_effnet(cfg, repo)
        with steps.step("export preprocessing_u8 and postprocessing_u8 (ensemble_jpeg's byte frames)"):
            _export_u8_steps(repo, frames)
        with steps.step("write configs and Python-backend sources"):
            served_by = [(s.name, repository.add_model(repo, s, target)) for s in all_specs]
        with steps.step("parse configs back"):
            for name in names:
                repository.check_config(repo, name)
    progress.summary(out_dir, served_by)
    return names
