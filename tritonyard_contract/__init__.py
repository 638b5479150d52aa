"""tritonyard's contract: what the builders, the served models, the clients and the serving tools share.

- `tensors`: tensor specs (names, Triton and numpy dtypes, dims), output checks, the KV-cache names;
- `geometry`: the letterbox rule (frame and detector) and its inverse for clients, `to_source_boxes`;
- `protocol`: capacity-refusal words and the admin key's header and variable names;
- `params`: typed config.pbtxt `parameters` for model.py files (`ModelParams`, `param`);
- `onnx_session`: the one onnxruntime session factory (onnxruntime imported only when called);
- `images`: which encoded images the pipeline accepts (`decode`, `ImageError`) and the UINT8 4K frame
  (`to_frame_u8`), for the image_decoder model and the clients; it needs Pillow, so import it by name.

Standard library and numpy only (Pillow in `images`, which this file does not import). The builder
copies this package into every Python-backend model's version folder (a model imports nothing else of
ours), and the KServe image ships it beside the probes.
"""

from tritonyard_contract.geometry import (
    CROP_SIZE,
    DET_LETTERBOX,
    DET_SIZE,
    FRAME_H,
    FRAME_W,
    MAX_DETECTIONS,
    PAD_VALUE,
    SCORE_COLUMN,
    Letterbox,
    frame_letterbox,
    place_in_frame,
    to_source_boxes,
)
from tritonyard_contract.tensors import (
    ATTENTION_MASK,
    COMPLETION_TOKENS,
    CROP,
    DETECTIONS,
    EOS_TOKEN,
    FINISH_REASON,
    FRAME,
    FRAME_U8,
    GENERATE_INPUTS,
    GENERATE_OUTPUTS,
    IMAGE_BYTES,
    INPUT_IDS,
    LETTERBOXED,
    LOGITS,
    MAX_TOKENS,
    OIL_PCT,
    OPTIONAL_GENERATE_INPUTS,
    OUTPUT_RANGES,
    PIPELINE_OUTPUTS,
    POSITION_IDS,
    PROMPT_TOKENS,
    SCORE_RANGE,
    SEED,
    STOP,
    TEMPERATURE,
    TEXT_INPUT,
    TEXT_OUTPUT,
    TOP_K,
    TOP_P,
    OutputCheck,
    TensorSpec,
    decoder_inputs,
    decoder_outputs,
    past_names,
    present_names,
)

__all__ = [
    "ATTENTION_MASK", "COMPLETION_TOKENS", "CROP", "CROP_SIZE", "DETECTIONS", "DET_LETTERBOX", "DET_SIZE",
    "EOS_TOKEN", "FINISH_REASON", "FRAME", "FRAME_H", "FRAME_U8", "FRAME_W", "GENERATE_INPUTS", "GENERATE_OUTPUTS",
    "IMAGE_BYTES", "INPUT_IDS", "LETTERBOXED", "LOGITS", "MAX_DETECTIONS", "MAX_TOKENS", "OIL_PCT",
    "OPTIONAL_GENERATE_INPUTS", "OUTPUT_RANGES", "PAD_VALUE", "PIPELINE_OUTPUTS", "POSITION_IDS", "PROMPT_TOKENS",
    "SCORE_COLUMN", "SCORE_RANGE", "SEED", "STOP", "TEMPERATURE", "TEXT_INPUT", "TEXT_OUTPUT", "TOP_K", "TOP_P",
    "Letterbox", "OutputCheck", "TensorSpec", "decoder_inputs", "decoder_outputs", "frame_letterbox",
    "past_names", "place_in_frame", "present_names", "to_source_boxes",
]  # fmt: skip
