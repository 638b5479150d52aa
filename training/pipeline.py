"""The CLO pipeline in-process, in torch, with the modules the builder exports: the reference for served figures.

letterbox (LetterboxFrameU8) -> YOLOv8 raw head -> NMS (reference_nms, the graph's twin) -> crop of the best box
(CropBestBoxU8) -> oil regressor loaded the way the builder loads it (build_oil_regressor, FP16 file -> FP32).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from builders.nets.efficientnet_v2 import build_oil_regressor
from builders.nets.frame_ops import CropBestBoxU8
from training.dataset import read_manifest
from training.metrics import FrameResult, summarize
from training.oil import Detector, load_frame, to_frame
from training.scenes import FRAME_H, FRAME_W

log = logging.getLogger("tritonyard.train")


def evaluate(root: Path, split: str, yolo_weights: Path, oil_weights: Path, oil_input_px: int) -> dict[str, float]:
    """Score every frame of `split`: mAP of the detections and the error of the oil % of the best box."""
    detector = Detector(yolo_weights)
    regressor, _ = build_oil_regressor(oil_weights, input_px=oil_input_px)
    cropper = CropBestBoxU8()
    results = []
    with torch.no_grad():
        for frame in read_manifest(root, split):
            pixels = load_frame(root, frame)
            det = detector(pixels)
            oil = float(regressor(cropper(pixels, torch.from_numpy(det)))[0, 0])
            kept = det[0][det[0][:, 4] > 0]
            boxes = np.array([[*to_frame(r), r[4], r[5]] for r in kept]).reshape(-1, 6)
            boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, FRAME_W)  # as the client maps them: clipped to the frame
            boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, FRAME_H)
            results.append(FrameResult(frame.oilers, boxes, oil))
    figures = summarize(results)
    log.info(
        "   in-process pipeline, %s split: mAP50 %.3f, mAP50-95 %.3f, oil MAE %.2f points, %.0f%% within 5 (%d frames)",
        split,
        figures["map50"],
        figures["map50_95"],
        figures["oil_mae"],
        100 * figures["oil_within_5"],
        figures["frames_scored_for_oil"],
    )
    return figures
