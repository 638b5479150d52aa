"""The opt-in tracing and request-logging overlays, and the tracing flags `make serve` passes.

The overlays pass the full validation as shipped (test_validate.py runs every overlay); here each
new rule rejects a manifest broken on purpose, with a message that says what to fix.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable

import pytest

from deploy_kserve import ROOT, schema, validate
from deploy_kserve.objects import Rendered
from deploy_kserve.observability_rules import parse_trace_config, rule_logger, rule_tracing
from serving.launcher import otlp_trace_args
from tests.kserve.conftest import failing, find

COLLECTOR = "http://otel-collector.observability.svc.cluster.local:4318/v1/traces"


def args_of(objects: list[dict]) -> list[str]:
    return find(objects, "InferenceService")["spec"]["predictor"]["model"]["args"]


def with_args(objects: list[dict], keep: Callable[[str], bool], extra: list[str]) -> list[dict]:
    """A copy whose predictor args keep what `keep` accepts, plus `extra`."""
    objects = copy.deepcopy(objects)
    model = find(objects, "InferenceService")["spec"]["predictor"]["model"]
    model["args"] = [a for a in model["args"] if keep(a)] + extra
    return objects


@pytest.fixture
def traced(rendered_overlays: dict[str, list[dict]]) -> list[dict]:
    return copy.deepcopy(rendered_overlays["tracing"])


@pytest.fixture
def logged(rendered_overlays: dict[str, list[dict]]) -> list[dict]:
    return copy.deepcopy(rendered_overlays["request-logging"])


# ----- the shipped overlays ---------------------------------------------------------------------
def test_tracing_overlay_adds_every_flag_serve_passes_when_rendered(rendered_overlays: dict[str, list[dict]]) -> None:
    args = args_of(rendered_overlays["tracing"])
    assert set(otlp_trace_args(COLLECTOR)) <= set(args)  # the flags `make serve OTLP_ENDPOINT=...` passes
    assert "--trace-config=opentelemetry,resource=k8s.pod.name=$(POD_NAME)" in args
    env = find(rendered_overlays["tracing"], "InferenceService")["spec"]["predictor"]["model"]["env"]
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in env
    assert not [a for a in args_of(rendered_overlays["gpu"]) if a.startswith("--trace")]  # opt-in: off elsewhere


def test_logger_overlay_sets_mode_and_sink_when_rendered(rendered_overlays: dict[str, list[dict]]) -> None:
    predictor = find(rendered_overlays["request-logging"], "InferenceService")["spec"]["predictor"]
    assert predictor["logger"] == {"mode": "all", "url": "http://request-log-sink.tritonyard.svc.cluster.local"}
    assert "logger" not in find(rendered_overlays["gpu"], "InferenceService")["spec"]["predictor"]


@pytest.mark.parametrize("mode", ["all", "request", "response"])
def test_logger_passes_schema_and_rules_when_mode_is_each_kserve_mode(
    logged: list[dict], schemas: schema.Schemas, mode: str
) -> None:
    find(logged, "InferenceService")["spec"]["predictor"]["logger"]["mode"] = mode
    assert failing(validate.validate_objects(logged, "gpu", schemas)) == {}


# ----- negative cases: the logger ---------------------------------------------------------------
def test_schema_rejects_logger_when_mode_is_not_one_of_kserve_modes(
    logged: list[dict], schemas: schema.Schemas
) -> None:
    find(logged, "InferenceService")["spec"]["predictor"]["logger"]["mode"] = "everything"
    problems = failing(validate.validate_objects(logged, "gpu", schemas))
    assert problems == {
        "schema InferenceService/tritonyard (crd)": [
            "spec.predictor.logger.mode: 'everything' is not one of ['all', 'request', 'response']"
        ]
    }


def test_schema_rejects_logger_when_a_field_is_misspelled(logged: list[dict], schemas: schema.Schemas) -> None:
    logger = find(logged, "InferenceService")["spec"]["predictor"]["logger"]
    logger["sink"] = logger.pop("url")
    problems = failing(validate.validate_objects(logged, "gpu", schemas))
    (found,) = problems["schema InferenceService/tritonyard (crd)"]
    assert found.startswith("spec.predictor.logger: Additional properties are not allowed ('sink' was unexpected)")
    assert problems["rule: request logger, when on, sends to an http(s) sink"] == [
        "predictor.logger.url is missing: say where the CloudEvents go (else a cluster default)"
    ]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("request-log-sink", "predictor.logger.url 'request-log-sink' must be an absolute http(s) URL with a host"),
        (
            "kafka://broker:9092",
            "predictor.logger.url 'kafka://broker:9092' must be an absolute http(s) URL with a host",
        ),
        (
            "http://tritonyard-predictor.tritonyard.svc.cluster.local",
            "predictor.logger.url 'http://tritonyard-predictor.tritonyard.svc.cluster.local' is this "
            "InferenceService: it would log its own log events",
        ),
    ],
)
def test_logger_rule_rejects_sink_when_it_is_not_an_http_url_elsewhere(
    logged: list[dict], url: str, message: str
) -> None:
    find(logged, "InferenceService")["spec"]["predictor"]["logger"]["url"] = url
    assert rule_logger(Rendered(logged), "gpu") == [message]


# ----- negative cases: tracing ------------------------------------------------------------------
def test_tracing_rule_rejects_flags_when_level_is_left_at_off(traced: list[dict]) -> None:
    broken = with_args(traced, lambda a: "level=" not in a, [])
    assert rule_tracing(Rendered(broken), "gpu") == [
        "--trace-config level=TIMESTAMPS is missing: Triton's default level OFF traces nothing"
    ]


@pytest.mark.parametrize(
    ("replace", "by", "message"),
    [
        (
            COLLECTOR,
            "http://otel-collector:4318",
            "opentelemetry,url 'http://otel-collector:4318' must end in /v1/traces: Triton posts the spans to "
            "this URL as it is",
        ),
        ("rate=1", "rate=0", "--trace-config rate=0: a positive integer N traces one request in N"),
        (
            "mode=opentelemetry",
            "mode=triton",
            "--trace-config mode=triton: use mode=opentelemetry (spans to a collector)",
        ),
        (
            "count=-1",
            "cout=-1",
            "--trace-config=cout=-1: not a Triton 2.51 trace setting (known: count, level, mode, rate, "
            "opentelemetry,bsp_max_export_batch_size, opentelemetry,bsp_max_queue_size, "
            "opentelemetry,bsp_schedule_delay, "
            "opentelemetry,resource, opentelemetry,url, triton,file, triton,log-frequency)",
        ),
        ("$(POD_NAME)", "$(NODE_NAME)", "--trace-config uses $(NODE_NAME), which is not an env var of the container"),
    ],
)
def test_tracing_rule_rejects_flags_when_one_setting_is_wrong(
    traced: list[dict], replace: str, by: str, message: str
) -> None:
    model = find(traced, "InferenceService")["spec"]["predictor"]["model"]
    model["args"] = [a.replace(replace, by) for a in model["args"]]
    assert rule_tracing(Rendered(traced), "gpu") == [message]


def test_tracing_rule_rejects_level_when_it_is_tensors(traced: list[dict]) -> None:
    model = find(traced, "InferenceService")["spec"]["predictor"]["model"]
    model["args"] = [a.replace("level=TIMESTAMPS", "level=TENSORS") for a in model["args"]]
    assert rule_tracing(Rendered(traced), "gpu") == [
        "--trace-config level=TIMESTAMPS is missing: Triton's default level OFF traces nothing",
        "--trace-config level=TENSORS: opentelemetry mode supports TIMESTAMPS only",
    ]


def test_tracing_rule_rejects_flags_when_written_the_deprecated_way(traced: list[dict]) -> None:
    broken = with_args(traced, lambda a: True, ["--trace-rate=10", "--trace-config", "rate=1"])
    assert rule_tracing(Rendered(broken), "gpu") == [
        "--trace-rate=...: use --trace-config",
        "write --trace-config=<setting>=<value> as one argument, so it can be checked",
    ]


def test_tracing_rule_rejects_mode_when_given_twice(traced: list[dict]) -> None:
    broken = with_args(traced, lambda a: True, ["--trace-config=mode=opentelemetry"])
    assert rule_tracing(Rendered(broken), "gpu") == ["--trace-config mode= must be given exactly once, not 2 times"]


# ----- the flags `make serve OTLP_ENDPOINT=...` passes ------------------------------------------
@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("http://localhost:4318", "http://localhost:4318/v1/traces"),
        ("http://localhost:4318/", "http://localhost:4318/v1/traces"),
        ("https://collector.example:443/v1/traces", "https://collector.example:443/v1/traces"),
    ],
)
def test_otlp_trace_args_pass_the_manifest_rule_when_given_a_collector(
    traced: list[dict], endpoint: str, url: str
) -> None:
    flags = otlp_trace_args(endpoint)
    assert f"--trace-config=opentelemetry,url={url}" in flags
    parsed, malformed = parse_trace_config([f.split("=", 1)[1] for f in flags])
    assert malformed == [] and ("opentelemetry", "resource", "service.name=tritonyard") in parsed
    served = with_args(traced, lambda a: not a.startswith("--trace-config"), flags)
    assert rule_tracing(Rendered(served), "gpu") == []


def test_otlp_trace_args_are_empty_when_no_endpoint_is_set() -> None:
    assert otlp_trace_args("") == otlp_trace_args("  ") == []


@pytest.mark.parametrize("endpoint", ["localhost:4318", "grpc://collector:4317", "http://"])
def test_otlp_trace_args_raise_naming_the_endpoint_when_it_is_no_http_url(endpoint: str) -> None:
    with pytest.raises(ValueError, match=f"OTLP endpoint '{endpoint}' is not an http\\(s\\) URL"):
        otlp_trace_args(endpoint)


def test_serve_exits_1_with_one_line_when_otlp_endpoint_is_no_url(tmp_path) -> None:
    env = {"PATH": "/usr/bin:/bin", "OTLP_ENDPOINT": "collector:4318", "TRITON_ADMIN_KEY": "k" * 40}
    done = subprocess.run(
        [sys.executable, "-m", "serving", "--model-repository", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "error: OTLP_ENDPOINT: OTLP endpoint 'collector:4318' is not an http(s) URL such as http://localhost:4318"
    )
