"""Rules for the opt-in observability overlays: OpenTelemetry tracing and KServe's request logger.

Both hold trivially where the feature is off (no `--trace-config`, no `logger`). Where it is on, they
check what the schemas cannot: Triton's `--trace-config` settings (an OTLP/HTTP traces URL, a level
that traces at all, known settings) and a logger sink that is an absolute http(s) URL.
"""

from __future__ import annotations

import re
import urllib.parse

from deploy_kserve.objects import Rendered, flag_values

# Triton 2.51's --trace-config settings: global ones, and those of each trace mode.
TRACE_SETTINGS = {
    None: {"mode", "rate", "level", "count"},
    "opentelemetry": {"url", "resource", "bsp_max_queue_size", "bsp_schedule_delay", "bsp_max_export_batch_size"},
    "triton": {"file", "log-frequency"},
}
DEPRECATED_TRACE_FLAGS = ("--trace-file", "--trace-level", "--trace-rate", "--trace-count", "--trace-log-frequency")
OTLP_TRACES_PATH = "/v1/traces"
ENV_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
LOGGED_COMPONENTS = ("predictor", "transformer", "explainer")


def parse_trace_config(values: list[str]) -> tuple[list[tuple[str | None, str, str]], list[str]]:
    """`[mode,]setting=value` of each --trace-config value as (mode, setting, value), and the malformed ones."""
    parsed, problems = [], []
    for value in values:
        head, sep, setting_value = value.partition("=")
        mode, _, setting = head.rpartition(",") if "," in head else (None, "", head)
        if not sep or mode not in TRACE_SETTINGS or setting not in TRACE_SETTINGS[mode]:
            known = ", ".join(f"{m + ',' if m else ''}{n}" for m, ns in TRACE_SETTINGS.items() for n in sorted(ns))
            problems.append(f"--trace-config={value}: not a Triton 2.51 trace setting (known: {known})")
            continue
        parsed.append((mode, setting, setting_value))
    return parsed, problems


def http_url_problem(url: str, what: str, path_suffix: str = "") -> str | None:
    """Why `url` is not an absolute http(s) URL with a host (ending in `path_suffix`); None when it is."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{what} {url!r} must be an absolute http(s) URL with a host"
    if path_suffix and not parts.path.endswith(path_suffix):
        return f"{what} {url!r} must end in {path_suffix}: Triton posts the spans to this URL as it is"
    return None


def _single(settings: dict[str, list[str]], name: str) -> list[str]:
    found = settings.get(name, [])
    return [] if len(found) == 1 else [f"--trace-config {name}= must be given exactly once, not {len(found)} times"]


def _otel_problems(settings: dict[str, list[str]]) -> list[str]:
    """The OpenTelemetry mode's settings: one OTLP/HTTP traces URL, a level that traces, positive rate and count."""
    problems = _single(settings, "mode") + _single(settings, "opentelemetry,url")
    if settings.get("mode") and settings["mode"][-1] != "opentelemetry":
        problems.append(f"--trace-config mode={settings['mode'][-1]}: use mode=opentelemetry (spans to a collector)")
    for url in settings.get("opentelemetry,url", []):
        problems += [p for p in [http_url_problem(url, "opentelemetry,url", OTLP_TRACES_PATH)] if p]
    levels = settings.get("level", [])
    if "TIMESTAMPS" not in levels:
        problems.append("--trace-config level=TIMESTAMPS is missing: Triton's default level OFF traces nothing")
    others = [v for v in levels if v != "TIMESTAMPS"]
    problems += [f"--trace-config level={v}: opentelemetry mode supports TIMESTAMPS only" for v in others]
    for rate in settings.get("rate", []):
        if not rate.isdigit() or int(rate) < 1:
            problems.append(f"--trace-config rate={rate}: a positive integer N traces one request in N")
    for count in settings.get("count", []):
        if not re.fullmatch(r"-1|[1-9][0-9]*", count):
            problems.append(f"--trace-config count={count}: -1 (no limit) or a positive number of traces")
    return problems


def rule_tracing(r: Rendered, device: str) -> list[str]:
    """Tracing, when on, exports OpenTelemetry spans of every sampled request to an OTLP/HTTP URL."""
    container = r.container()
    args = [a for a in container.get("args", []) if isinstance(a, str)]
    problems = [f"{flag} is deprecated: use --trace-config" for flag in DEPRECATED_TRACE_FLAGS if flag in args]
    problems += [f"{flag}=...: use --trace-config" for flag in DEPRECATED_TRACE_FLAGS if flag_values(args, flag)]
    if "--trace-config" in args:
        problems.append("write --trace-config=<setting>=<value> as one argument, so it can be checked")
    values = flag_values(args, "--trace-config")
    if not values:
        return problems  # tracing off
    parsed, malformed = parse_trace_config(values)
    settings: dict[str, list[str]] = {}
    for mode, setting, value in parsed:
        settings.setdefault(f"{mode},{setting}" if mode else setting, []).append(value)
    env = {e.get("name") for e in container.get("env", [])}
    unset = sorted({ref for v in values for ref in ENV_REF.findall(v)} - env)
    problems += [f"--trace-config uses $({name}), which is not an env var of the container" for name in unset]
    return problems + malformed + _otel_problems(settings)


def rule_logger(r: Rendered, device: str) -> list[str]:
    """A component's request logger, when set, sends to an absolute http(s) sink that is not this service."""
    problems = []
    name = r.isvc.get("metadata", {}).get("name", "")
    for component in LOGGED_COMPONENTS:
        logger = (r.isvc.get("spec", {}).get(component) or {}).get("logger")
        if logger is None:
            continue
        url = logger.get("url")
        if not url:
            problems.append(f"{component}.logger.url is missing: say where the CloudEvents go (else a cluster default)")
            continue
        problem = http_url_problem(url, f"{component}.logger.url")
        if problem:
            problems.append(problem)
        elif (urllib.parse.urlsplit(url).hostname or "").split(".")[0] in (name, f"{name}-{component}"):
            problems.append(f"{component}.logger.url {url!r} is this InferenceService: it would log its own log events")
    return problems
