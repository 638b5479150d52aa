"""Locust user for the OpenAI frontend: streamed `POST /v1/completions` (SSE), as an OpenAI SDK sends it.

    python -m locust -f loadtests/locust_openai.py --headless -u 4 -r 4 -t 30s --host http://127.0.0.1:9000 \
        --openai-max-tokens 16

Options (flag, or the environment variable beside it):
  --openai-max-tokens  LOCUST_OPENAI_MAX_TOKENS  tokens to generate per request (default 16)
  --openai-api-key     LOCUST_OPENAI_API_KEY     Bearer key, when the frontend requires one

Each generation fires the same three events as locust_gpt2.py (`sse`, `ttft`, `itl`) named
`openai /v1/completions`, so both targets read the same in locust's CSV. An error status, an
`{"error": ...}` event, a stream without a finish_reason, or text other than the prompt's greedy reference
(requests use temperature 0) is a failure. The reference comes from --answers (LOCUST_ANSWERS), or is
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
from loadtests.bench_openai import PATH, read_openai_stream

PROMPTS = references.OPENAI_PROMPTS
TIMEOUT_S = 120.0
NAME = f"openai {PATH}"
common.install()


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--openai-max-tokens", env_var="LOCUST_OPENAI_MAX_TOKENS", type=int, default=16)
    parser.add_argument("--openai-api-key", env_var="LOCUST_OPENAI_API_KEY", default="")


def _reference(environment) -> dict:
    """The greedy reference texts: from --answers, or computed once per process."""
    max_tokens = environment.parsed_options.openai_max_tokens
    return common.answers(environment, "gpt2", lambda: references.gpt2_answers(PROMPTS, max_tokens))


@events.init.add_listener
def _reference_before_the_run(environment, **_kwargs) -> None:
    """Load or compute the reference at init, so that computing it does not eat into the run time (-t)."""
    if environment.parsed_options is not None:
        _reference(environment)


class OpenAIUser(User):
    """Streams completions back to back (closed loop) over one keep-alive connection."""

    wait_time = constant(0)

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        self.address = common.host_port(self.host)
        self.conn: http.client.HTTPConnection | None = None
        self.prompts = itertools.cycle(PROMPTS)
        self.max_tokens = opts.openai_max_tokens
        self.answers = _reference(self.environment)
        self.headers = {"Content-Type": "application/json"}
        if opts.openai_api_key:
            self.headers["Authorization"] = f"Bearer {opts.openai_api_key}"

    def on_stop(self) -> None:
        if self.conn is not None:
            self.conn.close()

    def _stream(self, body: str, start: float):
        if self.conn is None:
            self.conn = http.client.HTTPConnection(*self.address, timeout=TIMEOUT_S)
        self.conn.request("POST", PATH, body, self.headers)
        response = self.conn.getresponse()
        if response.status != 200:
            raise common.ResponseError(f"HTTP {response.status}: {response.read()[:300]!r}")
        return read_openai_stream(iter(response.readline, b""), start)

    def _fire(self, kind: str, ms: float, length: int = 0, exc: Exception | None = None) -> None:
        self.environment.events.request.fire(
            request_type=kind, name=NAME, response_time=ms, response_length=length, exception=exc, context={}
        )

    @task
    def generate(self) -> None:
        prompt = next(self.prompts)
        body = {"model": "gpt2", "prompt": prompt, "max_tokens": self.max_tokens, "temperature": 0}
        body |= {"stream": True, "stream_options": {"include_usage": True}}
        start = time.perf_counter()
        try:
            result = self._stream(json.dumps(body), start)
            references.check_text_answer(result.text, references.expected_text(self.answers, prompt, self.max_tokens))
        except Exception as exc:  # noqa: BLE001 - every way a request can go wrong is a locust failure
            if self.conn is not None:
                self.conn.close()
                self.conn = None
            self._fire(common.STREAM, (time.perf_counter() - start) * 1000, exc=exc)
            return
        self._fire(common.STREAM, result.total_s * 1000, result.completion_tokens)
        self._fire(common.TTFT, result.ttft_s * 1000)
        if result.itl_s is not None:
            self._fire(common.ITL, result.itl_s * 1000)
        common.record_user_stream(id(self), result)
