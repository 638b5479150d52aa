"""The oil-level regressor: crops made by the served crop function from detected boxes, then EfficientNetV2-S.

Crops come from `CropBestBoxU8`, the module the builder exports as `postprocessing_u8` (checked there against
the FP32 `postprocessing`), fed with rows of detections as the served pipeline makes them: the trained YOLO's
raw head, letterboxed by `LetterboxFrameU8`, through `reference_nms`. Each detection that matches a labelled
oiler (IoU >= 0.5) gives one crop labelled with that oiler's level; jittered copies of the labelled boxes add
more. Training uses EfficientNetV2's own progressive resizing (small crops first, the served 384 last).
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
    """Progressive resizing in (crop side, steps) stages; the last one trains at the served 384.

    Steps, not epochs: one full step at 384 costs about 9 at 128 on this CPU, so the budget is set per stage. At
    the served side the first `frozen_at_served` feature stages (the high-resolution ones, where most of the
    backward cost lies) run without gradients, which buys several times more steps at the size that is served."""

    stages: tuple[tuple[int, int], ...] = ((128, 400), (256, 60), (384, 50))  # (crop side, optimizer steps)
    frozen_at_served: int = 4  # of the 8 feature stages; they keep what the smaller sides taught them
    recalibrate: int = 256  # crops whose 384 px statistics replace BatchNorm's running ones at the end (FixRes)
    batch: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.05
    jitter_copies: int = 1  # jittered labelled boxes per oiler, beside the detected box
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
            w, h = o.box[2] - o.box[0], o.box[3] - o.box[1]
            for _ in range(recipe.jitter_copies):
                dx1, dy1, dx2, dy2 = rng.normal(0, 0.04, 4) * [w, h, w, h]
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


def _resize(x: torch.Tensor, side: int) -> torch.Tensor:
    return x if side == x.shape[-1] else F.interpolate(x, size=(side, side), mode="bilinear", antialias=True)


def _at_side(crops: np.ndarray, side: int) -> np.ndarray:
    """All crops resized to `side` once per stage (uint8), not once per step."""
    if side == crops.shape[-1]:
        return crops
    out = np.empty((len(crops), 3, side, side), np.uint8)
    for i in range(0, len(crops), 64):
        x = torch.from_numpy(crops[i : i + 64]).float()
        out[i : i + 64] = _resize(x, side).round().clamp(0, 255).to(torch.uint8).numpy()
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


def _logits(model: OilLevelRegressor, x: torch.Tensor, frozen: int) -> torch.Tensor:
    """The regression logit; the first `frozen` feature stages run in training mode but without gradients."""
    x = (x - model.mean) / model.std
    if frozen:
        with torch.no_grad():
            x = model.features[:frozen](x)
    x = model.features[frozen:](x)
    return model.classifier(torch.flatten(model.avgpool(x), 1))[:, 0]


def train(crops: np.ndarray, levels: np.ndarray, recipe: OilRecipe) -> OilLevelRegressor:
    """AdamW with one cosine schedule over all stages; returns the model in eval mode."""
    torch.manual_seed(recipe.seed)
    gen = torch.Generator().manual_seed(recipe.seed)
    model = OilLevelRegressor().train()
    # No stochastic depth or dropout: regularisers for long ImageNet schedules that slow a short one down.
    # They only act in training mode, so the exported (eval) graph is the same either way.
    for m in model.modules():
        if isinstance(m, StochasticDepth | torch.nn.Dropout):
            m.p = 0.0
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    total = sum(n for _, n in recipe.stages)
    sched = _schedule(opt, total)
    target_all = torch.from_numpy(levels)
    step, start, order = 0, time.perf_counter(), torch.zeros(0, dtype=torch.long)
    for side, steps in recipe.stages:
        staged = _at_side(crops, side)
        frozen = recipe.frozen_at_served if side == CROP_SIZE else 0
        # NHWC convolutions are faster on this CPU from 256 px up, slower below.
        layout = torch.channels_last if side >= 256 else torch.contiguous_format
        model = model.to(memory_format=layout)
        losses = []
        for _ in range(steps):
            if len(order) < recipe.batch:  # a new shuffled pass over the crops
                order = torch.randperm(len(crops), generator=gen)
            idx, order = order[: recipe.batch], order[recipe.batch :]
            x = _augment(torch.from_numpy(staged[idx.numpy()]).float() / 255, gen).contiguous(memory_format=layout)
            # Cross-entropy on the logit under the served sigmoid: its gradient (p - level) never vanishes, where
            # an L1/L2 loss on sigmoid*100 stalls once the sigmoid saturates (what a from-scratch start does).
            logits = _logits(model, x, frozen)
            loss = F.binary_cross_entropy_with_logits(logits, target_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            losses.append(100 * (torch.sigmoid(logits) - target_all[idx]).abs().mean().item())
            if step % 20 == 0 or step == total:
                log.info(
                    "  oil regressor: %dpx, step %d/%d, training error %.1f points (%.0fs)",
                    side,
                    step,
                    total,
                    float(np.mean(losses[-20:])),
                    time.perf_counter() - start,
                )
    model = model.to(memory_format=torch.contiguous_format)
    _recalibrate_batchnorm(model, crops[: recipe.recalibrate], recipe.batch)
    return model.eval()


@torch.no_grad()
def _recalibrate_batchnorm(model: OilLevelRegressor, crops: np.ndarray, batch: int) -> None:
    """BatchNorm's running statistics measured afresh at the served 384 px: most steps ran on smaller crops,
    whose activation statistics differ (Touvron et al., FixRes). Forward passes only; no weight changes."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over every batch below
    model.train()
    for i in range(0, len(crops), batch):
        model(torch.from_numpy(crops[i : i + batch]).float() / 255)
    for bn in norms:
        bn.momentum = 0.1


@torch.no_grad()
def predict(model: OilLevelRegressor, crops: np.ndarray, batch: int = 16) -> np.ndarray:
    """Oil % of uint8 crops at the served 384."""
    out = [model(torch.from_numpy(crops[i : i + batch]).float() / 255)[:, 0] for i in range(0, len(crops), batch)]
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def save_fp16(model: OilLevelRegressor, path: Path) -> None:
    """A torchvision-named state_dict in FP16 (half the size; the build loads it back into FP32)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}, path)
