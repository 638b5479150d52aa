"""gpt2: the non-decoupled entry (HTTP /infer and /generate, unary gRPC) onto gpt2_stream's engine.

Triton accepts only non-decoupled models on those routes, so this model stays one: it holds no weights and no
tokenizer, and forwards each request to gpt2_stream through decoupled BLS (`exec(decoupled=True)`) with `stream`
false, then answers with gpt2_stream's one final response. Requests to both entries therefore share gpt2_stream's
one in-flight batch. Each forward waits in a thread of its own, so execute() returns at once and requests that
arrive mid-generation join the running batch.

Cancellation: Triton 2.51's BLS cannot cancel a request it sent (the response iterator has no cancel() before
r25.04). So each forward carries an id (FORWARD_PARAMETER), one thread polls the clients' requests in flight every
`cancel_poll_ms`, and when a client has gone away it sends gpt2_stream a cancel request naming that id
(CANCEL_PARAMETER). gpt2_stream drops the sequence at its next step, frees its slot and ends the forward with
CANCELLED.
"""

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import triton_python_backend_utils as pb_utils
from tritonyard_contract.params import ModelParams, param
from tritonyard_contract.protocol import (
    CANCEL_PARAMETER,
    ENTRY_PARAMETER,
    FORWARD_PARAMETER,
    overloaded_message,
    untag_error_code,
)
from tritonyard_contract.tensors import GENERATE_OUTPUTS, STREAM, TEXT_INPUT

OUTPUT_NAMES = [t.name for t in GENERATE_OUTPUTS]
DEFAULT_GENERATION_MODEL = "gpt2_stream"
DEFAULT_MAX_IN_FLIGHT = 40
DEFAULT_CANCEL_POLL_MS = 50
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


@dataclass(frozen=True)
class Params(ModelParams):
    """The model's `parameters` from config.pbtxt, read once."""

    generation_model: str = DEFAULT_GENERATION_MODEL
    # Forwards waiting on the engine at once (a thread each); the builder sets gpt2_stream's max_slots + max_pending,
    # so gpt2_stream's own limit is the one clients meet. More are refused with UNAVAILABLE.
    max_in_flight: int = param(DEFAULT_MAX_IN_FLIGHT, minimum=1)
    cancel_poll_ms: int = param(DEFAULT_CANCEL_POLL_MS, minimum=1)  # how often the clients' cancellation is polled


def _refuse(request, message: str, code: int) -> None:
    """The request's only (final) response: an error with `code`."""
    request.get_response_sender().send(
        pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code)), flags=FINAL
    )


def _stream_problem(request) -> str | None:
    """Why the request's `stream` input cannot be served here; None when it is absent or false."""
    tensor = pb_utils.get_input_tensor_by_name(request, STREAM.name)
    if tensor is None:
        return None
    values = tensor.as_numpy().reshape(-1)
    if values.size != 1:
        return f"{STREAM.name}: expected one value, got {values.size}"
    if bool(values[0]):
        return f"{STREAM.name}: gpt2 answers once (HTTP /infer, /generate, unary gRPC); stream from gpt2_stream"
    return None


