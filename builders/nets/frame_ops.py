"""Preprocessing and postprocessing as torch modules, exported to ONNX like the networks.

Both are pure tensor ops, so they batch on the server and run on the GPU in the gpu target.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from builders.contract import CROP_SIZE, DET_LETTERBOX, DET_SIZE, FRAME_H, FRAME_W, PAD_VALUE


class LetterboxFrame(nn.Module):
    """FP32 [B,3,2160,3840] in 0..255 -> [B,3,640,640] in 0..1, aspect kept, padded with gray."""

    def __init__(self) -> None:
        super().__init__()
        lb = DET_LETTERBOX
        factor = FRAME_W / lb.new_w
        if factor != int(factor) or FRAME_H / lb.new_h != factor:
            raise ValueError("the frame must shrink to the letterbox by an integer factor")
        self.factor = int(factor)
        right, bottom = DET_SIZE - lb.new_w - lb.pad_x, DET_SIZE - lb.new_h - lb.pad_y
        self.padding = (lb.pad_x, right, lb.pad_y, bottom)

    def forward(self, frame: torch.Tensor) -> torch.Tensor:
        # An exact 6x reduction: average pooling is area resampling, anti-aliased and cheap.
        small = F.avg_pool2d(frame, kernel_size=self.factor, stride=self.factor) / 255.0
        return F.pad(small, self.padding, value=PAD_VALUE / 255.0)


class CropBestBox(nn.Module):
    """Crop the best-scoring detection from the original frame and resize it to 384x384 (0..1).

    Detections are in letterbox (640x640) pixels and are mapped back to the frame first. When no
    box scored above zero (what random weights give), the centred 2160x2160 square is cropped.
    """

    def __init__(self) -> None:
        super().__init__()
        lb = DET_LETTERBOX
        self.scale = lb.scale
        self.register_buffer("offset", torch.tensor([lb.pad_x, lb.pad_y] * 2, dtype=torch.float32), persistent=False)
        side = float(min(FRAME_W, FRAME_H))
        self.register_buffer(
            "default_box",
            torch.tensor([(FRAME_W - side) / 2, (FRAME_H - side) / 2, (FRAME_W + side) / 2, (FRAME_H + side) / 2]),
            persistent=False,
        )
        # Output pixel centres as fractions of the box, shared by x and y.
        self.register_buffer(
            "steps", (torch.arange(CROP_SIZE, dtype=torch.float32) + 0.5) / CROP_SIZE, persistent=False
        )

    def forward(self, frame: torch.Tensor, detections: torch.Tensor) -> torch.Tensor:
        batch = frame.shape[0]
        best = torch.argmax(detections[:, :, 4], dim=1)
        det = torch.gather(detections, 1, best.view(batch, 1, 1).expand(batch, 1, 6)).squeeze(1)
        box = (det[:, :4] - self.offset) / self.scale
        box = torch.where(det[:, 4:5] > 0, box, self.default_box.expand(batch, 4))
        x1 = box[:, 0].clamp(0, FRAME_W - 1)
        y1 = box[:, 1].clamp(0, FRAME_H - 1)
        x2 = torch.maximum(box[:, 2].clamp(0, FRAME_W), x1 + 1)  # never a zero-width crop
        y2 = torch.maximum(box[:, 3].clamp(0, FRAME_H), y1 + 1)
        xs = x1[:, None] + self.steps[None, :] * (x2 - x1)[:, None]
        ys = y1[:, None] + self.steps[None, :] * (y2 - y1)[:, None]
        # grid_sample with align_corners=False: -1 and +1 are the outer edges of the frame.
        gx = (xs * 2 / FRAME_W - 1)[:, None, :].expand(batch, CROP_SIZE, CROP_SIZE)
        gy = (ys * 2 / FRAME_H - 1)[:, :, None].expand(batch, CROP_SIZE, CROP_SIZE)
        crop = F.grid_sample(
            frame, torch.stack([gx, gy], dim=-1), mode="bilinear", padding_mode="border", align_corners=False
        )
        return crop / 255.0
