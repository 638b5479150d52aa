"""Failures a person can act on: each becomes one line naming the server or model and what to do.

`translate` maps what tritonclient and the socket layer raise onto these; the command-line clients
print `error: <line>` and exit non-zero, never a traceback. The library itself keeps raising
tritonclient's exceptions, so callers that handle them (tests, load generators) see them unchanged.
"""

from __future__ import annotations

import socket

from tritonyard_contract.protocol import UNAVAILABLE_STATUSES, is_capacity_refusal

# What the server (Triton 2.51) says about a model it does not serve: HTTP 404 / gRPC NOT_FOUND, and
# a stream's error message; an unloaded or failed model has no available versions.
MISSING_MODEL_MESSAGES = ("Request for unknown model", "has no available versions")
# gRPC reports a connection failure as UNAVAILABLE too; these words tell it from a capacity refusal.
CONNECT_FAILURES = ("failed to connect", "Connection refused", "DNS resolution failed", "Name or service not known")


class ClientError(Exception):
    """One actionable line, and the exit code a command-line client ends with."""

    exit_code = 1


class ServerUnreachable(ClientError):
    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"no Triton server at {url} ({reason}): start it with `make serve`, or pass --url")


class ModelMissing(ClientError):
    def __init__(self, model: str, url: str) -> None:
        super().__init__(
            f"the Triton server at {url} does not serve model {model!r}: build the repository with `make build` "
            "and restart the server with `make serve`"
        )


class Refused(ClientError):
    def __init__(self, model: str, url: str, message: str, retries: int | None) -> None:
        after = "" if retries is None else f" after {retries} retr{'y' if retries == 1 else 'ies'}"
        super().__init__(
            f"{model} at {url} refused the request for lack of capacity{after} ({message}): "
            "try again later, raise --retries, or give the server more instances"
        )


class TimedOut(ClientError):
    def __init__(self, model: str, url: str, timeout_s: float | None) -> None:
        within = f" within {timeout_s:g} s" if timeout_s else ""
        super().__init__(
            f"no answer from {model} at {url}{within}: the server is overloaded or stuck; check its log, "
            "or raise --timeout"
        )


class RequestFailed(ClientError):
    def __init__(self, model: str, url: str, message: str) -> None:
        super().__init__(f"the server refused the request ({model} at {url}): {message}")


def _message(exc: BaseException) -> str:
    message = exc.message() if callable(getattr(exc, "message", None)) else str(exc)
    return " ".join(str(message or type(exc).__name__).split())  # one line, whatever the server sent


def translate(
    exc: BaseException, *, url: str, model: str, retries: int | None = None, timeout_s: float | None = None
) -> ClientError:
    """The ClientError for `exc`, raised while calling `model` at `url` (after `retries` retries)."""
    if isinstance(exc, ClientError):
        return exc
    message = _message(exc)
    status = getattr(exc, "status", None)
    status = str(status()) if callable(status) and status() is not None else ""
    if isinstance(exc, (TimeoutError, socket.timeout)) or status == "StatusCode.DEADLINE_EXCEEDED":
        return TimedOut(model, url, timeout_s)
    if type(exc).__name__ == "Timeout":  # gevent's, from tritonclient.http's connection pool
        return TimedOut(model, url, timeout_s)
    if isinstance(exc, socket.gaierror):
        return ServerUnreachable(url, f"cannot resolve the host: {exc.strerror or message}")
    if isinstance(exc, (ConnectionError, OSError)):
        return ServerUnreachable(url, (getattr(exc, "strerror", None) or message).lower())
    if status == "StatusCode.UNAVAILABLE" and any(w in message for w in CONNECT_FAILURES):
        return ServerUnreachable(url, "connection refused" if "refused" in message else message)
    if any(w in message for w in MISSING_MODEL_MESSAGES):
        return ModelMissing(model, url)
    if status in UNAVAILABLE_STATUSES or is_capacity_refusal(message):
        return Refused(model, url, message, retries)
    return RequestFailed(model, url, message)
