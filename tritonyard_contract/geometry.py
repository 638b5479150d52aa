"""Frame geometry: the letterbox rule, written once for the builders, the image decoder and the clients.

A source image (W x H) is letterboxed twice before YOLO sees it: into the 3840x2160 frame (the image
decoder server-side, or the client for `ensemble`), then the frame into 640x640 (the `preprocessing`
ONNX step). `to_source_boxes` inverts both for the client.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FRAME_H, FRAME_W = 2160, 3840
DET_SIZE = 640
CROP_SIZE = 384
MAX_DETECTIONS = 300
# Letterbox fill, the gray ultralytics uses, so real YOLOv8 weights see what they were trained on.
PAD_VALUE = 114.0
SCORE_COLUMN = 4  # detection rows: x1, y1, x2, y2, score, class


@dataclass(frozen=True)
class Letterbox:
    """Uniform scale plus centred padding that fits a (width, height) image into a box."""

    scale: float
    pad_x: int
    pad_y: int
    new_w: int
    new_h: int

    @classmethod
    def fit(cls, width: int, height: int, box_w: int, box_h: int) -> Letterbox:
        """Largest uniform scale that fits width x height into box_w x box_h, padding centred.

        Each side is resized to round(side * scale), and to at least 1 pixel: a 1x10000 strip still
        shows up as one column rather than vanishing.
        """
        scale = min(box_w / width, box_h / height)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        return cls(scale, (box_w - new_w) // 2, (box_h - new_h) // 2, new_w, new_h)

    def to_source(self, x: float, y: float) -> tuple[float, float]:
        """Map a point in the letterboxed box back to source-image pixels (works on arrays too)."""
        return (x - self.pad_x) / self.scale, (y - self.pad_y) / self.scale


# 3840x2160 -> 640x360, padded by 140 rows top and bottom: an exact 6x integer reduction.
DET_LETTERBOX = Letterbox.fit(FRAME_W, FRAME_H, DET_SIZE, DET_SIZE)


def frame_letterbox(width: int, height: int) -> Letterbox:
    """Where a width x height image goes in the 3840x2160 frame."""
    return Letterbox.fit(width, height, FRAME_W, FRAME_H)


def place_in_frame(resized: np.ndarray, box: Letterbox) -> np.ndarray:
    """The UINT8 [2160, 3840, 3] frame: `resized` (HWC, box.new_h x box.new_w) pasted at the box's padding, gray
    around it. The caller resizes (Pillow, bilinear), so this module needs no imaging library."""
    if resized.shape != (box.new_h, box.new_w, 3):
        raise ValueError(f"resized image is {resized.shape}, the letterbox needs ({box.new_h}, {box.new_w}, 3)")
    frame = np.full((FRAME_H, FRAME_W, 3), int(PAD_VALUE), np.uint8)
    frame[box.pad_y : box.pad_y + box.new_h, box.pad_x : box.pad_x + box.new_w] = resized
    return frame


def to_source_boxes(detections: np.ndarray, width: int, height: int) -> np.ndarray:
    """Map served detections [N, 6] from letterbox pixels (640x640) to the source image (width x height).

    Rows with score 0 are padding and dropped; the result is float64 [M, 6], clipped to the image.
    """
    kept = detections[detections[:, SCORE_COLUMN] > 0].astype(np.float64)
    box = frame_letterbox(width, height)
    # The image was resized to new_w x new_h: each axis has its own exact scale (they differ where a side rounded).
    scale_x, scale_y = box.new_w / width, box.new_h / height
    for cx, cy in ((0, 1), (2, 3)):
        x, y = DET_LETTERBOX.to_source(kept[:, cx], kept[:, cy])  # -> 3840x2160 frame pixels
        kept[:, cx] = np.clip((x - box.pad_x) / scale_x, 0, width)
        kept[:, cy] = np.clip((y - box.pad_y) / scale_y, 0, height)
    return kept
