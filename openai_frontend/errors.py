"""OpenAI's error object, `{"error": {"message", "type", "param", "code"}}`, with its status codes.

`OpenAIError` is raised anywhere in a request; `app` turns it into the JSON body (or, once a stream has
started, into an SSE `data: {"error": ...}` event). Triton's stream errors carry only a message, so
`from_triton` classifies them by the words the contract and the model use.
"""

from __future__ import annotations

from http import HTTPStatus

from tritonyard_contract import GENERATE_INPUTS
from tritonyard_contract.protocol import is_capacity_refusal

# The error types OpenAI's API uses, by status.
ERROR_TYPES = {
    HTTPStatus.BAD_REQUEST: "invalid_request_error",
    HTTPStatus.UNAUTHORIZED: "invalid_request_error",
    HTTPStatus.NOT_FOUND: "invalid_request_error",
    HTTPStatus.TOO_MANY_REQUESTS: "rate_limit_error",
    HTTPStatus.INTERNAL_SERVER_ERROR: "server_error",
    HTTPStatus.SERVICE_UNAVAILABLE: "server_error",
}
# gpt2_generate names the input a bad request got wrong first: "max_tokens: must be between ...".
_INPUT_PREFIXES = tuple(f"{t.name}:" for t in GENERATE_INPUTS)


class OpenAIError(Exception):
    """An error answered as OpenAI's error object with `status`."""

    def __init__(self, status: HTTPStatus, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = HTTPStatus(status), message, param, code

    @property
    def type(self) -> str:
        return ERROR_TYPES.get(self.status, "server_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def headers(self) -> dict[str, str]:
        """Retry-After on capacity refusals, so clients back off; WWW-Authenticate on 401."""
        if self.status in (HTTPStatus.TOO_MANY_REQUESTS, HTTPStatus.SERVICE_UNAVAILABLE):
            return {"Retry-After": "1"}
        if self.status == HTTPStatus.UNAUTHORIZED:
            return {"WWW-Authenticate": "Bearer"}
        return {}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> OpenAIError:
    return OpenAIError(HTTPStatus.BAD_REQUEST, message, param, code)


def model_not_found(model: str) -> OpenAIError:
    return OpenAIError(HTTPStatus.NOT_FOUND, f"The model `{model}` does not exist.", "model", "model_not_found")


def unauthorized() -> OpenAIError:
    message = "Incorrect or missing API key: send it as `Authorization: Bearer <key>`."
    return OpenAIError(HTTPStatus.UNAUTHORIZED, message, None, "invalid_api_key")


def _strip_request_id(message: str) -> str:
    """Triton prefixes some messages with `[request id: X] `; the client does not need it."""
    if message.startswith("[request id:"):
        return message.split("] ", 1)[-1]
    return message


def from_triton(message: str) -> OpenAIError:
    """A gpt2_stream error message as the OpenAI error it is: capacity 503, the client's input 400, else 500."""
    text = _strip_request_id(message or "")
    if is_capacity_refusal(text):
        return OpenAIError(HTTPStatus.SERVICE_UNAVAILABLE, f"The server is overloaded: {text}", None, "overloaded")
    if text.startswith(_INPUT_PREFIXES):
        param = text.split(":", 1)[0]
        return bad_request(text, "prompt" if param == GENERATE_INPUTS[0].name else param)
    return OpenAIError(HTTPStatus.INTERNAL_SERVER_ERROR, f"generation failed: {text}", None, "internal_error")
