"""The OpenAI request bodies this server accepts, what it refuses, and the response bodies it builds.

Honoured: `max_tokens` (chat: `max_completion_tokens` too), `temperature` (OpenAI's default 1.0:
sampling; 0 is greedy), `top_p`, `seed` (repeatable sampling; any 64-bit integer), `stop` (a string or
up to 4), `stream` and `stream_options.include_usage`. Refused with 400 when set to anything but the
neutral value (`UNSUPPORTED`): `n` other than 1, `logprobs`/`top_logprobs`, `tools`, `tool_choice`,
`functions`, `function_call`, `best_of` above 1, `echo`, `suffix`, penalties, `logit_bias`, and a
`response_format` other than text. Unknown fields are ignored, as vLLM does.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from openai_frontend.errors import bad_request

MAX_STOPS = 4  # OpenAI's limit
DEFAULT_MAX_TOKENS = {"completion": 16, "chat": 128}  # completions: OpenAI's default; chat: ours (no context math)
CHAT_ROLES = ("system", "developer", "user", "assistant")


def _set(value: Any) -> bool:
    return value not in (None, False, [], {}, "")


# field -> (is the value unsupported?, why). Checked on both endpoints; a field an endpoint lacks is None.
UNSUPPORTED: dict[str, tuple[Callable[[Any], bool], str]] = {
    "n": (lambda v: v is not None and v != 1, "only n=1 is supported"),
    "best_of": (lambda v: v is not None and v != 1, "only best_of=1 is supported"),
    "logprobs": (_set, "logprobs are not supported"),
    "top_logprobs": (_set, "logprobs are not supported"),
    "tools": (_set, "tools (function calling) are not supported by GPT-2"),
    "tool_choice": (lambda v: _set(v) and v != "none", "tools (function calling) are not supported by GPT-2"),
    "functions": (_set, "functions are not supported by GPT-2"),
    "function_call": (lambda v: _set(v) and v != "none", "functions are not supported by GPT-2"),
    "echo": (_set, "echo is not supported"),
    "suffix": (_set, "suffix is not supported"),
    "presence_penalty": (lambda v: bool(v), "presence_penalty is not supported (only 0)"),
    "frequency_penalty": (lambda v: bool(v), "frequency_penalty is not supported (only 0)"),
    "logit_bias": (_set, "logit_bias is not supported"),
    "response_format": (lambda v: _set(v) and v.get("type") != "text", "only response_format text is supported"),
}


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=-(2**63), lt=2**64)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    n: int | None = None
    logprobs: Any = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    response_format: dict[str, Any] | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_STOPS:
            raise bad_request(f"stop: at most {MAX_STOPS} stop sequences, got {len(stops)}", "stop")
        if any(not s for s in stops):
            raise bad_request("stop: stop sequences must not be empty", "stop")
        return stops


class CompletionRequest(_Common):
    prompt: str | list[str]
    best_of: int | None = None
    echo: bool | None = None
    suffix: str | None = None
    functions: Any = None
    function_call: Any = None

    def prompt_text(self) -> str:
        if isinstance(self.prompt, str):
            return self.prompt
        if len(self.prompt) != 1:
            raise bad_request("prompt: exactly one prompt per request is supported", "prompt")
        return self.prompt[0]


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        if any(p.type != "text" for p in self.content):
            raise bad_request("messages: only text content parts are supported", "messages")
        return "".join(p.text or "" for p in self.content)


class ChatCompletionRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    top_logprobs: int | None = None
    functions: Any = None
    function_call: Any = None

    def message_dicts(self) -> list[dict[str, str]]:
        for m in self.messages:
            if m.role not in CHAT_ROLES:
                raise bad_request(f"messages: role {m.role!r} is not supported (one of {CHAT_ROLES})", "messages")
        return [{"role": m.role, "content": m.text()} for m in self.messages]


def parse(cls: type[_Common], body: Any) -> _Common:
    """The body as `cls`; a schema problem or an unsupported value is a 400 naming the field."""
    try:
        request = cls.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(x) for x in first["loc"]) or None
        raise bad_request(f"{param}: {first['msg']}" if param else first["msg"], param) from None
    for name, (unsupported, why) in UNSUPPORTED.items():
        if unsupported(getattr(request, name, None)):
            raise bad_request(f"{name}: {why}", name, "unsupported_parameter")
    return request


@dataclass(frozen=True)
class Generation:
    """What one request asks gpt2_stream for, in the contract's terms."""

    prompt: str
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None  # already folded into uint64
    stop: tuple[str, ...]

    @classmethod
    def of(cls, request: _Common, prompt: str, kind: str, extra_stops: tuple[str, ...] = ()) -> Generation:
        max_tokens = request.max_tokens
        if kind == "chat" and getattr(request, "max_completion_tokens", None) is not None:
            max_tokens = request.max_completion_tokens
        seed = None if request.seed is None else request.seed % 2**64
        return cls(
            prompt,
            max_tokens or DEFAULT_MAX_TOKENS[kind],
            1.0 if request.temperature is None else request.temperature,
            1.0 if request.top_p is None else request.top_p,
            seed,
            tuple(dict.fromkeys([*request.stops(), *extra_stops])),
        )


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


@dataclass
class Responder:
    """Builds one request's response bodies: whole (`body`) or streamed (`chunk`, `usage_chunk`)."""

    kind: Literal["completion", "chat"]
    model: str
    id: str = ""
    created: int = 0

    def __post_init__(self) -> None:
        prefix = "chatcmpl" if self.kind == "chat" else "cmpl"
        self.id = self.id or f"{prefix}-{uuid.uuid4().hex}"
        self.created = self.created or int(time.time())

    def _envelope(self, object_: str, choices: list, usage_: dict | None, streamed: bool) -> dict:
        body = {"id": self.id, "object": object_, "created": self.created, "model": self.model, "choices": choices}
        if usage_ is not None or not streamed:
            body["usage"] = usage_
        body["system_fingerprint"] = None
        return body

    def body(self, text: str, finish_reason: str, usage_: dict) -> dict:
        if self.kind == "chat":
            message = {"role": "assistant", "content": text, "refusal": None}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
            return self._envelope("chat.completion", [choice], usage_, streamed=False)
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        return self._envelope("text_completion", [choice], usage_, streamed=False)

    def chunk(self, text: str | None, finish_reason: str | None = None, role: bool = False) -> dict:
        """One streamed piece; chat: `role` marks the first chunk (delta.role), `text` None an empty delta."""
        if self.kind == "chat":
            delta: dict[str, str] = {"role": "assistant"} if role else {}
            if text is not None:
                delta["content"] = text
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return self._envelope("chat.completion.chunk", [choice], None, streamed=True)
        choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
        return self._envelope("text_completion", [choice], None, streamed=True)

    def usage_chunk(self, usage_: dict) -> dict:
        """The last chunk with `stream_options.include_usage`: no choices, the totals."""
        object_ = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        return self._envelope(object_, [], usage_, streamed=True)
