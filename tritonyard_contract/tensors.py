"""Tensor names, dtypes and shapes of every served model, and the KV-cache naming of the GPT-2 decoder.

CLO deployments already call these names, so they are declared once here and every builder, model.py,
client and test reads them from this package. Dims exclude the batch dimension.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tritonyard_contract.geometry import CROP_SIZE, DET_SIZE, FRAME_H, FRAME_W, MAX_DETECTIONS

NUMPY_DTYPES = {
    "TYPE_BOOL": np.bool_,
    "TYPE_UINT8": np.uint8,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_UINT64": np.uint64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_STRING": np.object_,  # bytes elements
}


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as Triton sees it."""

    name: str
    dtype: str  # a Triton DataType name, e.g. "TYPE_FP32" (what config.pbtxt says)
    dims: tuple[int, ...]

    @property
    def datatype(self) -> str:
        """The wire datatype of the inference protocols: "FP32", "BYTES", ..."""
        return "BYTES" if self.dtype == "TYPE_STRING" else self.dtype.removeprefix("TYPE_")

    @property
    def np_dtype(self) -> type:
        """The numpy dtype of this tensor's arrays (object for BYTES)."""
        return NUMPY_DTYPES[self.dtype]


@dataclass(frozen=True)
class OutputCheck:
    """An output that must stay finite and within [low, high]; when it does not, input `blame` was bad.

    The cpu target's onnxruntime model.py enforces these per request (they travel in config.pbtxt as
    JSON): checking a small output is how a 99.5 MB input is validated cheaply, since every frame pixel
    feeds one letterbox average and a NaN/Inf pixel always reaches it.
    """

    output: str
    low: float
    high: float
    blame: str
    meaning: str  # what the client sent wrong, in words for the error message

    def violated(self, value: np.ndarray) -> bool:
        # NaN fails both comparisons, so `not (a and b)` catches it with the range in one pass each.
        return value.size > 0 and not (value.min() >= self.low and value.max() <= self.high)


# --- the CLO vision pipeline ---
FRAME = TensorSpec("original_image_3840_2160", "TYPE_FP32", (3, FRAME_H, FRAME_W))
# Inside ensemble_jpeg the decoded frame stays bytes (HWC, as decoded): a quarter of FRAME to move.
FRAME_U8 = TensorSpec("decoded_image_3840_2160", "TYPE_UINT8", (FRAME_H, FRAME_W, 3))
LETTERBOXED = TensorSpec("preprocessed_640_640_image", "TYPE_FP32", (3, DET_SIZE, DET_SIZE))
DETECTIONS = TensorSpec("yolo_detections", "TYPE_FP32", (MAX_DETECTIONS, 6))
CROP = TensorSpec("processed_image_384_384", "TYPE_FP32", (3, CROP_SIZE, CROP_SIZE))
OIL_PCT = TensorSpec("estimated_oil_pct", "TYPE_FP32", (1,))
IMAGE_BYTES = TensorSpec("image_bytes", "TYPE_STRING", (1,))

PIPELINE_OUTPUTS = (DETECTIONS, CROP, OIL_PCT)
# What a correct pipeline answer holds besides its shape and finiteness: (low, high) per output, for clients
# and probes; detection scores (column 4) are probabilities, the crop is pixels / 255, oil is a percentage.
CROP_TOLERANCE = 1e-4
OUTPUT_RANGES = {
    CROP.name: (-CROP_TOLERANCE, 1 + CROP_TOLERANCE),
    OIL_PCT.name: (0.0, 100.0),
}
SCORE_RANGE = (0.0, 1.0)

