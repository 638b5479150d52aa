"""Shared parts of the locustfiles: the reference answers, the request log, reading locust's CSVs and the summary.

Response checks, SSE parsing and timings come from the client library (re-exported here for the
locustfiles); the answer checks and references from loadtests.references. Everything but `install()` is
free of locust, so unit tests and the soak runner use it without gevent's monkey-patching. `install()`
wires the locust-only parts (the --answers option, the request log and the per-user tokens/s file) once
per process, whichever locustfiles are loaded.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# The checks, the SSE reader and the timings are the client library's: one definition for every caller.
from clients.lib.checks import ResponseError as ResponseError
from clients.lib.checks import check_vision_outputs as check_vision_outputs
from clients.lib.sse import parse_sse_line as parse_sse_line
from clients.lib.sse import read_stream as read_stream
from clients.lib.timing import Generation
from loadtests import references

# Request types as they appear in locust's CSV "Type" column.
INFER = "infer"  # one vision request: ensemble or ensemble_jpeg
STREAM = "sse"  # one whole gpt2_stream generation, first byte sent to last event read
TTFT = "ttft"  # time to the first text event of that generation
ITL = "itl"  # mean inter-token latency of that generation (clients.lib.timing's definition)
REQUEST_TYPES = (INFER, STREAM)  # real requests; TTFT and ITL are timings of the STREAM requests
USERS_CSV_SUFFIX = "_gpt2_users.csv"
REQUEST_LOG_FIELDS = ("time", "type", "name", "response_ms", "ok")


def host_port(host: str) -> tuple[str, int]:
    """'http://127.0.0.1:8000' or '127.0.0.1:8000' -> ('127.0.0.1', 8000)."""
    rest = host.split("://", 1)[-1].rstrip("/")
    name, _, port = rest.rpartition(":")
    if not name or not port.isdigit():
        raise ValueError(f"host {host!r}: expected http://HOST:PORT")
    return name, int(port)


# --- reading locust's CSV output (used by the runners and tests) ---


@dataclass(frozen=True)
class Row:
    """One row of locust's <prefix>_stats.csv."""

    type: str
    name: str
    requests: int
    failures: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    rps: float


def _num(value: str) -> float:
    try:
        return float(value)
    except ValueError:  # locust writes "N/A" for empty percentiles
        return math.nan


def read_stats(path: Path) -> list[Row]:
    """Rows of a locust stats CSV, without the Aggregated row (TTFT/ITL events would skew it)."""
    with path.open(newline="") as f:
        return [
            Row(
                r["Type"],
                r["Name"],
                int(r["Request Count"]),
                int(r["Failure Count"]),
                _num(r["50%"]),
                _num(r["95%"]),
                _num(r["99%"]),
                _num(r["Requests/s"]),
            )
            for r in csv.DictReader(f)
            if r["Name"] != "Aggregated"
        ]


def read_users(path: Path) -> list[dict]:
    """Per-user GPT-2 rows written by the gpt2 locustfile (user, requests, tokens, stream_s, tokens_per_s)."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def summarize(rows: list[Row], users: list[dict]) -> dict:
    """Totals over real requests (not TTFT/ITL), every row, and GPT-2 tokens/s per user."""
    real = [r for r in rows if r.type in REQUEST_TYPES]
    rates = [float(u["tokens_per_s"]) for u in users]
    return {
        "requests": sum(r.requests for r in real),
        "failures": sum(r.failures for r in rows),
        "rows": [r.__dict__ for r in rows],
        "gpt2_tokens_per_s_per_user": rates,
    }


def format_summary(summary: dict) -> str:
    """A short fixed-width table of the summary, for the terminal and the README."""
    cols = ("p50 ms", "p95 ms", "p99 ms")
    lines = [f"{'type':<6} {'name':<14} {'requests':>8} {'fails':>5} " + " ".join(f"{c:>8}" for c in cols) + "   req/s"]
    for r in summary["rows"]:
        lines.append(
            f"{r['type']:<6} {r['name']:<14} {r['requests']:>8} {r['failures']:>5} {r['p50_ms']:>8.0f} "
            f"{r['p95_ms']:>8.0f} {r['p99_ms']:>8.0f} {r['rps']:>7.2f}"
        )
    rates = summary["gpt2_tokens_per_s_per_user"]
    if rates:
        each = ", ".join(f"{x:.1f}" for x in rates)
        lines.append(f"gpt2 tokens/s per user: {each} (mean {sum(rates) / len(rates):.1f})")
    lines.append(f"requests {summary['requests']}, failures {summary['failures']}")
    return "\n".join(lines)


# --- locust wiring: imported lazily so the functions above stay free of gevent ---

_installed = False
_user_stats: dict[int, dict] = {}
_request_log: dict = {}  # "file" and its csv "writer" once --request-log is open
_answers: dict[str, dict] = {}  # "vision" / "gpt2" -> that part of the reference answers, once per process


def answers(environment, part: str, compute: Callable[[], dict]) -> dict:
    """The `part` ("vision" or "gpt2") of the --answers file, or, without one, `compute()`d once per process."""
    if part not in _answers:
        path = getattr(environment.parsed_options, "answers", "")
        _answers[part] = references.load(path)[part] if path else compute()
    return _answers[part]


def record_user_stream(user_id: int, result: Generation) -> None:
    """Add one generation to its user's tokens/s tally."""
    tally = _user_stats.setdefault(user_id, {"requests": 0, "tokens": 0, "stream_s": 0.0})
    tally["requests"] += 1
    tally["tokens"] += result.completion_tokens
    tally["stream_s"] += result.total_s


