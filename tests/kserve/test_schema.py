"""CRD openAPIV3Schema -> strict JSON Schema, loading KServe's CRDs, and core kinds."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from deploy_kserve import schema
from tests.kserve.conftest import find

# The quantity pattern KServe's CRDs carry (from Kubernetes' resource.Quantity).
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
QTY = {"anyOf": [{"type": "integer"}, {"type": "string"}], "pattern": QUANTITY_PATTERN}
CRD_NODE = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "description": "dropped"},
                "note": {"type": "string", "nullable": True},
                "memory": {**QTY, "x-kubernetes-int-or-string": True},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "empty": {"type": "object"},
                "env": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"name": {"type": "string"}}},
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"],
                },
                "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
                "replicas": {"type": "integer", "format": "int32"},
            },
        }
    },
}


def errors_of(spec: dict) -> list[str]:
    return schema.errors({"spec": spec}, schema.convert(CRD_NODE))


def test_convert_rejects_unknown_fields_when_crd_sets_no_additional_properties() -> None:
    assert errors_of({"name": "a"}) == []
    assert errors_of({"nmae": "a"}) == ["spec: Additional properties are not allowed ('nmae' was unexpected)"]
    assert errors_of({"empty": {"x": 1}}) == ["spec.empty: Additional properties are not allowed ('x' was unexpected)"]


def test_convert_keeps_unknown_fields_when_crd_preserves_them_or_sets_additional_properties() -> None:
    assert errors_of({"free": {"anything": {"goes": 1}}, "labels": {"a": "b"}}) == []
    assert errors_of({"labels": {"a": 1}}) == ["spec.labels.a: 1 is not of type 'string'"]


def test_convert_accepts_null_when_field_is_nullable() -> None:
    assert errors_of({"note": None}) == []
    assert errors_of({"name": None}) == ["spec.name: None is not of type 'string'"]


def test_convert_accepts_integer_or_quantity_string_when_field_is_int_or_string() -> None:
    assert errors_of({"memory": 8}) == []
    assert errors_of({"memory": "8Gi"}) == []
    assert errors_of({"memory": "8GB"})[0].startswith("spec.memory: '8GB' does not match")
    assert errors_of({"memory": 0.5}) != []


def test_convert_rejects_duplicates_when_list_type_is_map_or_set() -> None:
    assert errors_of({"env": [{"name": "A"}, {"name": "B"}], "tags": ["x", "y"]}) == []
    assert "duplicate entry name='A'" in errors_of({"env": [{"name": "A"}, {"name": "A"}]})[0]
    assert "non-unique" in errors_of({"tags": ["x", "x"]})[0]


def test_convert_enforces_int32_range_when_format_is_int32() -> None:
    assert errors_of({"replicas": 2**31 - 1}) == []
    assert "is greater than the maximum" in errors_of({"replicas": 2**31})[0]


def test_load_names_the_path_when_the_crd_folder_is_absent(tmp_path: Path) -> None:
    missing = tmp_path / "shared" / "kserve-crds"
    with pytest.raises(schema.CrdsMissing, match=f"KServe's CRDs are not at {missing}"):
        schema.load(missing)


def test_load_names_the_files_when_the_crd_folder_is_incomplete(tmp_path: Path) -> None:
    (tmp_path / "serving.kserve.io_inferenceservices.yaml").write_text("{}")
    lacks = "serving.kserve.io_servingruntimes.yaml, serving.kserve.io_clusterservingruntimes.yaml"
    with pytest.raises(schema.CrdsMissing, match=f"{tmp_path} is incomplete: it lacks {lacks}$"):
        schema.load(tmp_path)


def test_core_errors_rejects_unknown_field_when_pvc_has_a_typo(rendered_overlays: dict[str, list[dict]]) -> None:
    pvc = find(rendered_overlays["gpu"], "PersistentVolumeClaim")
    assert schema.core_errors(pvc) == []
    broken = {**pvc, "spec": {**pvc["spec"], "accessMode": ["ReadWriteMany"]}}
    assert schema.core_errors(broken) == ["spec: Additional properties are not allowed ('accessMode' was unexpected)"]


def test_core_errors_rejects_string_args_when_job_container_args_is_a_string(
    rendered_overlays: dict[str, list[dict]],
) -> None:
    job = copy.deepcopy(find(rendered_overlays["gpu"], "Job"))
    job["spec"]["template"]["spec"]["containers"][0]["args"] = "sleep infinity"
    (problem,) = schema.core_errors(job)
    assert problem.startswith("spec.template.spec.containers.0.args:")


def test_core_errors_rejects_secret_when_data_is_not_base64_strings(rendered_overlays: dict[str, list[dict]]) -> None:
    secret = {**find(rendered_overlays["gpu"], "Secret", "tritonyard-admin-key"), "data": {"admin-key": 123}}
    assert schema.core_errors(secret) != []
