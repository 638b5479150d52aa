"""gpt2_stream: GPT-2 text generation, text in and text out, in one decoupled model (vLLM's layout).

It owns the decoder (the model.onnx in its own version folder, so a new version rolled out per docs/rollout.md
is what generates), tokenizes and detokenizes in-process, and runs the one in-flight batching engine. Each request
is answered through its response sender: one response per new piece of text (`stream` true, the default here), or
one final response with the whole text (`stream` false; what `gpt2`, the unary entry, asks for through BLS). So
requests to both entries share one batch. Inputs and outputs follow TensorRT-LLM's names (options.py).

Responses are sent, and cancellation polled, on threads of their own (outbox.py): both are round trips to the
server process, which the decoder loop must not wait for. `gpt2` cancels a forward it was asked for whose client
went away with a control request naming that forward (CANCEL_PARAMETER): Triton 2.51's BLS cannot cancel itself.
"""

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils
from decoder import Decoder, Geometry, make_ops, make_session
from detok import IncrementalDecoder, StopText
from engine import Engine, Sequence, Sink
from options import BadRequest, Limits, Options, read
from outbox import CancelWatch, Outbox
from sampling import SamplingParams
from tokenizers import Tokenizer
from tritonyard_contract.onnx_session import MODEL_FILE
from tritonyard_contract.params import ModelParams, param
from tritonyard_contract.protocol import (
    CANCEL_PARAMETER,
    ENTRY_PARAMETER,
    FORWARD_PARAMETER,
    overloaded_message,
    tag_error_code,
)
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
DEFAULT_CANCEL_POLL_MS = 50
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
# Codes named in the message for a BLS caller (others arrive as INTERNAL): refusals, cancellation, and an unknown
# forward in a cancel request.
CODE_NAMES = ("INVALID_ARG", "UNAVAILABLE", "CANCELLED", "NOT_FOUND")


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
    cancel_poll_ms: int = param(DEFAULT_CANCEL_POLL_MS, minimum=1)  # how often live requests' cancellation is polled


def _error(message: str, code: int, via_bls: bool = False):
    """An error response with `code`, named in the message for a BLS caller (whose Triton would turn any code
    into INTERNAL)."""
    if via_bls:
        # pb_utils.TritonError exists only once the stub runs (not at import time), so look the names up here.
        name = next((n for n in CODE_NAMES if getattr(pb_utils.TritonError, n) == code), "INTERNAL")
        message = tag_error_code(name, message)
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))


def _refuse(request, message: str, code: int, via_bls: bool = False) -> None:
    """The request's only (final) response: an error with `code`."""
    request.get_response_sender().send(_error(message, code, via_bls), flags=FINAL)


def _parameters(request) -> dict:
    """The request's parameters: gpt2 sets ENTRY_PARAMETER and FORWARD_PARAMETER (or CANCEL_PARAMETER) on its
    BLS requests."""
    try:
        parameters = json.loads(request.parameters() or "{}")
    except (AttributeError, ValueError):
        return {}
    return parameters if isinstance(parameters, dict) else {}