def _write_final_csv(environment, prefix: str) -> None:
    """Rewrite the stats, failures and exceptions CSVs from the final in-memory stats.

    locust refreshes them once a second and never at exit, so the last second of requests (and
    of failures) would be missing from the files the runners read.
    """
    from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

    final = StatsCSV(environment, PERCENTILES_TO_REPORT)
    for suffix, write in (
        ("stats", final.requests_csv),
        ("failures", final.failures_csv),
        ("exceptions", final.exceptions_csv),
    ):
        with open(f"{prefix}_{suffix}.csv", "w", newline="") as f:
            write(csv.writer(f))


def _add_options(parser) -> None:
    parser.add_argument(
        "--answers",
        env_var="LOCUST_ANSWERS",
        default="",
        help="reference answers JSON (python -m loadtests.references); default: computed at start from weights/",
    )
    parser.add_argument(
        "--request-log",
        env_var="LOCUST_REQUEST_LOG",
        default="",
        help="append every request (time, type, name, response_ms, ok) to this CSV (the soak reads it)",
    )


def _open_request_log(environment, **_kw) -> None:
    """Open --request-log for appending at the test's start; a new file gets the header row."""
    path = getattr(environment.parsed_options, "request_log", "")
    if path and "writer" not in _request_log:
        _request_log["file"] = Path(path).open("a", newline="")
        _request_log["writer"] = csv.writer(_request_log["file"])
        if _request_log["file"].tell() == 0:
            _request_log["writer"].writerow(REQUEST_LOG_FIELDS)


def _log_request(request_type, name, response_time, exception=None, **_kw) -> None:
    if "writer" in _request_log:
        ok = int(exception is None)
        _request_log["writer"].writerow((f"{time.time():.3f}", request_type, name, f"{response_time:.1f}", ok))


def _write_users_csv(prefix: str) -> None:
    """<prefix>_gpt2_users.csv: each user's GPT-2 requests, tokens, stream time and tokens/s."""
    with open(f"{prefix}{USERS_CSV_SUFFIX}", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("user", "requests", "tokens", "stream_s", "tokens_per_s"))
        for i, (_, t) in enumerate(sorted(_user_stats.items())):
            rate = t["tokens"] / t["stream_s"] if t["stream_s"] else 0.0
            writer.writerow((i, t["requests"], t["tokens"], f"{t['stream_s']:.3f}", f"{rate:.2f}"))


def _finish(environment, **_kw) -> None:
    """Close the request log; write the final stats CSVs and the per-user file when locust writes CSVs."""
    if "file" in _request_log:
        _request_log["file"].close()
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if prefix:
        _write_final_csv(environment, prefix)
    if prefix and _user_stats:
        _write_users_csv(prefix)


def install() -> None:
    """Register the shared options and listeners once, however many locustfiles import this."""
    global _installed
    if _installed:
        return
    _installed = True
    from locust import events

    events.init_command_line_parser.add_listener(_add_options)
    events.test_start.add_listener(_open_request_log)
    events.request.add_listener(_log_request)
    events.quitting.add_listener(_finish)
