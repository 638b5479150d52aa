"""Preprocessing and postprocessing as torch modules, exported to ONNX like the networks.

Both are pure tensor ops, so they batch on the server and run on the GPU in the gpu target.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tritonyard_contract import CROP_SIZE, DET_LETTERBOX, DET_SIZE, FRAME_H, FRAME_W, PAD_VALUE


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

    def best_box(self, detections: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(x1, y1, x2, y2) in frame pixels of each image's best detection, or the centred square."""
        batch = detections.shape[0]
        best = torch.argmax(detections[:, :, 4], dim=1)
        det = torch.gather(detections, 1, best.view(batch, 1, 1).expand(batch, 1, 6)).squeeze(1)
        box = (det[:, :4] - self.offset) / self.scale
        box = torch.where(det[:, 4:5] > 0, box, self.default_box.expand(batch, 4))
        x1 = box[:, 0].clamp(0, FRAME_W - 1)
        y1 = box[:, 1].clamp(0, FRAME_H - 1)
        x2 = torch.maximum(box[:, 2].clamp(0, FRAME_W), x1 + 1)  # never a zero-width crop
        y2 = torch.maximum(box[:, 3].clamp(0, FRAME_H), y1 + 1)
        return x1, y1, x2, y2

    def forward(self, frame: torch.Tensor, detections: torch.Tensor) -> torch.Tensor:
        batch = frame.shape[0]
        x1, y1, x2, y2 = self.best_box(detections)
        xs = x1[:, None] + self.steps[None, :] * (x2 - x1)[:, None]
        ys = y1[:, None] + self.steps[None, :] * (y2 - y1)[:, None]
        # grid_sample with align_corners=False: -1 and +1 are the outer edges of the frame.
        gx = (xs * 2 / FRAME_W - 1)[:, None, :].expand(batch, CROP_SIZE, CROP_SIZE)
        gy = (ys * 2 / FRAME_H - 1)[:, :, None].expand(batch, CROP_SIZE, CROP_SIZE)
        crop = F.grid_sample(
            frame, torch.stack([gx, gy], dim=-1), mode="bilinear", padding_mode="border", align_corners=False
        )
        return crop / 255.0


class LetterboxFrameU8(LetterboxFrame):
    """UINT8 [B,2160,3840,3] as decoded (HWC) -> the same [B,3,640,640] as LetterboxFrame.

    `ensemble_jpeg` carries the decoded frame as bytes: a quarter of the FP32 frame, and no
    transpose. The 6x6 block mean is the same area average LetterboxFrame's avg_pool2d takes.
    """

    def forward(self, frame: torch.Tensor) -> torch.Tensor:
        f = self.factor
        blocks = frame.to(torch.float32).reshape(-1, FRAME_H // f, f, FRAME_W // f, f, 3)
        small = blocks.mean(dim=(2, 4)).permute(0, 3, 1, 2) / 255.0
        return F.pad(small, self.padding, value=PAD_VALUE / 255.0)


class CropBestBoxU8(CropBestBox):
    """CropBestBox on the UINT8 HWC frame: gathers only the 4 x 384 x 384 source pixels it needs.

    Bilinear sampling is written out (grid_sample, align_corners=False, border padding) so the
    whole 99.5 MB float frame is never built; the export is checked against CropBestBox.
    """

    def forward(self, frame: torch.Tensor, detections: torch.Tensor) -> torch.Tensor:
        batch = frame.shape[0]
        x1, y1, x2, y2 = self.best_box(detections)
        # Pixel-centre coordinates of each output sample, clamped to the border like grid_sample.
        px = (x1[:, None] + self.steps[None, :] * (x2 - x1)[:, None] - 0.5).clamp(0, FRAME_W - 1)
        py = (y1[:, None] + self.steps[None, :] * (y2 - y1)[:, None] - 0.5).clamp(0, FRAME_H - 1)
        x0, y0 = px.floor(), py.floor()
        wx, wy = (px - x0)[:, None, None, :], (py - y0)[:, None, :, None]
        xa, xb = x0.long(), (x0 + 1).clamp(max=FRAME_W - 1).long()
        ya, yb = y0.long(), (y0 + 1).clamp(max=FRAME_H - 1).long()
        rows = torch.arange(batch)[:, None, None]

        def pick(ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
            # [B, 3, 384, 384]: channels first, so the weights below broadcast over whole planes (fast).
            return frame[rows, ys[:, :, None], xs[:, None, :]].permute(0, 3, 1, 2).to(torch.float32)

        corners = ((ya, xa, (1 - wy) * (1 - wx)), (ya, xb, (1 - wy) * wx), (yb, xa, wy * (1 - wx)), (yb, xb, wy * wx))
        crop = sum(pick(ys, xs) * (w / 255.0) for ys, xs, w in corners)
        return crop
