"""Strict schemas for the KServe objects, and strict checks of core Kubernetes objects.

Two levels for InferenceService and ServingRuntime:
- "crd": KServe's own CRDs (v0.20.0) from ../shared/kserve-crds, their `openAPIV3Schema` converted
  to JSON Schema the way an API server with strict field validation reads it: unknown fields are
  errors wherever the CRD neither sets `additionalProperties` nor preserves unknown fields,
  `nullable` admits null, int-or-string quantities stay integer-or-string with their pattern, and
  list-type set/map items must be unique.
- "fallback": where ../shared is absent (a fresh clone), `FALLBACK` below: a small schema of the
  fields these manifests use, just as strict.
Core kinds (Namespace, PersistentVolumeClaim, Secret, Job...) go through kubernetes-validate's
strict schemas, offline.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CRD_DIR = ROOT.parent / "shared" / "kserve-crds"
KSERVE_VERSION = "v0.20.0"
K8S_VERSION = "1.30"  # the oldest Kubernetes KServe 0.20 supports: newer-only fields are errors
CRD_FILES = {
    ("serving.kserve.io/v1beta1", "InferenceService"): "serving.kserve.io_inferenceservices.yaml",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "serving.kserve.io_servingruntimes.yaml",
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): "serving.kserve.io_clusterservingruntimes.yaml",
}
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_COMPOSITE = ("anyOf", "allOf", "oneOf")


def _obj(props: dict, required: tuple[str, ...] = ()) -> dict:
    schema = {"type": "object", "properties": props, "additionalProperties": False}
    return schema | ({"required": list(required)} if required else {})


def _arr(items: dict) -> dict:
    return {"type": "array", "items": items}


def _map(values: dict) -> dict:
    return {"type": "object", "additionalProperties": values}


STR, INT, BOOL = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}
INT_OR_STR = {"anyOf": [INT, STR]}
QUANTITY = {"anyOf": [INT, STR], "pattern": QUANTITY_PATTERN}

# What the API server accepts in `metadata` of any object (ObjectMeta, the fields a client sets).
OBJECT_META = _obj(
    {
        "name": STR,
        "generateName": STR,
        "namespace": STR,
        "labels": _map(STR),
        "annotations": _map(STR),
        "finalizers": _arr(STR),
    }
)

# ----- fallback: the fields the kserve/ manifests use, strictly -------------------------------
_PROBE = _obj(
    {
        "httpGet": _obj({"path": STR, "port": INT_OR_STR, "scheme": {"enum": ["HTTP", "HTTPS"]}}, ("port",)),
        "tcpSocket": _obj({"port": INT_OR_STR}, ("port",)),
        "exec": _obj({"command": _arr(STR)}),
        "initialDelaySeconds": INT,
        "periodSeconds": INT,
        "timeoutSeconds": INT,
        "failureThreshold": INT,
        "successThreshold": INT,
    }
)
_KEY_REF = _obj({"name": STR, "key": STR, "optional": BOOL}, ("key",))
_CONTAINER_FIELDS = {
    "name": STR,
    "image": STR,
    "command": _arr(STR),
    "args": _arr(STR),
    "env": _arr(
        _obj(
            {"name": STR, "value": STR, "valueFrom": _obj({"secretKeyRef": _KEY_REF, "configMapKeyRef": _KEY_REF})},
            ("name",),
        )
    ),
    "ports": _arr(
        _obj({"name": STR, "containerPort": INT, "protocol": {"enum": ["TCP", "UDP", "SCTP"]}}, ("containerPort",))
    ),
    "resources": _obj({"requests": _map(QUANTITY), "limits": _map(QUANTITY)}),
    "securityContext": _obj(
        {
            "runAsNonRoot": BOOL,
            "runAsUser": INT,
            "runAsGroup": INT,
            "allowPrivilegeEscalation": BOOL,
            "readOnlyRootFilesystem": BOOL,
            "privileged": BOOL,
            "capabilities": _obj({"add": _arr(STR), "drop": _arr(STR)}),
            "seccompProfile": _obj({"type": STR, "localhostProfile": STR}, ("type",)),
        }
    ),
    "startupProbe": _PROBE,
    "readinessProbe": _PROBE,
    "livenessProbe": _PROBE,
    "volumeMounts": _arr(
        _obj({"name": STR, "mountPath": STR, "readOnly": BOOL, "subPath": STR}, ("name", "mountPath"))
    ),
}
_CONTAINER = _obj(_CONTAINER_FIELDS, ("name",))
_VOLUME = _obj(
    {
        "name": STR,
        "emptyDir": _obj({"medium": STR, "sizeLimit": QUANTITY}),
        "persistentVolumeClaim": _obj({"claimName": STR, "readOnly": BOOL}, ("claimName",)),
        "secret": _obj({"secretName": STR, "optional": BOOL}),
        "configMap": _obj({"name": STR, "optional": BOOL}),
    },
    ("name",),
)
_MODEL_FIELDS = {
    "storageUri": STR,
    "runtimeVersion": STR,
    "protocolVersion": {"enum": ["v1", "v2", "grpc-v1", "grpc-v2"]},
}
_PREDICTOR = _obj(
    {
        "model": _obj(
            {
                **_CONTAINER_FIELDS,
                **_MODEL_FIELDS,
                "modelFormat": _obj({"name": STR, "version": STR}, ("name",)),
                "runtime": STR,
            },
            ("modelFormat",),
        ),
        "triton": _obj({**_CONTAINER_FIELDS, **_MODEL_FIELDS}),
        "containers": _arr(_CONTAINER),
        "minReplicas": INT,
        "maxReplicas": INT,
        "scaleMetric": {"enum": ["cpu", "memory", "concurrency", "rps"]},
        "scaleTarget": INT,
        "containerConcurrency": INT,
        "timeout": INT,
        "annotations": _map(STR),
        "labels": _map(STR),
        "serviceAccountName": STR,
        "nodeSelector": _map(STR),
        "volumes": _arr(_VOLUME),
    }
)


def _kind(api_version: str, kind: str, spec: dict) -> dict:
    return _obj(
        {"apiVersion": {"enum": [api_version]}, "kind": {"enum": [kind]}, "metadata": OBJECT_META, "spec": spec},
        ("apiVersion", "kind", "metadata", "spec"),
    )


FALLBACK: dict[tuple[str, str], dict] = {
    ("serving.kserve.io/v1beta1", "InferenceService"): _kind(
        "serving.kserve.io/v1beta1", "InferenceService", _obj({"predictor": _PREDICTOR}, ("predictor",))
    ),
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): _kind(
        "serving.kserve.io/v1alpha1",
        "ServingRuntime",
        _obj(
            {
                "annotations": _map(STR),
                "supportedModelFormats": _arr(
                    _obj({"name": STR, "version": STR, "autoSelect": BOOL, "priority": INT}, ("name",))
                ),
                "protocolVersions": _arr({"enum": ["v1", "v2", "grpc-v1", "grpc-v2"]}),
                "multiModel": BOOL,
                "disabled": BOOL,
                "containers": _arr(_CONTAINER),
                "volumes": _arr(_VOLUME),
            },
            ("containers",),
        ),
    ),
}


# ----- CRD openAPIV3Schema -> JSON Schema ----------------------------------------------------
def convert(node: dict) -> dict:
    """One CRD structural-schema node as a strict JSON Schema (draft 4, as OpenAPI v3.0 is)."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: convert(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = convert(value)
        elif key in _COMPOSITE:
            out[key] = [convert(sub) for sub in value]
        elif key in ("description", "nullable", "default", "example", "externalDocs") or key.startswith("x-"):
            continue
        else:
            out[key] = value
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
    """(apiVersion, kind) -> JSON Schema for every KServe CRD file found in `crd_dir`."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the InferenceService CRD is 2 MB
    schemas = {}
    for (api_version, kind), filename in CRD_FILES.items():
        path = crd_dir / filename
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: {crd_dir} is incomplete")
        crd = yaml.load(path.read_text(), Loader=loader)
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
        best = jsonschema.exceptions.best_match(err.context)
        return best.message
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
