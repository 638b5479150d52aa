"""The oil-level regressor: crops made by the served crop function from detected boxes, then EfficientNetV2-S.

Crops come from `CropBestBoxU8`, the module the builder exports as `postprocessing_u8` (checked there against
the FP32 `postprocessing`), fed with rows of detections as the served pipeline makes them: the trained YOLO's
raw head, letterboxed by `LetterboxFrameU8`, through `reference_nms`. Each detection that matches a labelled
oiler (IoU >= 0.5) gives one crop labelled with that oiler's level; the labelled boxes and jittered copies of
them add more. The network reads the crops average-pooled to `OilRecipe.input_px`, in training as in the graph.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from builders.nets.efficientnet_v2 import OilLevelRegressor, StochasticDepth
from builders.nets.frame_ops import CropBestBoxU8, LetterboxFrameU8
from builders.nets.yolo import build_yolov8, reference_nms
from training.dataset import Frame, read_manifest
from training.scenes import iou
from tritonyard_contract import CROP_SIZE, DET_LETTERBOX, MAX_DETECTIONS

log = logging.getLogger("tritonyard.train")
MATCH_IOU = 0.5


@dataclass(frozen=True)
class OilRecipe:
    """The regressor reads the 384 px crop average-pooled to `input_px` (inside the exported graph), so every step
    trains at the side that is served. On this CPU a step at 384 costs about nine at 128: at 384 px, the time
    budget bought a regressor that had not converged (6.2 points, see docs/stand-ins.md); at 128 px it converges."""

    input_px: int = 128  # a divisor of the 384 px crop
    steps: int = 400
    batch: int = 16
    lr: float = 4e-3
    weight_decay: float = 0.05
    jitter_copies: int = 4  # jittered copies of each labelled box, beside the labelled box and the detected one
    jitter_sigma: float = 0.07  # of the box's width/height, per edge
    seed: int = 0


class Detector:
    """The served detection path in torch: letterbox, YOLO raw head, NMS; boxes in letterbox pixels."""

    def __init__(self, weights: Path) -> None:
        self.model, _, _ = build_yolov8(weights)
        self.letterbox = LetterboxFrameU8()

    @torch.no_grad()
    def __call__(self, frame_u8: torch.Tensor) -> np.ndarray:
        """[B,2160,3840,3] uint8 -> [B,300,6] detections as the served yolov8 returns them."""
        return reference_nms(self.model(self.letterbox(frame_u8)).numpy())


def to_letterbox(box: tuple[float, ...]) -> list[float]:
    """A frame-pixel box in letterbox (640x640) pixels, the coordinates detections carry."""
    lb = DET_LETTERBOX
    return [
        box[0] * lb.scale + lb.pad_x,
        box[1] * lb.scale + lb.pad_y,
        box[2] * lb.scale + lb.pad_x,
        box[3] * lb.scale + lb.pad_y,
    ]


def to_frame(row: np.ndarray) -> tuple[float, float, float, float]:
    x1, y1 = DET_LETTERBOX.to_source(row[0], row[1])
    x2, y2 = DET_LETTERBOX.to_source(row[2], row[3])
    return float(x1), float(y1), float(x2), float(y2)


def load_frame(root: Path, frame: Frame) -> torch.Tensor:
    """[1,2160,3840,3] uint8 as decoded (the frames are already 3840x2160)."""
    with Image.open(root / frame.file) as img:
        return torch.from_numpy(np.asarray(img.convert("RGB")).copy())[None]


def crop_rows(frame_u8: torch.Tensor, rows: list[list[float]]) -> np.ndarray:
    """One 384x384 uint8 crop per detection row (x1,y1,x2,y2 in letterbox px), by the served crop module."""
    cropper = CropBestBoxU8()
    out = []
    with torch.no_grad():
        for row in rows:
            det = torch.zeros(1, MAX_DETECTIONS, 6)
            det[0, 0] = torch.tensor([*row[:4], 1.0, 0.0])
            crop = cropper(frame_u8, det)[0]
            out.append((crop * 255).round().clamp(0, 255).to(torch.uint8).numpy())
    return np.stack(out) if out else np.zeros((0, 3, CROP_SIZE, CROP_SIZE), np.uint8)


def make_crops(
    root: Path, split: str, detector: Detector, recipe: OilRecipe, *, augment: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(crops [N,3,384,384] uint8, levels [N] in 0..1) of one split."""
    rng = np.random.default_rng([recipe.seed, len(split)])
    crops, levels = [], []
    for frame in read_manifest(root, split):
        if not frame.oilers:
            continue
        pixels = load_frame(root, frame)
        det = detector(pixels)[0]
        rows, lv = [], []
        for d in det[det[:, 4] > 0]:
            ious = [iou(to_frame(d), o.box) for o in frame.oilers]
            best = int(np.argmax(ious))
            if ious[best] >= MATCH_IOU:
                rows.append(list(d[:4]))
                lv.append(frame.oilers[best].level)
        for o in frame.oilers if augment else ():
            rows.append(to_letterbox(o.box))
            lv.append(o.level)
            w, h = o.box[2] - o.box[0], o.box[3] - o.box[1]
            for _ in range(recipe.jitter_copies):
                dx1, dy1, dx2, dy2 = rng.normal(0, recipe.jitter_sigma, 4) * [w, h, w, h]
                rows.append(to_letterbox((o.box[0] + dx1, o.box[1] + dy1, o.box[2] + dx2, o.box[3] + dy2)))
                lv.append(o.level)
        crops.append(crop_rows(pixels, rows))
        levels.extend(lv)
    return np.concatenate(crops), np.asarray(levels, np.float32)


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Horizontal flips and brightness/contrast jitter: the level is the same after either."""
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    gain = 1 + (torch.rand(x.shape[0], 1, 1, 1, generator=gen) - 0.5) * 0.4
    bias = (torch.rand(x.shape[0], 1, 1, 1, generator=gen) - 0.5) * 0.2
    return (x * gain + bias).clamp(0, 1)


def pooled(crops: np.ndarray, side: int) -> np.ndarray:
    """384 px uint8 crops average-pooled to `side`, as OilLevelRegressor pools them in the served graph."""
    if side == crops.shape[-1]:
        return crops
    out = np.empty((len(crops), 3, side, side), np.uint8)
    for i in range(0, len(crops), 64):
        x = F.avg_pool2d(torch.from_numpy(crops[i : i + 64]).float(), crops.shape[-1] // side)
        out[i : i + 64] = x.round().clamp(0, 255).to(torch.uint8).numpy()
    return out


def _schedule(opt: torch.optim.Optimizer, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then one cosine over every stage's steps."""
    warmup = min(30, total // 10)
    return torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup)))
        ),
    )