class TritonSink(Sink):
    """Sends a sequence's results through its request's response sender, on the outbox's thread; its cancelled flag
    is set by the cancel watch (the client went away) or by `gpt2`'s cancel message (`cancel`)."""

    def __init__(self, model: "TritonPythonModel", request, streaming: bool, prompt_tokens: int, **how) -> None:
        self.request, self.sender, self.outbox = request, request.get_response_sender(), model.outbox
        self.streaming, self.prompt_tokens = streaming, prompt_tokens
        prefix = how.get("prefix", "")
        self.parts = [prefix] if prefix else []
        self.via_bls, self.forward = how.get("via_bls", False), how.get("forward")
        self.watch, self.forwards = model.watch, model.forwards
        if self.forward:  # gpt2's forward: a BLS request is never cancelled in 2.51, gpt2 sends a cancel instead
            self.cancelled = threading.Event()
            self.forwards[self.forward] = self
        else:
            self.cancelled = self.watch.watch(request.is_cancelled)

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

    def _send(self, make, flags: int = 0) -> None:
        """Queue a send: `make()` builds the response on the outbox's thread too."""
        sender = self.sender
        self.outbox.put(lambda: sender.send(make(), flags=flags))

    def forget(self) -> None:
        """Stop watching the request (it is answered, or refused before it reached the engine)."""
        self.watch.forget(self.cancelled)
        if self.forward:
            self.forwards.pop(self.forward, None)

    def piece(self, text: str, completion_tokens: int) -> None:
        if self.streaming:
            self._send(lambda: self._response(text, "", completion_tokens))
        else:
            self.parts.append(text)

    def finish(self, text: str, reason: str, completion_tokens: int) -> None:
        if not self.streaming:
            text = "".join(self.parts) + text
        self.forget()
        self._send(lambda: self._response(text, reason, completion_tokens), flags=FINAL)

    def fail(self, message: str) -> None:
        self.forget()
        if "cancelled" in message:
            pb_utils.Logger.log_info(f"request {self.request.request_id() or '(no id)'} {message}")
            code = pb_utils.TritonError.CANCELLED
        else:
            code = pb_utils.TritonError.INTERNAL
        self._send(lambda: _error(message, code, self.via_bls), flags=FINAL)

    def is_cancelled(self) -> bool:
        return self.cancelled.is_set()

    def cancel(self) -> None:
        self.cancelled.set()


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
        self.outbox = Outbox(log.log_error)
        self.watch = CancelWatch(p.cancel_poll_ms / 1000, log.log_error)
        self.forwards: dict[str, TritonSink] = {}  # gpt2's forwards in flight, by the id gpt2 gave them
        self.engine = Engine(decoder, p.max_slots, log.log_error, p.max_pending, info=self._batch_log)
        log.log_info(f"{self.name} version {args['model_version']}: {p}, decoder {version_dir / MODEL_FILE}")

    def _batch_log(self, line: str) -> None:
        pb_utils.Logger.log_info(f"{self.name} engine: {line}")

    def execute(self, requests: list) -> None:
        for request in requests:
            parameters = _parameters(request)
            if CANCEL_PARAMETER in parameters:
                self._cancel_forward(request, str(parameters[CANCEL_PARAMETER]))
                continue
            entry = str(parameters.get(ENTRY_PARAMETER, self.name))
            try:
                seq = self._sequence(request, entry, parameters.get(FORWARD_PARAMETER))
            except BadRequest as exc:
                _refuse(request, str(exc), pb_utils.TritonError.INVALID_ARG, entry != self.name)
                continue
            if not self.engine.submit(seq):
                # Triton's queue never fills here (execute returns at once), so the engine bounds itself.
                seq.sink.forget()
                message = overloaded_message(entry, self.params.max_pending)
                _refuse(request, message, pb_utils.TritonError.UNAVAILABLE, entry != self.name)
        return None

    def _cancel_forward(self, request, forward: str) -> None:
        """gpt2's client went away: cancel the forward it named. Answered with a bare final flag once the forward's
        sequence is flagged (the engine drops it at its next step), or NOT_FOUND when no such forward runs (it has
        finished, or has not reached execute() yet: gpt2 asks again)."""
        sink = self.forwards.get(forward)
        if sink is None:
            _refuse(request, f"no forward {forward} in flight", pb_utils.TritonError.NOT_FOUND, via_bls=True)
            return
        sink.cancel()
        request.get_response_sender().send(flags=FINAL)

    def _sequence(self, request, entry: str, forward: str | None = None) -> Sequence:
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
        via_bls = entry != self.name
        return Sequence(
            prompt,
            o.max_tokens,
            SamplingParams(o.temperature, o.top_k, o.top_p),
            np.random.default_rng(seed),
            IncrementalDecoder(self.tokenizer),
            StopText(list(o.stops)),
            TritonSink(self, request, o.stream, len(prompt), prefix=prefix, via_bls=via_bls, forward=forward),
            end_id=o.end_id,
            min_tokens=o.min_tokens,
            origin=entry,
        )

    def finalize(self) -> None:
        """Stops the engine (the waiting and running requests are failed), sends what is queued, ends the threads."""
        self.engine.close()
        self.outbox.close()
        self.watch.close()
        self.engine = None
