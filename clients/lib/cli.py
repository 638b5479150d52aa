"""What the command-line clients share: server addresses, extra headers, timeouts, and the error line.

`run(body)` calls `body()` and turns a ClientError (or anything tritonclient or the network raised,
translated for the model being called) into `error: <one line>` on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from clients.lib.errors import ClientError, translate

DEFAULT_URLS = {"http": ("TRITON_HTTP_URL", "localhost:8000"), "grpc": ("TRITON_GRPC_URL", "localhost:8001")}
DEFAULT_TIMEOUT_S = 60.0  # tritonclient.http's own default; per request (per piece when streaming)


def default_url(protocol: str, given: str | None = None) -> str:
    """`given`, else $TRITON_HTTP_URL / $TRITON_GRPC_URL, else localhost:8000 / :8001."""
    if given:
        return given
    env, fallback = DEFAULT_URLS[protocol]
    return os.environ.get(env, fallback)


def parse_headers(values: list[str]) -> dict[str, str]:
    """'Name: value' strings to a dict; raises ValueError naming the bad one."""
    headers = {}
    for value in values:
        name, sep, rest = value.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"--header {value!r}: expected 'Name: value'")
        headers[name.strip()] = rest.strip()
    return headers


def add_server_options(p: argparse.ArgumentParser) -> None:
    """--url, --header, --retries and --timeout, as every client spells them."""
    p.add_argument("--url", help="server address (default $TRITON_HTTP_URL / $TRITON_GRPC_URL or localhost:8000/8001)")
    p.add_argument("--header", action="append", default=[], help='extra request header "Name: value" (repeatable)')
    p.add_argument(
        "--retries", type=int, default=3, help="retries of a request the server refuses as overloaded (default 3)"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help=f"seconds to wait for an answer before giving up (default {DEFAULT_TIMEOUT_S:g})",
    )


class Target:
    """Which model at which address is being called, so a failure can name them."""

    def __init__(self, url: str, model: str, retries: int | None = None, timeout_s: float | None = None) -> None:
        self.url, self.model, self.retries, self.timeout_s = url, model, retries, timeout_s


def usage_error(message: str) -> int:
    sys.stderr.write(f"error: {message}\n")
    return 2


def run(body: Callable[[Target], int], target: Target) -> int:
    """`body(target)`; a failure talking to the server ends as one line on stderr naming `target`, exit code 1."""
    try:
        return body(target)
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
    except Exception as exc:
        if not _from_the_client_stack(exc):
            raise  # a bug here, not a failure to talk to the server: keep its traceback
        error = translate(exc, url=target.url, model=target.model, retries=target.retries, timeout_s=target.timeout_s)
    sys.stderr.write(f"error: {error}\n")
    return error.exit_code


def _from_the_client_stack(exc: Exception) -> bool:
    """Raised by talking to the server: ours, tritonclient's (shared memory included), the network's, gevent's."""
    module = type(exc).__module__ or ""
    return isinstance(exc, (ClientError, OSError)) or module.startswith(("tritonclient", "gevent", "grpc"))
