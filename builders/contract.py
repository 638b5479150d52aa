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
# Inside ensemble_jpeg the decoded frame stays bytes (HWC, as decoded): a quarter of FRAME to move.
FRAME_U8 = TensorSpec("decoded_image_3840_2160", "TYPE_UINT8", (FRAME_H, FRAME_W, 3))
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


# --- GPT-2 text generation: the convention Triton LLM users know (gpt2 and gpt2_stream) ---
TEXT_INPUT = TensorSpec("text_input", "TYPE_STRING", (1,))
MAX_TOKENS = TensorSpec("max_tokens", "TYPE_INT32", (1,))
TEMPERATURE = TensorSpec("temperature", "TYPE_FP32", (1,))
TOP_K = TensorSpec("top_k", "TYPE_INT32", (1,))
TOP_P = TensorSpec("top_p", "TYPE_FP32", (1,))
SEED = TensorSpec("seed", "TYPE_UINT64", (1,))
STOP = TensorSpec("stop", "TYPE_STRING", (-1,))
GENERATE_INPUTS = (TEXT_INPUT, MAX_TOKENS, TEMPERATURE, TOP_K, TOP_P, SEED, STOP)
OPTIONAL_GENERATE_INPUTS = frozenset(t.name for t in GENERATE_INPUTS[1:])

TEXT_OUTPUT = TensorSpec("text_output", "TYPE_STRING", (1,))
FINISH_REASON = TensorSpec("finish_reason", "TYPE_STRING", (1,))
PROMPT_TOKENS = TensorSpec("prompt_tokens", "TYPE_INT32", (1,))
COMPLETION_TOKENS = TensorSpec("completion_tokens", "TYPE_INT32", (1,))
GENERATE_OUTPUTS = (TEXT_OUTPUT, FINISH_REASON, PROMPT_TOKENS, COMPLETION_TOKENS)

# gpt2_tokenizer: text_input -> input_ids; gpt2_detokenizer: input_ids -> text_output.
INPUT_IDS = TensorSpec("input_ids", "TYPE_INT64", (-1,))
EOS_TOKEN = "<|endoftext|>"


def decoder_inputs(n_layer: int, n_head: int, head_dim: int) -> tuple[TensorSpec, ...]:
    """optimum-style KV-cache decoder inputs, so optimum-exported real models drop in."""
    past = [
        TensorSpec(f"past_key_values.{i}.{kv}", "TYPE_FP32", (n_head, -1, head_dim))
        for i in range(n_layer)
        for kv in ("key", "value")
    ]
    return (
        INPUT_IDS,
        TensorSpec("attention_mask", "TYPE_INT64", (-1,)),  # past + new positions
        TensorSpec("position_ids", "TYPE_INT64", (-1,)),
        *past,
    )


def decoder_outputs(n_layer: int, n_head: int, head_dim: int, vocab_size: int) -> tuple[TensorSpec, ...]:
    present = [
        TensorSpec(f"present.{i}.{kv}", "TYPE_FP32", (n_head, -1, head_dim))
        for i in range(n_layer)
        for kv in ("key", "value")
    ]
    return (TensorSpec("logits", "TYPE_FP32", (-1, vocab_size)), *present)
