"""Retry what an overloaded server refuses (UNAVAILABLE), with jittered exponential backoff.

Triton answers a full queue, a queue timeout, or our GPT-2 engine's pending limit with UNAVAILABLE:
HTTP /infer 503, gRPC StatusCode.UNAVAILABLE. Those refusals are safe to retry: the request never
ran. gRPC also says UNAVAILABLE when it cannot connect or loses the connection; a retry then may
repeat a request that did run, which is harmless here (inference has no side effects).
Everything else (INVALID_ARG above all: the request itself is wrong) fails at once.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tritonclient.utils import InferenceServerException

from tritonyard_contract.protocol import UNAVAILABLE_STATUSES, is_capacity_refusal

log = logging.getLogger("tritonyard.client")
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry; the defaults suit an interactive client."""

    retries: int = 3  # attempts after the first; 0 = never retry
    base_delay_s: float = 0.1
    max_delay_s: float = 2.0
    deadline_s: float = 30.0  # no retry is started later than this after the first attempt

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if not 0 < self.base_delay_s <= self.max_delay_s:
            raise ValueError("need 0 < base_delay_s <= max_delay_s")

    def backoff(self, retry: int, rand: float) -> float:
        """Delay before retry number `retry` (0-based), given `rand` in [0, 1): "full jitter", so clients
        refused together do not come back together."""
        return rand * min(self.max_delay_s, self.base_delay_s * 2**retry)


DEFAULT = RetryPolicy()
NO_RETRY = RetryPolicy(retries=0)


def is_unavailable(exc: InferenceServerException) -> bool:
    """True when the server refused the request for lack of capacity (it never ran)."""
    status = exc.status()
    if status is not None:
        return str(status) in UNAVAILABLE_STATUSES
    # A gRPC stream reports a request's error as a message with no status code: match the server's words.
    return is_capacity_refusal(exc.message() or "")


def call(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    what: str = "request",
    retryable: Callable[[InferenceServerException], bool] = is_unavailable,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    rand: Callable[[], float] = random.random,
) -> T:
    """`fn()`, retried per `policy` while it raises a `retryable` InferenceServerException."""
    start = clock()
    for retry in range(policy.retries + 1):
        try:
            return fn()
        except InferenceServerException as exc:
            if retry == policy.retries or not retryable(exc):
                raise
            delay = policy.backoff(retry, rand())
            if clock() - start + delay > policy.deadline_s:
                raise
            log.info("%s refused (%s); retry %d/%d in %.2f s", what, exc.message(), retry + 1, policy.retries, delay)
            sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")
