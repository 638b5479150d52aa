"""The OpenAI frontend as the InferenceService's transformer: the project rule over the rendered overlays."""

from __future__ import annotations

import pytest

from deploy_kserve.objects import Rendered
from deploy_kserve.openai_rules import API_KEY_ENV, rule_openai_transformer


def _transformer(objects: list[dict]) -> dict:
    return Rendered(objects).isvc["spec"]["transformer"]["containers"][0]


@pytest.mark.parametrize("overlay", ["gpu", "cpu"])
def test_openai_rule_passes_when_manifests_are_as_shipped(rendered_overlays: dict, overlay: str) -> None:
    assert rule_openai_transformer(Rendered(rendered_overlays[overlay]), overlay) == []


def test_openai_rule_fails_when_the_transformer_is_missing(gpu_objects: list[dict]) -> None:
    del Rendered(gpu_objects).isvc["spec"]["transformer"]
    assert "no transformer" in rule_openai_transformer(Rendered(gpu_objects), "gpu")[0]


def test_openai_rule_fails_when_the_service_forwards_to_the_http_port(gpu_objects: list[dict]) -> None:
    service = Rendered(gpu_objects).named("Service", "tritonyard-triton-grpc")
    service["spec"]["ports"][0]["targetPort"] = 8000
    assert any("--grpc-port 8001" in p for p in rule_openai_transformer(Rendered(gpu_objects), "gpu"))


def test_openai_rule_fails_when_predictor_host_is_the_knative_http_host(gpu_objects: list[dict]) -> None:
    args = _transformer(gpu_objects)["args"]
    args[args.index("--predictor_host") + 1] = "tritonyard-predictor.tritonyard:80"
    assert any("names no Service" in p for p in rule_openai_transformer(Rendered(gpu_objects), "gpu"))


def test_openai_rule_fails_when_the_api_key_is_a_literal(gpu_objects: list[dict]) -> None:
    env = next(e for e in _transformer(gpu_objects)["env"] if e["name"] == API_KEY_ENV)
    env.pop("valueFrom")
    env["value"] = "sk-in-git"
    assert any("secretKeyRef" in p for p in rule_openai_transformer(Rendered(gpu_objects), "gpu"))
