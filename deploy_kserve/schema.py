"""Strict schemas: KServe's own CRDs for its kinds, kubernetes-validate for the core kinds.

InferenceService and ServingRuntime are checked against KServe v0.20.0's CRDs, read from
../shared/kserve-crds (never copied into the project). Their `openAPIV3Schema` is converted to
JSON Schema the way an API server with strict field validation (`kubectl apply --validate=strict`,
the default) reads it: unknown fields are errors wherever the CRD neither sets `additionalProperties`
nor preserves unknown fields, `nullable` admits null, int-or-string quantities stay integer-or-string
with their pattern, and list-type set/map items must be unique. Without the CRDs nothing is checked
in their place: `load` fails and names the folder.

Core kinds (Namespace, PersistentVolumeClaim, Secret, Job...) go through kubernetes-validate's
strict schemas, offline.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from deploy_kserve import CRD_DIR

KSERVE_VERSION = "v0.20.0"
K8S_VERSION = "1.30"  # the oldest Kubernetes KServe 0.20 supports: newer-only fields are errors
CRD_FILES = {
    ("serving.kserve.io/v1beta1", "InferenceService"): "serving.kserve.io_inferenceservices.yaml",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "serving.kserve.io_servingruntimes.yaml",
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): "serving.kserve.io_clusterservingruntimes.yaml",
}
INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_COMPOSITE = ("anyOf", "allOf", "oneOf")
STR, INT = {"type": "string"}, {"type": "integer"}

# What the API server accepts in `metadata` of any object (ObjectMeta, the fields a client sets).
OBJECT_META = {
    "type": "object",
    "properties": {
        "name": STR,
        "generateName": STR,
        "namespace": STR,
        "labels": {"type": "object", "additionalProperties": STR},
        "annotations": {"type": "object", "additionalProperties": STR},
        "finalizers": {"type": "array", "items": STR},
    },
    "additionalProperties": False,
}


class CrdsMissing(FileNotFoundError):
    """KServe's CRDs are not where they are read from; the message names the path."""


@dataclass(frozen=True)
class Schemas:
    """The validation level that runs for the KServe kinds, and its schemas."""

    level: str
    description: str
    kserve: dict[tuple[str, str], dict]


def load(crd_dir: Path = CRD_DIR) -> Schemas:
    """The "crd" level: strict JSON Schemas from KServe's CRDs in `crd_dir`; CrdsMissing without them."""
    crd_dir = Path(crd_dir)
    if not crd_dir.is_dir():
        raise CrdsMissing(
            f"KServe's CRDs are not at {crd_dir}: they are read from ../shared/kserve-crds beside the project "
            "(a copy of shared/ next to the clone, as in CI), or from --crds DIR"
        )
    schemas = crd_schemas(crd_dir.resolve())
    return Schemas("crd", f"KServe {KSERVE_VERSION} CRDs from {crd_dir}, strict (unknown fields rejected)", schemas)


def _is_annotation(key: str) -> bool:
    """Keys that document a node or steer Kubernetes, not JSON Schema: dropped from the converted schema."""
    return key in ("description", "nullable", "default", "example", "externalDocs") or key.startswith("x-")


def _convert_value(key: str, value: Any) -> Any:
    """One keyword's value, with every subschema in it converted."""
    if key == "properties":
        return {name: convert(sub) for name, sub in value.items()}
    if key in ("items", "additionalProperties", "not") and isinstance(value, dict):
        return convert(value)
    if key in _COMPOSITE:
        return [convert(sub) for sub in value]
    return value


def _apply_kubernetes_semantics(node: dict, out: dict[str, Any]) -> None:
    """What the API server's validation adds to `out`: int-or-string, strict fields, integer formats, list types."""
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [INT, STR])
    is_object = node.get("type") == "object" or "properties" in node
    if is_object and "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False  # strict field validation: unknown fields are errors
    if node.get("type") == "integer" and node.get("format") in INT_RANGES:
        low, high = INT_RANGES[node["format"]]
        out.setdefault("minimum", low)
        out.setdefault("maximum", high)
    if node.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    elif node.get("x-kubernetes-list-type") == "map":
        out["listMapKeys"] = list(node.get("x-kubernetes-list-map-keys", []))


def convert(node: dict) -> dict:
    """One CRD structural-schema node as a strict JSON Schema (draft 4, as OpenAPI v3.0 is)."""
    out: dict[str, Any] = {key: _convert_value(key, value) for key, value in node.items() if not _is_annotation(key)}
    _apply_kubernetes_semantics(node, out)
    if node.get("nullable"):
        out = {"anyOf": [{"type": "null"}, out]}
    return out


def crd_to_schema(crd: dict, version: str) -> dict:
    """The JSON Schema of one served version of a CRD, with strict ObjectMeta at the root."""
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            schema = convert(entry["schema"]["openAPIV3Schema"])
            schema["properties"]["metadata"] = OBJECT_META
            schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
            return schema
    raise KeyError(f"{crd['metadata']['name']} has no version {version}")


@functools.lru_cache(maxsize=4)
def crd_schemas(crd_dir: Path) -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> JSON Schema for every KServe CRD file in `crd_dir`."""
    missing = [name for name in CRD_FILES.values() if not (crd_dir / name).is_file()]
    if missing:
        raise CrdsMissing(f"{crd_dir} is incomplete: it lacks {', '.join(missing)}")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the InferenceService CRD is 2 MB
    schemas = {}
    for (api_version, kind), filename in CRD_FILES.items():
        crd = yaml.load((crd_dir / filename).read_text(), Loader=loader)
        schemas[(api_version, kind)] = crd_to_schema(crd, api_version.rpartition("/")[2])
    return schemas


def _list_map_keys(
    validator: Any, keys: list[str], instance: Any, schema: dict
) -> Iterator[jsonschema.ValidationError]:
    if not isinstance(instance, list):
        return
    seen = set()
    for item in instance:
        if isinstance(item, dict):
            key = json.dumps([item.get(k) for k in keys], sort_keys=True)
            if key in seen:
                found = ", ".join(f"{k}={item.get(k)!r}" for k in keys)
                yield jsonschema.ValidationError(f"duplicate entry {found}: the list is keyed by {keys}")
            seen.add(key)


StrictValidator = jsonschema.validators.extend(jsonschema.Draft4Validator, {"listMapKeys": _list_map_keys})


def errors(obj: dict, schema: dict) -> list[str]:
    """Every schema violation of `obj`, as 'path: message', sorted by path."""
    found = []
    for err in StrictValidator(schema).iter_errors(obj):
        where = ".".join(str(p) for p in err.absolute_path) or "(root)"
        found.append(f"{where}: {_short(err)}")
    return sorted(found)


def _short(err: jsonschema.ValidationError) -> str:
    """The message of the most specific sub-error, without the whole schema."""
    if err.validator in _COMPOSITE and err.context:
        return jsonschema.exceptions.best_match(err.context).message
    return err.message


def core_errors(obj: dict, version: str = K8S_VERSION) -> list[str]:
    """kubernetes-validate's strict check of a built-in kind, offline; [] when valid."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.absolute_path) or "(root)"
        return [f"{where}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [
            f"(root): no schema for {obj.get('apiVersion')}/{obj.get('kind')} in Kubernetes {version}: {exc.message}"
        ]
    return []
