"""The CLO pipeline's public contract: tensor names, dtypes, shapes and frame geometry.

CLO deployments already call these names, so they are declared once here and every
builder, client and test reads them from this module. Dims exclude the batch dimension.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as Triton sees it."""

    name: str
    dtype: str  # a Triton DataType name, e.g. "TYPE_FP32"
    dims: tuple[int, ...]


FRAME_H, FRAME_W = 2160, 3840
DET_SIZE = 640
CROP_SIZE = 384
MAX_DETECTIONS = 300
# Letterbox fill, the gray ultralytics uses, so real YOLOv8 weights see what they were trained on.
PAD_VALUE = 114.0

FRAME = TensorSpec("original_image_3840_2160", "TYPE_FP32", (3, FRAME_H, FRAME_W))
LETTERBOXED = TensorSpec("preprocessed_640_640_image", "TYPE_FP32", (3, DET_SIZE, DET_SIZE))
DETECTIONS = TensorSpec("yolo_detections", "TYPE_FP32", (MAX_DETECTIONS, 6))
CROP = TensorSpec("processed_image_384_384", "TYPE_FP32", (3, CROP_SIZE, CROP_SIZE))
OIL_PCT = TensorSpec("estimated_oil_pct", "TYPE_FP32", (1,))
IMAGE_BYTES = TensorSpec("image_bytes", "TYPE_STRING", (1,))

PIPELINE_OUTPUTS = (DETECTIONS, CROP, OIL_PCT)


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
        """Largest uniform scale that fits width x height into box_w x box_h, padding centred."""
        scale = min(box_w / width, box_h / height)
        new_w, new_h = round(width * scale), round(height * scale)
        return cls(scale, (box_w - new_w) // 2, (box_h - new_h) // 2, new_w, new_h)

    def to_source(self, x: float, y: float) -> tuple[float, float]:
        """Map a point in the letterboxed box back to source-image pixels."""
        return (x - self.pad_x) / self.scale, (y - self.pad_y) / self.scale


# 3840x2160 -> 640x360, padded by 140 rows top and bottom: an exact 6x integer reduction.
DET_LETTERBOX = Letterbox.fit(FRAME_W, FRAME_H, DET_SIZE, DET_SIZE)