def _logits(model: OilLevelRegressor, x: torch.Tensor) -> torch.Tensor:
    """The regression logit of crops already at the model's input side."""
    x = model.features((x - model.mean) / model.std)
    return model.classifier(torch.flatten(model.avgpool(x), 1))[:, 0]


def train(crops: np.ndarray, levels: np.ndarray, recipe: OilRecipe) -> OilLevelRegressor:
    """AdamW with a warm-up and a cosine schedule, on the crops pooled once; returns the model in eval mode."""
    torch.manual_seed(recipe.seed)
    gen = torch.Generator().manual_seed(recipe.seed)
    model = OilLevelRegressor(recipe.input_px).train()
    # No stochastic depth or dropout: regularisers for long ImageNet schedules that slow a short one down.
    # They only act in training mode, so the exported (eval) graph is the same either way.
    for m in model.modules():
        if isinstance(m, StochasticDepth | torch.nn.Dropout):
            m.p = 0.0
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = _schedule(opt, recipe.steps)
    staged, target_all = pooled(crops, recipe.input_px), torch.from_numpy(levels)
    start, order, losses = time.perf_counter(), torch.zeros(0, dtype=torch.long), []
    for step in range(1, recipe.steps + 1):
        if len(order) < recipe.batch:  # a new shuffled pass over the crops
            order = torch.randperm(len(crops), generator=gen)
        idx, order = order[: recipe.batch], order[recipe.batch :]
        x = _augment(torch.from_numpy(staged[idx.numpy()]).float() / 255, gen)
        # Cross-entropy on the logit under the served sigmoid: its gradient (p - level) never vanishes, where
        # an L1/L2 loss on sigmoid*100 stalls once the sigmoid saturates (what a from-scratch start does).
        logits = _logits(model, x)
        loss = F.binary_cross_entropy_with_logits(logits, target_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(100 * (torch.sigmoid(logits) - target_all[idx]).abs().mean().item())
        if step % 20 == 0 or step == recipe.steps:
            log.info(
                "  oil regressor: %dpx, step %d/%d, training error %.1f points (%.0fs)",
                recipe.input_px,
                step,
                recipe.steps,
                float(np.mean(losses[-20:])),
                time.perf_counter() - start,
            )
    return model.eval()


@torch.no_grad()
def predict(model: OilLevelRegressor, crops: np.ndarray, batch: int = 16) -> np.ndarray:
    """Oil % of uint8 crops at the served 384 (the model pools them to its input side)."""
    out = [model(torch.from_numpy(crops[i : i + batch]).float() / 255)[:, 0] for i in range(0, len(crops), batch)]
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def save_fp16(model: OilLevelRegressor, path: Path) -> None:
    """A torchvision-named state_dict in FP16 (half the size; the build loads it back into FP32)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}, path)
