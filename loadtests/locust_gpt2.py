"""Locust user for GPT-2 streaming: `POST /v2/models/gpt2_stream/generate_stream` (server-sent events).

    python -m locust -f loadtests/locust_gpt2.py --headless -u 2 -r 2 -t 30s --host http://127.0.0.1:8000 \
        --gpt2-max-tokens 16

Options (flag, or the environment variable beside it):
  --gpt2-max-tokens  LOCUST_GPT2_MAX_TOKENS  tokens to generate per request (default 16)
  --gpt2-prompt      LOCUST_GPT2_PROMPT      one prompt for every request (default: cycle a few built-in ones)

Each generation fires three locust events, so all show in the CSV: `sse gpt2_stream` (whole request),
`ttft gpt2_stream` (time to first token) and `itl gpt2_stream` (its mean inter-token latency). Tokens/s
per user goes to <csv prefix>_gpt2_users.csv. An `{"error": ...}` event, a stream without a
finish_reason, empty text, or text other than the prompt's greedy reference (requests are greedy) is a
failure even when the HTTP status was 200. The reference comes from --answers (LOCUST_ANSWERS), or is
computed at start in-process from weights/gpt2 (loadtests/references.py).
"""

from __future__ import annotations

import http.client
import itertools
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `locust -f` imports this file by path

from locust import User, constant, events, task

from loadtests import locust_common as common
from loadtests import references

MODEL = "gpt2_stream"
PATH = f"/v2/models/{MODEL}/generate_stream"
PROMPTS = references.GPT2_PROMPTS
TIMEOUT_S = 120.0
common.install()


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument(
        "--gpt2-max-tokens",
        env_var="LOCUST_GPT2_MAX_TOKENS",
        type=int,
        default=16,
        help="tokens to generate per request",
    )
    parser.add_argument(
        "--gpt2-prompt",
        env_var="LOCUST_GPT2_PROMPT",
        default="",
        help="one prompt for every request (default: cycle built-in prompts)",
    )


def _prompts(opts) -> list[str]:
    return [opts.gpt2_prompt] if opts.gpt2_prompt else list(PROMPTS)


def _reference(environment) -> dict:
    """The greedy reference texts: from --answers, or computed once per process."""
    opts = environment.parsed_options
    return common.answers(environment, "gpt2", lambda: references.gpt2_answers(_prompts(opts), opts.gpt2_max_tokens))


@events.init.add_listener
def _reference_before_the_run(environment, **_kwargs) -> None:
    """Load or compute the reference at init, so that computing it does not eat into the run time (-t)."""
    if environment.parsed_options is not None:
        _reference(environment)


class Gpt2User(User):
    """Streams generations back to back (closed loop) over one keep-alive connection."""

    wait_time = constant(0)

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        self.address = common.host_port(self.host)
        self.conn: http.client.HTTPConnection | None = None
        self.prompts = itertools.cycle(_prompts(opts))
        self.max_tokens = opts.gpt2_max_tokens
        self.answers = _reference(self.environment)

    def on_stop(self) -> None:
        if self.conn is not None:
            self.conn.close()

    def _stream(self, body: bytes, start: float) -> common.Generation:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(*self.address, timeout=TIMEOUT_S)
        self.conn.request("POST", PATH, body, {"Content-Type": "application/json", "Accept": "text/event-stream"})
        response = self.conn.getresponse()
        if response.status != 200:
            # Triton still answers with SSE `data: {"error": ...}`; its message is the useful part.
            detail = response.read().decode("utf-8", "replace").strip()
            raise common.ResponseError(f"HTTP {response.status}: {detail[:300]}")
        result = common.read_stream(response, start)
        response.read()  # drain to the end of the chunked body so the connection can be reused
        return result

    @task
    def generate(self) -> None:
        prompt = next(self.prompts)
        body = json.dumps({"text_input": prompt, "max_tokens": self.max_tokens}).encode()
        start = time.perf_counter()
        fire = self.environment.events.request.fire
        try:
            result = self._stream(body, start)
            references.check_text_answer(result.text, references.expected_text(self.answers, prompt, self.max_tokens))
        except Exception as exc:  # noqa: BLE001 - every way a request can go wrong is a locust failure
            if self.conn is not None:
                self.conn.close()
                self.conn = None
            fire(
                request_type=common.STREAM,
                name=MODEL,
                response_time=(time.perf_counter() - start) * 1000,
                response_length=0,
                exception=exc,
                context={},
            )
            return
        fire(
            request_type=common.STREAM,
            name=MODEL,
            response_time=result.total_s * 1000,
            response_length=result.completion_tokens,
            exception=None,
            context={},
        )
        fire(
            request_type=common.TTFT,
            name=MODEL,
            response_time=result.ttft_s * 1000,
            response_length=0,
            exception=None,
            context={},
        )
        if result.itl_s is not None:
            fire(
                request_type=common.ITL,
                name=MODEL,
                response_time=result.itl_s * 1000,
                response_length=0,
                exception=None,
                context={},
            )
        common.record_user_stream(id(self), result)
