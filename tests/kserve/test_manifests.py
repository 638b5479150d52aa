"""Strict YAML loading and the built-in kustomize renderer."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kserve.conftest import KSERVE, failing, find, kustomize_lite, validate


def test_load_documents_rejects_duplicate_key_when_a_mapping_repeats_one() -> None:
    text = "spec:\n  predictor:\n    minReplicas: 1\n    minReplicas: 2\n"
    with pytest.raises(kustomize_lite.ManifestError, match="duplicate key 'minReplicas' at line 4"):
        kustomize_lite.load_documents(text, "isvc.yaml")


def test_load_documents_accepts_merge_override_when_key_comes_from_a_merge() -> None:
    text = "base: &b {a: 1}\nother:\n  <<: *b\n  a: 2\n"
    assert kustomize_lite.load_documents(text)[0]["other"] == {"a": 2}


def test_validate_overlay_rejects_duplicate_key_when_a_manifest_file_repeats_one(kserve_copy: Path) -> None:
    isvc = kserve_copy / "base" / "inferenceservice.yaml"
    text = isvc.read_text()
    line = "      storageUri: pvc://tritonyard-models/model_repository\n"
    isvc.write_text(text.replace(line, line + line))
    schemas = validate.select_schemas(None)
    checks = validate.validate_overlay(kserve_copy / "overlays" / "gpu", "gpu", schemas, compare_kubectl=False)
    problems = failing(checks)
    assert list(problems) == ["render (built-in kustomize subset)"]
    assert "duplicate key 'storageUri'" in problems["render (built-in kustomize subset)"][0]


def test_render_applies_namespace_images_and_patches_when_rendering_the_gpu_overlay(
    rendered_overlays: dict[str, list[dict]],
) -> None:
    objects = rendered_overlays["gpu"]
    assert {o["kind"] for o in objects} == {
        "Namespace",
        "PersistentVolumeClaim",
        "Secret",
        "Job",
        "ServingRuntime",
        "InferenceService",
    }
    assert find(objects, "Namespace")["metadata"]["name"] == "tritonyard"
    assert all(o["metadata"]["namespace"] == "tritonyard" for o in objects if o["kind"] != "Namespace")
    runtime = find(objects, "ServingRuntime")["spec"]["containers"][0]
    assert runtime["image"] == "registry.example.com/tritonyard/triton:24.10"
    model = find(objects, "InferenceService")["spec"]["predictor"]["model"]
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert model["args"][-1] == "--cuda-memory-pool-byte-size=0:2147483648"
    cpu_model = find(rendered_overlays["cpu"], "InferenceService")["spec"]["predictor"]["model"]
    assert "nvidia.com/gpu" not in cpu_model["resources"]["limits"]


@pytest.mark.parametrize("overlay", sorted(validate.OVERLAYS))
def test_render_matches_kubectl_kustomize_when_kubectl_is_installed(overlay: str) -> None:
    real = kustomize_lite.kubectl_render(KSERVE / "overlays" / overlay)
    if real is None:
        pytest.skip("kubectl is not installed: the built-in renderer is the only one")
    ours = kustomize_lite.render(KSERVE / "overlays" / overlay)
    key = kustomize_lite.identity
    assert sorted(ours, key=key) == sorted(real, key=key)


def test_render_rejects_unsupported_feature_when_kustomization_uses_common_labels(kserve_copy: Path) -> None:
    kust = kserve_copy / "overlays" / "cpu" / "kustomization.yaml"
    kust.write_text(kust.read_text() + "commonLabels:\n  team: vision\n")
    with pytest.raises(kustomize_lite.ManifestError, match=r"unsupported field\(s\) \['commonLabels'\]"):
        kustomize_lite.render(kust.parent)


def test_render_rejects_strategic_merge_patch_when_patch_is_a_mapping(kserve_copy: Path) -> None:
    patch = kserve_copy / "overlays" / "cpu" / "inferenceservice-cpu.yaml"
    patch.write_text("spec:\n  predictor:\n    maxReplicas: 2\n")
    with pytest.raises(kustomize_lite.ManifestError, match="strategic merge is not supported"):
        kustomize_lite.render(patch.parent)


def test_render_rejects_patch_when_target_matches_nothing(kserve_copy: Path) -> None:
    kust = kserve_copy / "overlays" / "cpu" / "kustomization.yaml"
    kust.write_text(kust.read_text().replace("name: tritonyard", "name: no-such-isvc"))
    with pytest.raises(kustomize_lite.ManifestError, match="matches no resource"):
        kustomize_lite.render(kust.parent)


def test_json_patch_edits_lists_and_maps_when_operations_are_valid() -> None:
    doc = {"a": {"list": [1, 2], "map": {"x": 1}}}
    for op in (
        {"op": "add", "path": "/a/list/-", "value": 3},
        {"op": "add", "path": "/a/list/0", "value": 0},
        {"op": "replace", "path": "/a/map/x", "value": 2},
        {"op": "add", "path": "/a/map/nvidia.com~1gpu", "value": "1"},
        {"op": "remove", "path": "/a/list/1"},
        {"op": "test", "path": "/a/map/x", "value": 2},
    ):
        kustomize_lite.json_patch(doc, op, "test")
    assert doc == {"a": {"list": [0, 2, 3], "map": {"x": 2, "nvidia.com/gpu": "1"}}}


@pytest.mark.parametrize(
    "op",
    [
        {"op": "replace", "path": "/a/missing", "value": 1},
        {"op": "remove", "path": "/a/list/5"},
        {"op": "add", "path": "/nope/x", "value": 1},
        {"op": "move", "from": "/a", "path": "/b"},
    ],
)
def test_json_patch_raises_when_path_or_operation_is_invalid(op: dict) -> None:
    with pytest.raises(kustomize_lite.ManifestError):
        kustomize_lite.json_patch({"a": {"list": [1]}}, op, "test")
