"""The FastAPI application: OpenAI's routes over `TritonGenerator`.

A streamed request waits for its first piece before answering, so a refusal (400, 503) still gets its
status code; an error after that arrives as one `data: {"error": ...}` event, then `data: [DONE]`. A
client that disconnects cancels its generation: for a stream, Starlette cancels the response task; for
a whole answer, a watcher polls `Request.is_disconnected()` and cancels the collecting task.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from openai_frontend import errors
from openai_frontend.chat_template import ChatTemplate, TemplateError
from openai_frontend.errors import OpenAIError
from openai_frontend.protocol import ChatCompletionRequest, CompletionRequest, Generation, Responder, parse, usage
from openai_frontend.triton import DEFAULT_MODEL, Piece, TritonGenerator

DISCONNECT_POLL_S = 0.25
CLIENT_CLOSED_REQUEST = 499
log = logging.getLogger("openai_frontend")


class ClientDisconnected(Exception):
    """The HTTP client left before its answer; answered 499 (nginx's code), which nobody reads."""


@dataclass
class Settings:
    triton_url: str = "127.0.0.1:8001"
    triton_model: str = DEFAULT_MODEL
    served_model: str = "gpt2"  # the `model` clients name, and what /v1/models lists
    api_key: str | None = field(default=None, repr=False)  # None: no auth
    chat_template: ChatTemplate = field(default_factory=ChatTemplate)
    triton_headers: dict[str, str] | None = None


def _error_response(exc: OpenAIError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())


def _sse(data: dict | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, separators=(',', ':'))}\n\n"


async def _collect(pieces: AsyncIterator[Piece]) -> tuple[str, Piece]:
    parts, last = [], None
    async for piece in pieces:
        parts.append(piece.text)
        last = piece
    return "".join(parts), last


async def _watching(request: Request, work: asyncio.Future):
    """`work`'s result, or cancel it when the HTTP client disconnects first."""
    while True:
        done, _ = await asyncio.wait({work}, timeout=DISCONNECT_POLL_S)
        if done:
            return work.result()
        if await request.is_disconnected():
            work.cancel()
            log.info("client disconnected before its answer: generation cancelled")
            raise ClientDisconnected


async def _events(responder: Responder, first: Piece, rest: AsyncIterator[Piece], include_usage: bool):
    """SSE lines for a stream whose first piece already arrived."""
    piece = first
    try:
        if responder.kind == "chat":
            yield _sse(responder.chunk("", role=True))
        while True:
            if piece.text:
                yield _sse(responder.chunk(piece.text))
            if piece.finish_reason:
                yield _sse(responder.chunk(None, piece.finish_reason))
                if include_usage:
                    yield _sse(responder.usage_chunk(usage(piece.prompt_tokens, piece.completion_tokens)))
                break
            piece = await anext(rest)
    except OpenAIError as exc:
        yield _sse(exc.body())
    finally:
        await rest.aclose()
    yield _sse("[DONE]")


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.generator = TritonGenerator(settings.triton_url, settings.triton_model, settings.triton_headers)
        app.state.started = int(time.time())
        try:
            yield
        finally:
            await app.state.generator.close()

    app = FastAPI(title="tritonyard OpenAI API", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings

    @app.exception_handler(OpenAIError)
    async def _openai_error(_request: Request, exc: OpenAIError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(ClientDisconnected)
    async def _gone(_request: Request, _exc: ClientDisconnected) -> Response:
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    @app.exception_handler(HTTPException)
    async def _http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == HTTPStatus.NOT_FOUND else None
        return _error_response(OpenAIError(exc.status_code, str(exc.detail), None, code))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error_response(errors.bad_request(str(exc.errors()[:1])))

    @app.exception_handler(Exception)
    async def _internal(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return _error_response(OpenAIError(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {type(exc).__name__}"))

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        if settings.api_key and request.url.path.startswith("/v1/"):
            given = request.headers.get("authorization", "")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.api_key.encode()):
                return _error_response(errors.unauthorized())
        return await call_next(request)

    _routes(app, settings)
    return app


def _model_card(settings: Settings, created: int) -> dict:
    return {"id": settings.served_model, "object": "model", "created": created, "owned_by": "tritonyard"}


def _routes(app: FastAPI, settings: Settings) -> None:
    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/health/ready")
    async def ready() -> JSONResponse:
        ok = await app.state.generator.ready()
        return JSONResponse({"ready": ok}, status_code=200 if ok else HTTPStatus.SERVICE_UNAVAILABLE)

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [_model_card(settings, app.state.started)]}

    @app.get("/v1/models/{model:path}")
    async def model(model: str) -> dict:
        if model != settings.served_model:
            raise errors.model_not_found(model)
        return _model_card(settings, app.state.started)

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = parse(CompletionRequest, await _json(request))
        _check_model(settings, body.model)
        gen = Generation.of(body, body.prompt_text(), "completion")
        return await _answer(request, Responder("completion", body.model), gen, body)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = parse(ChatCompletionRequest, await _json(request))
        _check_model(settings, body.model)
        try:
            prompt = settings.chat_template.render(body.message_dicts())
        except TemplateError as exc:
            raise errors.bad_request(str(exc), "messages") from None
        gen = Generation.of(body, prompt, "chat", settings.chat_template.stops)
        return await _answer(request, Responder("chat", body.model), gen, body)


async def _json(request: Request):
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise errors.bad_request("the request body is not valid JSON") from None


def _check_model(settings: Settings, model: str) -> None:
    if model != settings.served_model:
        raise errors.model_not_found(model)


async def _answer(request: Request, responder: Responder, gen: Generation, body):
    pieces = request.app.state.generator.stream(gen)
    if not body.stream:
        text, last = await _watching(request, asyncio.ensure_future(_collect(pieces)))
        return responder.body(text, last.finish_reason, usage(last.prompt_tokens, last.completion_tokens))
    try:
        first = await _watching(request, asyncio.ensure_future(anext(pieces)))
    except BaseException:
        await pieces.aclose()
        raise
    return StreamingResponse(
        _events(responder, first, pieces, body.include_usage),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
