"""CRD openAPIV3Schema -> strict JSON Schema, the fallback schema, and core kinds."""

from __future__ import annotations

import copy

import pytest

from tests.kserve.conftest import crd_schema, find, schemas_for

QTY = {"anyOf": [{"type": "integer"}, {"type": "string"}], "pattern": crd_schema.QUANTITY_PATTERN}
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
    return crd_schema.errors({"spec": spec}, crd_schema.convert(CRD_NODE))


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


def _properties(schema: dict, path: str = "") -> set[str]:
    """Every property path of a JSON Schema, arrays as []."""
    found = set()
    for name, sub in schema.get("properties", {}).items():
        found.add(f"{path}.{name}")
        found |= _properties(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        found |= _properties(schema["items"], f"{path}[]")
    for sub in schema.get("anyOf", []):
        found |= _properties(sub, path)
    return found


@pytest.mark.parametrize("key", sorted(crd_schema.FALLBACK))
def test_fallback_schema_allows_only_crd_fields_when_compared_with_the_crd(key: tuple[str, str]) -> None:
    crd = schemas_for("crd").kserve[key]
    extra = _properties(crd_schema.FALLBACK[key]) - _properties(crd)
    assert not extra, f"the fallback schema allows fields KServe's CRD does not have: {sorted(extra)}"


def test_core_errors_rejects_unknown_field_when_pvc_has_a_typo(rendered_overlays: dict[str, list[dict]]) -> None:
    pvc = find(rendered_overlays["gpu"], "PersistentVolumeClaim")
    assert crd_schema.core_errors(pvc) == []
    broken = {**pvc, "spec": {**pvc["spec"], "accessMode": ["ReadWriteMany"]}}
    assert crd_schema.core_errors(broken) == [
        "spec: Additional properties are not allowed ('accessMode' was unexpected)"
    ]


def test_core_errors_rejects_string_args_when_job_container_args_is_a_string(
    rendered_overlays: dict[str, list[dict]],
) -> None:
    job = copy.deepcopy(find(rendered_overlays["gpu"], "Job"))
    job["spec"]["template"]["spec"]["containers"][0]["args"] = "sleep infinity"
    (problem,) = crd_schema.core_errors(job)
    assert problem.startswith("spec.template.spec.containers.0.args:")


def test_core_errors_rejects_secret_when_data_is_not_base64_strings(rendered_overlays: dict[str, list[dict]]) -> None:
    secret = {**find(rendered_overlays["gpu"], "Secret"), "data": {"admin-key": 123}}
    assert crd_schema.core_errors(secret) != []
