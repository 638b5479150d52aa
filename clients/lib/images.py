"""Client-side image decoding for the vision pipeline: bytes -> RGB image -> the 4K frame.

Decoding and the UINT8 frame are the contract's (`tritonyard_contract.images`), the same code the
server's image_decoder runs, so a frame made here for `ensemble` is bit-identical to the one
`ensemble_jpeg` decodes from the same bytes. The server passes its size caps; this side passes none and
only refuses what it cannot turn into a frame, with the server's wording.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from tritonyard_contract.images import ImageError, decode, to_frame_u8

__all__ = ["ImageError", "decode", "to_frame", "to_frame_u8"]


def to_frame(img: Image.Image) -> np.ndarray:
    """Letterbox an RGB image into the FP32 [3, 2160, 3840] frame with pixel values 0..255 (`ensemble`'s input)."""
    # uint8 HWC -> CHW view -> one float32 copy in C order (a 4K frame is 99.5 MB: copy it once).
    return to_frame_u8(img).transpose(2, 0, 1).astype(np.float32, order="C")
