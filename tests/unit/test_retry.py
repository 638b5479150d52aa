"""The client retry policy, with an injected clock, sleep and random source."""

from __future__ import annotations

import pytest
from tritonclient.utils import InferenceServerException

from clients.lib import retry

QUEUE_FULL = "[request id: <id_unknown>] Exceeds maximum queue size"


class Server:
    """Raises the queued exceptions in turn, then answers "ok"; counts calls."""

    def __init__(self, *failures: InferenceServerException) -> None:
        self.failures, self.calls = list(failures), 0

    def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


class Clock:
    def __init__(self) -> None:
        self.now, self.sleeps = 0.0, []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def unavailable(status: str | None = "503", message: str = QUEUE_FULL) -> InferenceServerException:
    return InferenceServerException(message, status=status)


def run(server: Server, policy: retry.RetryPolicy, clock: Clock, rand: float = 0.5) -> str:
    return retry.call(server, policy, clock=lambda: clock.now, sleep=clock.sleep, rand=lambda: rand)


@pytest.mark.parametrize(
    "status,message,expected",
    [
        ("503", QUEUE_FULL, True),  # HTTP /infer
        ("StatusCode.UNAVAILABLE", QUEUE_FULL, True),  # gRPC
        (None, "gpt2_stream: overloaded, 2 requests already wait for a generation slot", True),  # gRPC stream
        (None, "in ensemble 'ensemble_jpeg', Request timeout expired", True),
        ("400", "text_input: is not valid UTF-8", False),
        ("StatusCode.INVALID_ARGUMENT", "image_bytes: corrupt JPEG data", False),
        ("500", "onnxruntime failed", False),
        ("StatusCode.INTERNAL", "Stub process is not healthy", False),
        (None, "text_input: is empty", False),
    ],
)
def test_is_unavailable_matches_only_capacity_refusals_when_given_each_protocols_error(
    status, message, expected
) -> None:
    assert retry.is_unavailable(unavailable(status, message)) is expected


def test_call_retries_unavailable_with_growing_jittered_delays_when_the_server_is_full() -> None:
    server, clock = Server(unavailable(), unavailable("StatusCode.UNAVAILABLE"), unavailable()), Clock()
    policy = retry.RetryPolicy(retries=5, base_delay_s=0.1, max_delay_s=0.3)
    assert run(server, policy, clock, rand=0.5) == "ok"
    assert server.calls == 4
    assert clock.sleeps == pytest.approx([0.05, 0.1, 0.15])  # half of 0.1, 0.2, then 0.4 capped at 0.3


def test_call_fails_at_once_when_the_error_is_the_clients_fault() -> None:
    server, clock = Server(InferenceServerException("image_bytes: not a decodable image", status="400")), Clock()
    with pytest.raises(InferenceServerException, match="image_bytes"):
        run(server, retry.RetryPolicy(retries=5), clock)
    assert server.calls == 1 and clock.sleeps == []


def test_call_raises_the_last_refusal_when_retries_run_out() -> None:
    server, clock = Server(*(unavailable(message=f"full {i}") for i in range(5))), Clock()
    with pytest.raises(InferenceServerException, match="full 2"):
        run(server, retry.RetryPolicy(retries=2), clock)
    assert server.calls == 3 and len(clock.sleeps) == 2


def test_call_stops_retrying_when_the_next_delay_would_pass_the_deadline() -> None:
    server, clock = Server(*(unavailable() for _ in range(10))), Clock()
    policy = retry.RetryPolicy(retries=10, base_delay_s=1.0, max_delay_s=8.0, deadline_s=5.0)
    with pytest.raises(InferenceServerException):
        run(server, policy, clock, rand=0.99)
    assert sum(clock.sleeps) <= 5.0 and server.calls == 3  # slept ~0.99 + ~1.98; the next ~3.96 would pass 5 s


def test_call_never_retries_when_policy_has_no_retries() -> None:
    server, clock = Server(unavailable()), Clock()
    with pytest.raises(InferenceServerException):
        run(server, retry.NO_RETRY, clock)
    assert server.calls == 1


def test_backoff_stays_within_full_jitter_bounds_when_rand_spans_zero_to_one() -> None:
    policy = retry.RetryPolicy(base_delay_s=0.1, max_delay_s=1.0)
    assert policy.backoff(0, 0.0) == 0.0
    assert policy.backoff(2, 0.999) == pytest.approx(0.3996)
    assert policy.backoff(10, 0.999) == pytest.approx(0.999)  # capped at max_delay_s


@pytest.mark.parametrize("kwargs", [{"retries": -1}, {"base_delay_s": 0.0}, {"base_delay_s": 3.0, "max_delay_s": 1.0}])
def test_retry_policy_refuses_settings_when_they_make_no_sense(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        retry.RetryPolicy(**kwargs)
