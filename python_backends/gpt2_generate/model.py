"""GPT-2 text generation in the server: text in, text out, one decoder step per token.

The same file serves `gpt2` (one response per request) and `gpt2_stream` (decoupled: one
response per new piece of text). Requests are handed to an in-flight batching engine and answered
through their response sender, so requests that arrive mid-generation join the running batch.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils
from detok import IncrementalDecoder, StopText
from engine import Engine, Sequence, Shape, Sink
from sampling import SamplingParams
from tokenizers import Tokenizer
from tritonyard_contract.onnx_session import MODEL_FILE, cpu_session
from tritonyard_contract.params import ModelParams, param
from tritonyard_contract.protocol import overloaded_message
from tritonyard_contract.tensors import (
    COMPLETION_TOKENS,
    FINISH_REASON,
    LOGITS,
    PROMPT_TOKENS,
    STOP,
    TEXT_INPUT,
    TEXT_OUTPUT,
    present_names,
)

TOKENIZER_FILE = "tokenizer.json"
DEFAULT_MAX_TOKENS = 16
DEFAULT_MAX_PENDING = 32
DEFAULT_MAX_PROMPT_BYTES = 32 * 1024
MAX_STOP_STRINGS = 16
MAX_STOP_CHARS = 256
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


@dataclass(frozen=True)
class Params(ModelParams):
    """The model's `parameters` from config.pbtxt, read once."""

    n_layer: int
    n_head: int
    head_dim: int
    n_positions: int
    eos_token_id: int
    max_slots: int = param(minimum=1)
    decoder_model: str = "gpt2_decoder"
    # in_process (cpu: our own onnxruntime session) or bls (gpu: the decoder model)
    decoder_mode: str = param("in_process", choices=("in_process", "bls"))
    intra_op_threads: int = param(2, minimum=1)
    max_pending: int = param(DEFAULT_MAX_PENDING, minimum=1)  # requests waiting for a slot; more get UNAVAILABLE
    max_prompt_bytes: int = param(DEFAULT_MAX_PROMPT_BYTES, minimum=1)  # longer prompts are refused before tokenizing


class BadRequest(ValueError):
    """The client's fault; becomes INVALID_ARG with a message naming the input."""


def _scalar(request, name: str, default):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return default
    values = tensor.as_numpy().reshape(-1)
    if values.size != 1:
        raise BadRequest(f"{name}: expected one value, got {values.size}")
    value = values[0]
    return value.item() if isinstance(value, np.generic) else value


def _refuse(request, message: str, code: int) -> None:
    """The request's only (final) response: an error with `code`."""
    request.get_response_sender().send(
        pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code)), flags=FINAL
    )