# --- GPT-2 text generation: TensorRT-LLM's tensor interface (its `ensemble` / `tensorrt_llm_bls` models) ---
# gpt2_stream (decoupled) and gpt2 (unary) both declare every tensor below, with TensorRT-LLM's names, dtypes and
# dims, so genai-perf (--backend tensorrtllm), Triton's OpenAI frontend and TensorRT-LLM clients drive them as is.
# docs/gpt2-serving.md maps each one: what it does here, its default, and which values are refused.
TEXT_INPUT = TensorSpec("text_input", "TYPE_STRING", (1,))
MAX_TOKENS = TensorSpec("max_tokens", "TYPE_INT32", (1,))
STREAM = TensorSpec("stream", "TYPE_BOOL", (1,))
EXCLUDE_INPUT_IN_OUTPUT = TensorSpec("exclude_input_in_output", "TYPE_BOOL", (1,))
MIN_LENGTH = TensorSpec("min_length", "TYPE_INT32", (1,))  # TensorRT-LLM's older name, what genai-perf 0.0.16 sends
MIN_TOKENS = TensorSpec("min_tokens", "TYPE_INT32", (1,))
END_ID = TensorSpec("end_id", "TYPE_INT32", (1,))
PAD_ID = TensorSpec("pad_id", "TYPE_INT32", (1,))
TEMPERATURE = TensorSpec("temperature", "TYPE_FP32", (1,))
TOP_K = TensorSpec("top_k", "TYPE_INT32", (1,))
TOP_P = TensorSpec("top_p", "TYPE_FP32", (1,))
SEED = TensorSpec("seed", "TYPE_UINT64", (1,))
RANDOM_SEED = TensorSpec("random_seed", "TYPE_UINT64", (1,))  # TensorRT-LLM's older name of `seed`
STOP = TensorSpec("stop", "TYPE_STRING", (-1,))  # ours (before the TensorRT-LLM names); same as stop_words
STOP_WORDS = TensorSpec("stop_words", "TYPE_STRING", (-1,))
BAD_WORDS = TensorSpec("bad_words", "TYPE_STRING", (-1,))
BEAM_WIDTH = TensorSpec("beam_width", "TYPE_INT32", (1,))
NUM_RETURN_SEQUENCES = TensorSpec("num_return_sequences", "TYPE_INT32", (1,))
LENGTH_PENALTY = TensorSpec("length_penalty", "TYPE_FP32", (1,))
REPETITION_PENALTY = TensorSpec("repetition_penalty", "TYPE_FP32", (1,))
PRESENCE_PENALTY = TensorSpec("presence_penalty", "TYPE_FP32", (1,))
FREQUENCY_PENALTY = TensorSpec("frequency_penalty", "TYPE_FP32", (1,))
RETURN_LOG_PROBS = TensorSpec("return_log_probs", "TYPE_BOOL", (1,))
RETURN_CONTEXT_LOGITS = TensorSpec("return_context_logits", "TYPE_BOOL", (1,))
RETURN_GENERATION_LOGITS = TensorSpec("return_generation_logits", "TYPE_BOOL", (1,))
RETURN_PERF_METRICS = TensorSpec("return_perf_metrics", "TYPE_BOOL", (1,))
RETURN_NUM_INPUT_TOKENS = TensorSpec("return_num_input_tokens", "TYPE_BOOL", (1,))
RETURN_NUM_OUTPUT_TOKENS = TensorSpec("return_num_output_tokens", "TYPE_BOOL", (1,))
IGNORE_EOS = TensorSpec("ignore_eos", "TYPE_BOOL", (1,))  # vLLM's; genai-perf passes it with --extra-inputs
GENERATE_INPUTS = (
    TEXT_INPUT,
    MAX_TOKENS,
    STREAM,
    EXCLUDE_INPUT_IN_OUTPUT,
    MIN_LENGTH,
    MIN_TOKENS,
    END_ID,
    PAD_ID,
    TEMPERATURE,
    TOP_K,
    TOP_P,
    SEED,
    RANDOM_SEED,
    STOP,
    STOP_WORDS,
    BAD_WORDS,
    BEAM_WIDTH,
    NUM_RETURN_SEQUENCES,
    LENGTH_PENALTY,
    REPETITION_PENALTY,
    PRESENCE_PENALTY,
    FREQUENCY_PENALTY,
    RETURN_LOG_PROBS,
    RETURN_CONTEXT_LOGITS,
    RETURN_GENERATION_LOGITS,
    RETURN_PERF_METRICS,
    RETURN_NUM_INPUT_TOKENS,
    RETURN_NUM_OUTPUT_TOKENS,
    IGNORE_EOS,
)
OPTIONAL_GENERATE_INPUTS = frozenset(t.name for t in GENERATE_INPUTS[1:])  # text_input is the only required one

TEXT_OUTPUT = TensorSpec("text_output", "TYPE_STRING", (-1,))
NUM_INPUT_TOKENS = TensorSpec("num_input_tokens", "TYPE_INT32", (1,))
NUM_OUTPUT_TOKENS = TensorSpec("num_output_tokens", "TYPE_INT32", (1,))
FINISH_REASON = TensorSpec("finish_reason", "TYPE_STRING", (1,))  # ours: "stop", "length" or "" (a streamed piece)
PROMPT_TOKENS = TensorSpec("prompt_tokens", "TYPE_INT32", (1,))  # ours: the same count as num_input_tokens
COMPLETION_TOKENS = TensorSpec("completion_tokens", "TYPE_INT32", (1,))  # ours: the same as num_output_tokens
GENERATE_OUTPUTS = (TEXT_OUTPUT, NUM_INPUT_TOKENS, NUM_OUTPUT_TOKENS, FINISH_REASON, PROMPT_TOKENS, COMPLETION_TOKENS)

EOS_TOKEN = "<|endoftext|>"

# --- the optimum-style KV-cache decoder (gpt2_stream's model.onnx), so optimum-exported real models drop in ---
INPUT_IDS = TensorSpec("input_ids", "TYPE_INT64", (-1,))
ATTENTION_MASK = TensorSpec("attention_mask", "TYPE_INT64", (-1,))  # past + new positions
POSITION_IDS = TensorSpec("position_ids", "TYPE_INT64", (-1,))
LOGITS = "logits"
PAST_PREFIX = "past_key_values."


def past_names(n_layer: int) -> list[str]:
    """Decoder cache inputs, in order: past_key_values.{i}.key, past_key_values.{i}.value per layer."""
    return [f"{PAST_PREFIX}{i}.{kv}" for i in range(n_layer) for kv in ("key", "value")]


def present_names(n_layer: int) -> list[str]:
    """Decoder cache outputs, in the same order as `past_names`."""
    return [f"present.{i}.{kv}" for i in range(n_layer) for kv in ("key", "value")]


def decoder_inputs(n_layer: int, n_head: int, head_dim: int) -> tuple[TensorSpec, ...]:
    past = [TensorSpec(n, "TYPE_FP32", (n_head, -1, head_dim)) for n in past_names(n_layer)]
    return (INPUT_IDS, ATTENTION_MASK, POSITION_IDS, *past)


def decoder_outputs(n_layer: int, n_head: int, head_dim: int, vocab_size: int) -> tuple[TensorSpec, ...]:
    present = [TensorSpec(n, "TYPE_FP32", (n_head, -1, head_dim)) for n in present_names(n_layer)]
    return (TensorSpec(LOGITS, "TYPE_FP32", (-1, vocab_size)), *present)