class TritonPythonModel:
    """Checks `stream`, then forwards each request on its own thread; answers go through the response sender."""

    def initialize(self, args: dict) -> None:
        self.params = Params.from_config(json.loads(args["model_config"]))
        self.name = args["model_name"]
        self.pool = ThreadPoolExecutor(self.params.max_in_flight, thread_name_prefix=f"{self.name}-forward")
        self.slots = threading.BoundedSemaphore(self.params.max_in_flight)
        self.in_flight: dict[str, object] = {}  # forward id -> the client's request, until the forward ends
        self.lock, self.stopping = threading.Lock(), threading.Event()
        self.watcher = threading.Thread(target=self._watch_cancellation, name=f"{self.name}-cancel-watch", daemon=True)
        self.watcher.start()
        pb_utils.Logger.log_info(f"{self.name}: {self.params}")

    def execute(self, requests: list) -> None:
        for request in requests:
            problem = _stream_problem(request)
            if problem:
                _refuse(request, problem, pb_utils.TritonError.INVALID_ARG)
            elif not self.slots.acquire(blocking=False):
                message = overloaded_message(self.name, self.params.max_in_flight)
                _refuse(request, message, pb_utils.TritonError.UNAVAILABLE)
            else:
                self.pool.submit(self._forward, request)
        return None

    def _forward(self, request) -> None:
        try:
            self._relay(request)
        except Exception as exc:  # noqa: BLE001 - whatever broke fails this request only
            pb_utils.Logger.log_error(f"{self.name}: forwarding failed: {exc}")
            message = f"{self.name}: forwarding to {self.params.generation_model} failed: {exc}"
            _refuse(request, message, pb_utils.TritonError.INTERNAL)
        finally:
            self.slots.release()

    def _relay(self, request) -> None:
        inputs = [t for t in request.inputs() if t.name() != STREAM.name]
        inputs.append(pb_utils.Tensor(STREAM.name, np.zeros((1, 1), np.bool_)))
        forward = uuid.uuid4().hex
        bls = pb_utils.InferenceRequest(
            model_name=self.params.generation_model,
            inputs=inputs,
            requested_output_names=OUTPUT_NAMES,
            request_id=request.request_id(),  # gpt2_stream's log lines name the client's request
            parameters={ENTRY_PARAMETER: self.name, FORWARD_PARAMETER: forward},
        )
        with self.lock:
            self.in_flight[forward] = request
        try:
            responses = list(bls.exec(decoupled=True))
        finally:
            with self.lock:
                self.in_flight.pop(forward, None)
        answer = None
        for response in responses:
            if response.has_error():
                error = response.error()
                code_name, message = untag_error_code(error.message())
                _refuse(request, message, getattr(pb_utils.TritonError, code_name or "", error.code()))
                return
            if response.output_tensors():  # the last response of a decoupled model can be an empty final flag
                answer = response
        if answer is None:
            _refuse(request, f"{self.params.generation_model} sent no answer", pb_utils.TritonError.INTERNAL)
            return
        request.get_response_sender().send(pb_utils.InferenceResponse(answer.output_tensors()), flags=FINAL)

    def _watch_cancellation(self) -> None:
        """Every cancel_poll_ms: ask gpt2_stream to cancel the forwards whose client has gone away."""
        cancelled: set[str] = set()  # forwards gpt2_stream has flagged
        while not self.stopping.wait(self.params.cancel_poll_ms / 1000):
            with self.lock:
                forwards = set(self.in_flight)
            cancelled &= forwards
            for forward in forwards - cancelled:
                try:
                    request = self._gone(forward)
                    if request is not None and self._cancel(forward, request):
                        cancelled.add(forward)
                except Exception as exc:  # noqa: BLE001 - tried again at the next poll
                    pb_utils.Logger.log_error(f"{self.name}: cancelling forward {forward} failed: {exc}")

    def _gone(self, forward: str):
        """The forward's request when its client has cancelled it, else None. Asked under the lock that _relay
        takes before answering: Triton frees a request once it is answered, and asking then would read freed
        memory in the server process."""
        with self.lock:
            request = self.in_flight.get(forward)
            return request if request is not None and request.is_cancelled() else None

    def _cancel(self, forward: str, request) -> bool:
        """Whether gpt2_stream flagged the forward; False when it does not run there (yet, or any more)."""
        bls = pb_utils.InferenceRequest(
            model_name=self.params.generation_model,
            inputs=[pb_utils.Tensor(TEXT_INPUT.name, np.array([[b""]], np.object_))],
            requested_output_names=OUTPUT_NAMES,
            parameters={ENTRY_PARAMETER: self.name, CANCEL_PARAMETER: forward},
        )
        found = True
        for response in bls.exec(decoupled=True):
            found = found and not response.has_error()
        if found:
            who = request.request_id() or "(no id)"
            pb_utils.Logger.log_info(f"{self.name}: client went away; cancelled forward of request {who}")
        return found

    def finalize(self) -> None:
        """Waits for the forwards in flight: each still gets its answer."""
        self.pool.shutdown(wait=True)
        self.stopping.set()
        self.watcher.join(timeout=5)