class TritonSink(Sink):
    """Sends a sequence's results through its request's response sender."""

    def __init__(self, request, streaming: bool, prompt_tokens: int) -> None:
        self.request, self.sender = request, request.get_response_sender()
        self.streaming, self.prompt_tokens, self.parts = streaming, prompt_tokens, []

    def _response(self, text: str, reason: str, completion: int):
        return pb_utils.InferenceResponse(
            [
                pb_utils.Tensor(TEXT_OUTPUT.name, np.array([[text.encode()]], dtype=np.object_)),
                pb_utils.Tensor(FINISH_REASON.name, np.array([[reason.encode()]], dtype=np.object_)),
                pb_utils.Tensor(PROMPT_TOKENS.name, np.array([[self.prompt_tokens]], np.int32)),
                pb_utils.Tensor(COMPLETION_TOKENS.name, np.array([[completion]], np.int32)),
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
        self.streaming = pb_utils.using_decoupled_model_transaction_policy(config)
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.tokenizer = Tokenizer.from_file(str(version_dir / TOKENIZER_FILE))
        run = self._in_process(Path(args["model_repository"]).parent) if p.decoder_mode == "in_process" else self._bls
        shape = Shape(p.n_layer, p.n_head, p.head_dim, p.eos_token_id)
        self.engine = Engine(run, shape, p.max_slots, pb_utils.Logger.log_error, p.max_pending)
        self.name = args["model_name"]
        pb_utils.Logger.log_info(f"{args['model_name']}: {p}, streaming={self.streaming}")

    def _in_process(self, repository: Path):
        path = repository / self.params.decoder_model / "1" / MODEL_FILE
        self.session = cpu_session(path, self.params.intra_op_threads)
        names = [o.name for o in self.session.get_outputs()]
        return lambda feeds: dict(zip(names, self.session.run(names, feeds)))

    def _bls(self, feeds: dict) -> dict:
        names = [LOGITS, *present_names(self.params.n_layer)]
        request = pb_utils.InferenceRequest(
            model_name=self.params.decoder_model,
            inputs=[pb_utils.Tensor(n, a) for n, a in feeds.items()],
            requested_output_names=names,
            # The engine re-batches caches with numpy, so outputs come back in host memory.
            preferred_memory=pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0),
        )
        response = request.exec()
        if response.has_error():
            raise RuntimeError(response.error().message())
        return {n: pb_utils.get_output_tensor_by_name(response, n).as_numpy() for n in names}

    def execute(self, requests: list) -> None:
        for request in requests:
            try:
                seq = self._sequence(request)
            except BadRequest as exc:
                _refuse(request, str(exc), pb_utils.TritonError.INVALID_ARG)
                continue
            if not self.engine.submit(seq):
                # Triton's queue never fills here (execute returns at once), so the engine bounds itself.
                message = overloaded_message(self.name, self.params.max_pending)
                _refuse(request, message, pb_utils.TritonError.UNAVAILABLE)
        return None

    def _sequence(self, request) -> Sequence:
        p = self.params
        raw = _scalar(request, TEXT_INPUT.name, None)
        if raw is None:  # optional inputs exist, so Triton does not enforce the required one itself
            raise BadRequest("text_input: is required")
        if len(raw) > p.max_prompt_bytes:  # before decoding and tokenizing: a huge prompt costs nothing
            raise BadRequest(f"text_input: {len(raw)} bytes, above the limit of {p.max_prompt_bytes}")
        try:
            text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        except UnicodeDecodeError:
            raise BadRequest("text_input: is not valid UTF-8") from None
        if not text.strip():
            raise BadRequest("text_input: is empty")
        max_tokens = int(_scalar(request, "max_tokens", DEFAULT_MAX_TOKENS))
        if not 1 <= max_tokens < p.n_positions:
            raise BadRequest(f"max_tokens: must be between 1 and {p.n_positions - 1}, got {max_tokens}")
        temperature = float(_scalar(request, "temperature", 0.0))
        if not temperature >= 0.0:
            raise BadRequest(f"temperature: must be >= 0 (0 = greedy), got {temperature}")
        top_k = int(_scalar(request, "top_k", 0))
        if top_k < 0:
            raise BadRequest(f"top_k: must be >= 0 (0 = off), got {top_k}")
        top_p = float(_scalar(request, "top_p", 1.0))
        if not 0.0 < top_p <= 1.0:
            raise BadRequest(f"top_p: must be in (0, 1], got {top_p}")
        seed = _scalar(request, "seed", None)
        stops = self._stops(request)
        prompt = self.tokenizer.encode(text).ids
        if len(prompt) + max_tokens > p.n_positions:
            raise BadRequest(
                f"text_input: the prompt is {len(prompt)} tokens; with max_tokens {max_tokens} it exceeds "
                f"the context of {p.n_positions} tokens"
            )
        rng = np.random.default_rng(int(seed) if seed is not None else int.from_bytes(os.urandom(8), "little"))
        return Sequence(
            prompt,
            max_tokens,
            SamplingParams(temperature, top_k, top_p),
            rng,
            IncrementalDecoder(self.tokenizer),
            StopText(stops),
            TritonSink(request, self.streaming, len(prompt)),
        )

    @staticmethod
    def _stops(request) -> list[str]:
        tensor = pb_utils.get_input_tensor_by_name(request, STOP.name)
        if tensor is None:
            return []
        values = tensor.as_numpy().reshape(-1)
        if values.size > MAX_STOP_STRINGS:
            raise BadRequest(f"stop: at most {MAX_STOP_STRINGS} stop strings, got {values.size}")
        try:
            stops = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]
        except UnicodeDecodeError:
            raise BadRequest("stop: is not valid UTF-8") from None
        if any(len(s) > MAX_STOP_CHARS for s in stops):
            raise BadRequest(f"stop: each stop string must be at most {MAX_STOP_CHARS} characters")
        return stops

    def finalize(self) -> None:
        self.engine.close()
        self.session = None
