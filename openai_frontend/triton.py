"""The bridge to Triton: one gRPC bidirectional stream (ModelStreamInfer) per request to `gpt2_stream`.

`TritonGenerator.stream` yields `Piece`s as the decoupled model sends them and stops at the one with a
finish_reason. Leaving the iteration early (the HTTP client went away, so the task is cancelled, or
the generator is closed) cancels the gRPC call: Triton marks the request cancelled, and gpt2_generate
drops the sequence from its batch and frees the slot at its next step.

Imports only tritonclient, the project's client library (`clients.lib.payloads`) and the contract.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from http import HTTPStatus

import grpc
import tritonclient.grpc.aio as grpcaio

from clients.lib import payloads
from openai_frontend.errors import OpenAIError, from_triton
from openai_frontend.protocol import Generation
from tritonyard_contract import COMPLETION_TOKENS, FINISH_REASON, PROMPT_TOKENS, TEXT_OUTPUT

DEFAULT_MODEL = "gpt2_stream"
log = logging.getLogger("openai_frontend.triton")


@dataclass(frozen=True)
class Piece:
    """One response of gpt2_stream: new text, and the token counts so far."""

    text: str
    finish_reason: str  # "" until the last piece, then "stop" or "length"
    prompt_tokens: int
    completion_tokens: int

    @classmethod
    def of(cls, result) -> Piece:
        values = (
            payloads.first(result, t.name) for t in (TEXT_OUTPUT, FINISH_REASON, PROMPT_TOKENS, COMPLETION_TOKENS)
        )
        return cls(*values)


def _rpc_error(exc: grpc.RpcError) -> OpenAIError:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if code == grpc.StatusCode.UNAVAILABLE:
        return OpenAIError(HTTPStatus.SERVICE_UNAVAILABLE, f"Triton is unreachable: {details}", None, "unavailable")
    return OpenAIError(HTTPStatus.INTERNAL_SERVER_ERROR, f"Triton stream failed ({code}): {details}")


class TritonGenerator:
    """A shared gRPC channel to Triton; create it inside the running event loop."""

    def __init__(self, url: str, model: str = DEFAULT_MODEL, headers: dict[str, str] | None = None) -> None:
        self.url, self.model, self.headers = url, model, headers
        self.client = grpcaio.InferenceServerClient(url)
        self._ids = itertools.count(1)
        self.in_flight = 0  # generations whose gRPC stream is open (for logs and tests)

    async def close(self) -> None:
        await self.client.close()

    async def ready(self) -> bool:
        try:
            return bool(await self.client.is_model_ready(self.model, headers=self.headers))
        except Exception:  # noqa: BLE001 - any failure to ask means "not ready"
            return False

    def _inputs(self, gen: Generation) -> list:
        options = {
            "max_tokens": gen.max_tokens,
            "temperature": gen.temperature,
            "top_p": gen.top_p,
            "seed": gen.seed,
            "stop": list(gen.stop),
        }
        return payloads.generate_inputs(grpcaio, gen.prompt, options)

    async def stream(self, gen: Generation, request_id: str = "") -> AsyncIterator[Piece]:
        """gpt2_stream's pieces for `gen`; raises OpenAIError for Triton's refusals and failures."""
        inputs = self._inputs(gen)
        rid = request_id or f"openai-{next(self._ids)}"

        async def one_request():
            yield {"model_name": self.model, "inputs": inputs, "request_id": rid}

        call = self.client.stream_infer(one_request(), headers=self.headers)
        self.in_flight += 1
        finished, pieces = False, 0
        try:
            async for result, error in call:
                if error is not None:
                    raise from_triton(error.message())
                piece = Piece.of(result)
                finished, pieces = bool(piece.finish_reason), pieces + 1
                yield piece
                if finished:
                    return
            raise OpenAIError(HTTPStatus.INTERNAL_SERVER_ERROR, "Triton ended the stream without a final response")
        except grpc.RpcError as exc:
            raise _rpc_error(exc) from None
        except (asyncio.CancelledError, GeneratorExit):
            if not finished:
                log.info("request %s: the client left after %d pieces; cancelling its Triton stream", rid, pieces)
            raise
        finally:
            self.in_flight -= 1
            call.cancel()
