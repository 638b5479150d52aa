"""gpt2: the non-decoupled entry (HTTP /infer and /generate, unary gRPC) onto gpt2_stream's engine.

Triton accepts only non-decoupled models on those routes, so this model stays one: it holds no weights and no
tokenizer, and forwards each request to gpt2_stream through decoupled BLS (`exec(decoupled=True)`) with `stream`
false, then answers with gpt2_stream's one final response. Requests to both entries therefore share gpt2_stream's
one in-flight batch. Each forward waits in a thread of its own, so execute() returns at once and requests that
arrive mid-generation join the running batch.
"""

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import triton_python_backend_utils as pb_utils
from tritonyard_contract.params import ModelParams, param
from tritonyard_contract.protocol import ENTRY_PARAMETER, overloaded_message, untag_error_code
from tritonyard_contract.tensors import GENERATE_OUTPUTS, STREAM

OUTPUT_NAMES = [t.name for t in GENERATE_OUTPUTS]
DEFAULT_GENERATION_MODEL = "gpt2_stream"
DEFAULT_MAX_IN_FLIGHT = 40
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


@dataclass(frozen=True)
class Params(ModelParams):
    """The model's `parameters` from config.pbtxt, read once."""

    generation_model: str = DEFAULT_GENERATION_MODEL
    # Forwards waiting on the engine at once (a thread each); the builder sets gpt2_stream's max_slots + max_pending,
    # so gpt2_stream's own limit is the one clients meet. More are refused with UNAVAILABLE.
    max_in_flight: int = param(DEFAULT_MAX_IN_FLIGHT, minimum=1)


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
        bls = pb_utils.InferenceRequest(
            model_name=self.params.generation_model,
            inputs=inputs,
            requested_output_names=OUTPUT_NAMES,
            parameters={ENTRY_PARAMETER: self.name},
        )
        answer = None
        for response in bls.exec(decoupled=True):
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

    def finalize(self) -> None:
        """Waits for the forwards in flight: each still gets its answer."""
        self.pool.shutdown(wait=True)
