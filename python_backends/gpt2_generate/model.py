"""gpt2_stream: GPT-2 text generation, text in and text out, in one decoupled model (vLLM's layout).

It owns the decoder (the model.onnx in its own version folder, so a new version rolled out per docs/rollout.md
is what generates), tokenizes and detokenizes in-process, and runs the one in-flight batching engine. Each request
is answered through its response sender: one response per new piece of text (`stream` true, the default here), or
one final response with the whole text (`stream` false; what `gpt2`, the unary entry, asks for through BLS). So
requests to both entries share one batch. Inputs and outputs follow TensorRT-LLM's names (options.py).
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils
from decoder import Decoder, Geometry, make_ops, make_session
from detok import IncrementalDecoder, StopText
from engine import Engine, Sequence, Sink
from options import BadRequest, Limits, Options, read
from sampling import SamplingParams
from tokenizers import Tokenizer
from tritonyard_contract.onnx_session import MODEL_FILE
from tritonyard_contract.params import ModelParams, param
from tritonyard_contract.protocol import ENTRY_PARAMETER, overloaded_message, tag_error_code
from tritonyard_contract.tensors import (
    COMPLETION_TOKENS,
    FINISH_REASON,
    NUM_INPUT_TOKENS,
    NUM_OUTPUT_TOKENS,
    PROMPT_TOKENS,
    TEXT_OUTPUT,
)

TOKENIZER_FILE = "tokenizer.json"
DEFAULT_MAX_PENDING = 32
DEFAULT_MAX_PROMPT_BYTES = 32 * 1024
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
CODE_NAMES = ("INVALID_ARG", "UNAVAILABLE", "CANCELLED")  # refusal codes named for a BLS caller; others INTERNAL


@dataclass(frozen=True)
class Params(ModelParams):
    """The model's `parameters` from config.pbtxt, read once."""

    n_layer: int
    n_head: int
    head_dim: int
    n_positions: int
    vocab_size: int
    eos_token_id: int
    max_slots: int = param(minimum=1)
    execution_provider: str = param("cpu", choices=("cpu", "cuda"))  # cuda: the gpu target (KIND_GPU)
    cache_arrays: str = param("numpy", choices=("numpy", "torch"))  # torch: the cache stays on the session's device
    intra_op_threads: int = param(2, minimum=1)
    max_pending: int = param(DEFAULT_MAX_PENDING, minimum=1)  # requests waiting for a slot; more get UNAVAILABLE
    max_prompt_bytes: int = param(DEFAULT_MAX_PROMPT_BYTES, minimum=1)  # longer prompts are refused before tokenizing


def _refuse(request, message: str, code: int, via_bls: bool = False) -> None:
    """The request's only (final) response: an error with `code`, named in the message for a BLS caller (whose
    Triton would turn any code into INTERNAL)."""
    if via_bls:
        # pb_utils.TritonError exists only once the stub runs (not at import time), so look the names up here.
        name = next((n for n in CODE_NAMES if getattr(pb_utils.TritonError, n) == code), "INTERNAL")
        message = tag_error_code(name, message)
    request.get_response_sender().send(
        pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code)), flags=FINAL
    )


def _entry(request, default: str) -> str:
    """The model the request entered through: gpt2 sets it on its BLS requests; otherwise this model."""
    try:
        parameters = json.loads(request.parameters() or "{}")
    except (AttributeError, ValueError):
        return default
    return str(parameters.get(ENTRY_PARAMETER, default))


