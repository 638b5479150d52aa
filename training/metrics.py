"""Held-out figures of the whole pipeline: detection mAP (ultralytics' AP code) and oil-level error.

The same functions score the in-process pipeline after training and the served one in the tests, so the two
sets of figures are comparable: per frame, the detections in source pixels and the served oil %, against the
scene's labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.scenes import Oiler, iou

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
WITHIN = 5.0  # points of oil level


@dataclass(frozen=True)
class FrameResult:
    """What the pipeline said about one labelled frame."""

    oilers: list[Oiler]
    boxes: np.ndarray  # [N, 6] x1, y1, x2, y2, score, class in frame pixels
    oil_pct: float


def _true_positives(boxes: np.ndarray, oilers: list[Oiler]) -> np.ndarray:
    """[N, 10] bool: prediction i matches an unmatched label at each IoU threshold (highest scores first)."""
    tp = np.zeros((len(boxes), len(IOU_THRESHOLDS)), bool)
    if not len(boxes) or not oilers:
        return tp
    ious = np.array([[iou(tuple(b[:4]), o.box) for o in oilers] for b in boxes])
    for t, thr in enumerate(IOU_THRESHOLDS):
        used = np.zeros(len(oilers), bool)
        for i in np.argsort(-boxes[:, 4], kind="stable"):
            cand = np.where(~used & (ious[i] >= thr))[0]
            if cand.size:
                j = cand[np.argmax(ious[i, cand])]
                used[j], tp[i, t] = True, True
    return tp


def detection_map(results: list[FrameResult]) -> dict[str, float]:
    """mAP50 and mAP50-95 over the frames, by ultralytics' `ap_per_class` (one class: oiler)."""
    from ultralytics.utils.metrics import ap_per_class

    tps, confs = [], []
    for r in results:
        tps.append(_true_positives(r.boxes, r.oilers))
        confs.append(r.boxes[:, 4] if len(r.boxes) else np.zeros(0))
    tp, conf = np.concatenate(tps), np.concatenate(confs)
    n_labels = sum(len(r.oilers) for r in results)
    if n_labels == 0:
        return {"map50": float("nan"), "map50_95": float("nan")}
    ap = ap_per_class(tp, conf, np.zeros(len(conf)), np.zeros(n_labels))[5]  # [nc, 10]
    return {"map50": float(ap[:, 0].mean()), "map50_95": float(ap.mean())}


def oil_errors(results: list[FrameResult]) -> np.ndarray:
    """|served % - true %| per frame whose best box overlaps a labelled oiler (IoU >= 0.5)."""
    errors = []
    for r in results:
        if not len(r.boxes) or not r.oilers:
            continue
        best = r.boxes[int(np.argmax(r.boxes[:, 4]))]
        ious = [iou(tuple(best[:4]), o.box) for o in r.oilers]
        j = int(np.argmax(ious))
        if ious[j] >= 0.5:
            errors.append(abs(r.oil_pct - 100 * r.oilers[j].level))
    return np.asarray(errors, np.float64)


def summarize(results: list[FrameResult]) -> dict[str, float]:
    """The figures the README and the tests quote."""
    errors = oil_errors(results)
    with_oilers = sum(1 for r in results if r.oilers)
    return {
        **detection_map(results),
        "oil_mae": float(errors.mean()) if errors.size else float("nan"),
        "oil_within_5": float((errors <= WITHIN).mean()) if errors.size else float("nan"),
        "frames": len(results),
        "frames_with_oilers": with_oilers,
        "frames_scored_for_oil": int(errors.size),
    }
