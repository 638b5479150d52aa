"""Server-side image decoding for `ensemble_jpeg`: JPEG/PNG bytes in, the 4K UINT8 HWC frame out.

Clients send about 1 MB of JPEG instead of a 99.5 MB FP32 tensor, and the frame stays bytes
(24.9 MB) between the steps. Each request is decoded on its own, so a corrupt image fails only
its own request.
"""

import json
from dataclasses import dataclass

import numpy as np
import triton_python_backend_utils as pb_utils
from tritonyard_contract.images import ImageError, decode, to_frame_u8
from tritonyard_contract.params import ModelParams, param
from tritonyard_contract.tensors import FRAME_U8, IMAGE_BYTES

INPUT = IMAGE_BYTES.name
OUTPUT = FRAME_U8.name
DEFAULT_MAX_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_PIXELS = 7680 * 4320  # 8K: anything larger is a bomb, not a camera frame


@dataclass(frozen=True)
class Params(ModelParams):
    """Input caps from config.pbtxt `parameters`, read once."""

    max_bytes: int = param(DEFAULT_MAX_BYTES, minimum=1)
    max_pixels: int = param(DEFAULT_MAX_PIXELS, minimum=1)


class TritonPythonModel:
    """Decodes each request's encoded image into the pipeline frame."""

    def initialize(self, args: dict) -> None:
        self.params = Params.from_config(json.loads(args["model_config"]))
        pb_utils.Logger.log_info(f"image_decoder: {self.params}")

    def execute(self, requests: list) -> list:
        return [self._decode_one(r) for r in requests]

    def _decode_one(self, request):
        blobs = pb_utils.get_input_tensor_by_name(request, INPUT).as_numpy().reshape(-1)
        try:
            images = [
                decode(bytes(b), max_bytes=self.params.max_bytes, max_pixels=self.params.max_pixels) for b in blobs
            ]
        except ImageError as exc:
            return pb_utils.InferenceResponse(
                error=pb_utils.TritonError(f"{INPUT}: {exc}", pb_utils.TritonError.INVALID_ARG)
            )
        decoded = [to_frame_u8(img) for img in images]
        frames = decoded[0][np.newaxis] if len(decoded) == 1 else np.stack(decoded)  # no copy for one image
        return pb_utils.InferenceResponse([pb_utils.Tensor(OUTPUT, frames)])

    def finalize(self) -> None:
        pass