class TritonSink(Sink):
    """Sends a sequence's results through its request's response sender."""

    def __init__(self, request, streaming: bool, prompt_tokens: int, prefix: str = "") -> None:
        self.request, self.sender = request, request.get_response_sender()
        self.streaming, self.prompt_tokens, self.parts = streaming, prompt_tokens, [prefix] if prefix else []

    def _response(self, text: str, reason: str, completion: int):
        def text_tensor(spec, value: str):
            return pb_utils.Tensor(spec.name, np.array([[value.encode()]], dtype=np.object_))

        def count(spec, value: int):
            return pb_utils.Tensor(spec.name, np.array([[value]], np.int32))

        return pb_utils.InferenceResponse(
            [
                text_tensor(TEXT_OUTPUT, text),
                count(NUM_INPUT_TOKENS, self.prompt_tokens),
                count(NUM_OUTPUT_TOKENS, completion),
                text_tensor(FINISH_REASON, reason),
                count(PROMPT_TOKENS, self.prompt_tokens),
                count(COMPLETION_TOKENS, completion),
            ]
        )

    def piece(self, text: str, completion_tokens: int) -> None:
        if self.streaming:
            self.sender.send(self._response(text, "", completion_tokens))
        else:
            self.parts.append(text)

    def finish(self, text: str, reason: str, completion_tokens: int) -> None:
        if not self.streaming:
            text = "".join(self.parts) + text
        self.sender.send(self._response(text, reason, completion_tokens), flags=FINAL)

    def fail(self, message: str) -> None:
        if "cancelled" in message:
            pb_utils.Logger.log_info(f"request {self.request.request_id() or '(no id)'} {message}")
            code = pb_utils.TritonError.CANCELLED
        else:
            code = pb_utils.TritonError.INTERNAL
        self.sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code)), flags=FINAL)

    def is_cancelled(self) -> bool:
        return self.request.is_cancelled()


class TritonPythonModel:
    """Validates each request on its own, then hands it to the in-flight batching engine."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        self.params = p = Params.from_config(config)
        self.name = args["model_name"]
        if not pb_utils.using_decoupled_model_transaction_policy(config):
            raise ValueError(f"{self.name}: must be decoupled (model_transaction_policy decoupled: true)")
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.tokenizer = Tokenizer.from_file(str(version_dir / TOKENIZER_FILE))
        self.limits = Limits(p.n_positions, p.vocab_size, p.eos_token_id, p.max_prompt_bytes)
        device_id = int(args.get("model_instance_device_id") or 0)
        ops = make_ops(p.cache_arrays, p.execution_provider, device_id)
        session = make_session(version_dir / MODEL_FILE, p.execution_provider, device_id, p.intra_op_threads)
        decoder = Decoder(session, Geometry(p.n_layer, p.n_head, p.head_dim, p.vocab_size), ops)
        log = pb_utils.Logger
        self.engine = Engine(decoder, p.max_slots, log.log_error, p.max_pending, info=self._batch_log)
        log.log_info(f"{self.name} version {args['model_version']}: {p}, decoder {version_dir / MODEL_FILE}")

    def _batch_log(self, line: str) -> None:
        pb_utils.Logger.log_info(f"{self.name} engine: {line}")

    def execute(self, requests: list) -> None:
        for request in requests:
            entry = _entry(request, self.name)
            try:
                seq = self._sequence(request, entry)
            except BadRequest as exc:
                _refuse(request, str(exc), pb_utils.TritonError.INVALID_ARG, entry != self.name)
                continue
            if not self.engine.submit(seq):
                # Triton's queue never fills here (execute returns at once), so the engine bounds itself.
                message = overloaded_message(entry, self.params.max_pending)
                _refuse(request, message, pb_utils.TritonError.UNAVAILABLE, entry != self.name)
        return None

    def _sequence(self, request, entry: str) -> Sequence:
        def get(name: str):
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            return None if tensor is None else tensor.as_numpy()

        o: Options = read(get, self.limits)
        prompt = self.tokenizer.encode(o.text).ids
        if len(prompt) + o.max_tokens > self.params.n_positions:
            raise BadRequest(
                f"text_input: the prompt is {len(prompt)} tokens; with max_tokens {o.max_tokens} it exceeds "
                f"the context of {self.params.n_positions} tokens"
            )
        seed = o.seed if o.seed is not None else int.from_bytes(os.urandom(8), "little")
        # TensorRT-LLM never repeats the prompt in streamed pieces; a whole answer includes it on request.
        prefix = "" if o.exclude_input or o.stream else o.text
        return Sequence(
            prompt,
            o.max_tokens,
            SamplingParams(o.temperature, o.top_k, o.top_p),
            np.random.default_rng(seed),
            IncrementalDecoder(self.tokenizer),
            StopText(list(o.stops)),
            TritonSink(request, o.stream, len(prompt), prefix),
            end_id=o.end_id,
            min_tokens=o.min_tokens,
            origin=entry,
        )

    def finalize(self) -> None:
        """Stops the engine: the waiting and running requests are failed, then its thread ends."""
        self.engine.close()
        self.engine = None
