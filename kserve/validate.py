"""Validate the kserve/ manifests offline, as strictly as `kubectl apply` against a real cluster.

    python kserve/validate.py               # every overlay; the CRD level when ../shared/kserve-crds exists
    python kserve/validate.py --crds DIR    # KServe CRDs from another folder
    python kserve/validate.py --no-crds     # force the fallback level

For each overlay (kserve/overlays/gpu, kserve/overlays/cpu) it renders the kustomization with the
built-in renderer (and compares it with `kubectl kustomize` when kubectl is installed), checks
every object against a strict schema (see crd_schema.py for the two levels), then applies the
project rules no schema covers (RULES below). It prints what it checked and which validation
level ran, and exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import functools
import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TextIO

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _path in (str(HERE), str(ROOT)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import crd_schema  # noqa: E402 - kserve/ is a folder of scripts, not a package
import kustomize_lite  # noqa: E402

OVERLAYS = {"gpu": "gpu", "cpu": "cpu"}  # overlay folder -> the DEVICE its repository is built for
TRITON_VERSION = "2.51"  # what the generated configs are tested against (nvidia-pytriton 0.7.0)
NGC_RELEASE = {"2.51": "24.10"}[TRITON_VERSION]
IMAGE_PACKAGES = ("numpy", "onnxruntime", "tokenizers", "pillow")
# The mutually exclusive ways to say what a predictor runs (KServe v1beta1 PredictorSpec).
PREDICTOR_IMPLEMENTATIONS = (
    "model",
    "triton",
    "onnx",
    "tensorflow",
    "pytorch",
    "sklearn",
    "xgboost",
    "lightgbm",
    "pmml",
    "paddle",
    "huggingface",
    "containers",
)
MODEL_ONLY_FIELDS = {"modelFormat", "runtime", "storageUri", "storage", "protocolVersion", "runtimeVersion"}
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
QUANTITY = re.compile(r"^([+-]?)(\d+(?:\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?$")
BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
DECIMAL = {"n": "1e-9", "u": "1e-6", "m": "1e-3", "": "1", "k": "1e3", "M": "1e6", "G": "1e9", "T": "1e12"}
DECIMAL |= {"P": "1e15", "E": "1e18"}
MIN_SHM = 1 << 30  # the Python backends move 99.5 MB frames, in batches, through /dev/shm
MIN_STARTUP_SECONDS = 600
# Where kserve/image/Dockerfile puts serving/readiness.py (and serving/supervisor.py), and the least
# time the readiness probe needs for its three inferences.
IMAGE_SCRIPTS = {
    "serving/readiness.py": "/opt/tritonyard/readiness.py",
    "serving/supervisor.py": "/opt/tritonyard/supervisor.py",
}
READINESS_SCRIPT = IMAGE_SCRIPTS["serving/readiness.py"]
READINESS_TIMEOUT = 30
# Every metric Triton 2.51 exports (https://github.com/triton-inference-server/server/blob/r24.10/docs/user_guide/metrics.md).
TRITON_METRICS = {
    *(
        f"nv_inference_{m}"
        for m in ("request_success", "request_failure", "count", "exec_count", "pending_request_count")
    ),
    *(
        f"nv_inference_{m}_duration_us"
        for m in ("request", "queue", "compute_input", "compute_infer", "compute_output")
    ),
    *(f"nv_inference_{m}_summary_us" for m in ("request", "queue", "compute_input", "compute_infer", "compute_output")),
    "nv_inference_first_response_histogram_ms",
    *(f"nv_gpu_{m}" for m in ("utilization", "memory_total_bytes", "memory_used_bytes", "power_usage", "power_limit")),
    "nv_energy_consumption",
    *(f"nv_cpu_{m}" for m in ("utilization", "memory_total_bytes", "memory_used_bytes")),
    *(f"nv_cache_{m}" for m in ("num_hits_per_model", "num_misses_per_model", "hit_duration_per_model")),
    "nv_cache_miss_duration_per_model",
    "nv_pinned_memory_pool_total_bytes",
    "nv_pinned_memory_pool_used_bytes",
}
DASHBOARD = HERE / "monitoring" / "grafana-dashboard.json"


class RuleError(Exception):
    """A rendering that lacks what a rule needs (no InferenceService, two PVCs...)."""


@dataclass
class Check:
    """One named check and what it found; no problems means it passed."""

    name: str
    problems: list[str] = field(default_factory=list)
    skipped: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class Schemas:
    """Which validation level runs, and its schemas for the KServe kinds."""

    level: str  # "crd" or "fallback"
    description: str
    kserve: dict[tuple[str, str], dict]


def select_schemas(crd_dir: Path | None = crd_schema.DEFAULT_CRD_DIR) -> Schemas:
    """The CRD level when `crd_dir` holds KServe's CRDs, else the project's own fallback schema."""
    if crd_dir is not None and Path(crd_dir).is_dir():
        schemas = crd_schema.crd_schemas(Path(crd_dir).resolve())
        return Schemas("crd", f"KServe {crd_schema.KSERVE_VERSION} CRDs from {crd_dir}", schemas)
    why = "disabled with --no-crds" if crd_dir is None else f"{crd_dir} not found"
    return Schemas(
        "fallback",
        f"tritonyard's own strict schema of the fields these manifests use ({why}): unknown fields and wrong "
        "types are rejected, and so is any KServe field these manifests do not use",
        crd_schema.FALLBACK,
    )


# ----- helpers over a rendering -----------------------------------------------------------------
@dataclass
class Rendered:
    """The objects of one rendered overlay, with the lookups the rules need."""

    objects: list[dict]

    def all(self, kind: str) -> list[dict]:
        return [o for o in self.objects if o.get("kind") == kind]

    def one(self, kind: str) -> dict:
        found = self.all(kind)
        if len(found) != 1:
            raise RuleError(f"expected exactly one {kind}, found {len(found)}")
        return found[0]

    def named(self, kind: str, name: str) -> dict | None:
        return next((o for o in self.all(kind) if o.get("metadata", {}).get("name") == name), None)

    @property
    def isvc(self) -> dict:
        return self.one("InferenceService")

    @property
    def predictor(self) -> dict:
        predictor = self.isvc.get("spec", {}).get("predictor")
        if not isinstance(predictor, dict):
            raise RuleError("the InferenceService has no spec.predictor")
        return predictor

    @property
    def model(self) -> dict:
        model = self.predictor.get("model")
        if not isinstance(model, dict):
            raise RuleError("the predictor has no `model` (modelFormat triton + runtime) to check")
        return model

    def runtime(self) -> dict:
        name = self.model.get("runtime")
        runtime = self.named("ServingRuntime", name)
        if runtime is None:
            raise RuleError(f"predictor.model.runtime {name!r} names no ServingRuntime in this rendering")
        return runtime

    def container(self) -> dict:
        """The kserve-container as KServe builds it: the runtime's, overlaid with predictor.model."""
        containers = self.runtime().get("spec", {}).get("containers") or [{}]
        overrides = {k: v for k, v in self.model.items() if k not in MODEL_ONLY_FIELDS}
        return merge_container(containers[0], overrides)

    def uploader(self) -> dict:
        return self.one("Job")


def merge_container(runtime: dict, override: dict) -> dict:
    """KServe's MergeRuntimeContainers: a strategic merge where args are appended, not replaced."""
    merged = _merge(runtime, override)
    merged["args"] = list(runtime.get("args", [])) + list(override.get("args", []))
    return merged


LIST_KEYS = {"env": "name", "volumeMounts": "mountPath", "ports": "containerPort"}


def _merge(base: Any, patch: Any, key: str = "") -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = _merge(base[k], v, k) if k in base else v
        return out
    if isinstance(base, list) and isinstance(patch, list) and key in LIST_KEYS:
        by = LIST_KEYS[key]
        out = [dict(item) for item in base]
        for item in patch:
            match = next((i for i, old in enumerate(out) if old.get(by) == item.get(by)), None)
            if match is None:
                out.append(item)
            else:
                out[match] = _merge(out[match], item)
        return out
    return patch


def flag_values(args: list[str], flag: str) -> list[str]:
    """Values of every `--flag=value` in args."""
    return [a.split("=", 1)[1] for a in args if isinstance(a, str) and a.startswith(flag + "=")]


def parse_quantity(value: Any) -> Decimal:
    """A Kubernetes resource quantity as a number ('8Gi', '500m', 2); ValueError if it is not one."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{value!r} is not a Kubernetes quantity (a string such as 8Gi or 500m, or an integer)")
    match = QUANTITY.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a Kubernetes quantity (use 8Gi, 8G, 500m or 2; not 8GB)")
    sign, number, suffix = match.groups()
    suffix = suffix or ""
    try:
        amount = Decimal(number)
        if suffix in BINARY:
            amount *= BINARY[suffix]
        elif suffix in DECIMAL:
            amount *= Decimal(DECIMAL[suffix])
        else:
            amount *= Decimal(10) ** int(suffix[1:])
    except InvalidOperation as exc:
        raise ValueError(f"{value!r} is not a Kubernetes quantity") from exc
    return -amount if sign == "-" else amount


def parse_duration(value: str) -> float:
    """Seconds in a Go duration such as '45m' or '1h30m'."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise ValueError(f"{value!r} is not a duration such as 45m or 600s")
    return sum(float(n) * units[u] for n, u in parts)


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")


@functools.lru_cache(maxsize=2)
def generated_models(device: str) -> tuple[str, ...]:
    """What `make build DEVICE=device` writes: builders.catalog is the one list."""
    with contextlib.redirect_stdout(sys.stderr):  # keep library banners out of the report
        from builders import catalog

        return tuple(catalog.model_names(device))


# ----- project rules ----------------------------------------------------------------------------
def rule_storage(r: Rendered, device: str) -> list[str]:
    """The storageUri's claim is the PVC, and the uploader writes that claim."""
    uri = r.model.get("storageUri", "")
    match = re.fullmatch(r"pvc://([a-z0-9]([-a-z0-9.]*[a-z0-9])?)/(.+)", uri)
    if not match:
        return [f"storageUri {uri!r} is not pvc://<claim>/<path>"]
    claim, path = match.group(1), match.group(3)
    problems = []
    if path.startswith("/") or ".." in path.split("/"):
        problems.append(f"storageUri path {path!r} must be relative, without '..'")
    pvcs = [p["metadata"]["name"] for p in r.all("PersistentVolumeClaim")]
    if pvcs != [claim]:
        problems.append(f"storageUri claim {claim!r} but the PersistentVolumeClaim(s) here are {pvcs}")
    pod = r.uploader().get("spec", {}).get("template", {}).get("spec", {})
    claims = [v for v in pod.get("volumes", []) if "persistentVolumeClaim" in v]
    if [v["persistentVolumeClaim"].get("claimName") for v in claims] != [claim]:
        problems.append(f"the uploader Job must mount exactly the claim {claim!r}, not {claims}")
    elif claims[0]["persistentVolumeClaim"].get("readOnly"):
        problems.append("the uploader Job mounts the claim read-only: it cannot write the repository")
    return problems


def rule_models(r: Rendered, device: str) -> list[str]:
    """Explicit model control, and one --load-model per generated model, no more, no less."""
    args = r.container().get("args", [])
    problems = []
    for flag in ("--load-model", "--model-control-mode", "--strict-model-config"):
        if flag in args:
            problems.append(f"write {flag}=<value> as one argument, so it can be checked")
    if flag_values(args, "--model-control-mode") != ["explicit"]:
        problems.append("need exactly one --model-control-mode=explicit")
    if flag_values(args, "--strict-model-config") != ["true"]:
        problems.append("need exactly one --strict-model-config=true")
    loaded = flag_values(args, "--load-model")
    expected = generated_models(device)
    duplicates = sorted({m for m in loaded if loaded.count(m) > 1})
    if duplicates:
        problems.append(f"--load-model given twice for {duplicates}")
    missing = [m for m in expected if m not in loaded]
    extra = [m for m in loaded if m not in expected]
    if missing:
        lines = "\n".join(f"        - --load-model={m}" for m in missing)
        problems.append(
            f"models the builder generates (builders.catalog.model_names({device!r})) that are not loaded; "
            f"add to predictor.model.args in kserve/base/inferenceservice.yaml:\n{lines}"
        )
    if extra:
        lines = "\n".join(f"        - --load-model={m}" for m in extra)
        problems.append(f"--load-model of models the builder does not generate for {device}; remove:\n{lines}")
    return problems


def rule_restricted_api(r: Rendered, device: str) -> list[str]:
    """The model-repository API needs a key, and the key comes from a Secret, never the manifest."""
    container = r.container()
    args, env = container.get("args", []), {e.get("name"): e for e in container.get("env", [])}
    problems = []
    for flag in ("--http-restricted-api", "--grpc-restricted-protocol"):
        values = flag_values(args, flag)
        if not values:
            problems.append(f"{flag} is missing: the model-repository API would be open to every client")
            continue
        for value in values:
            apis, _, header = value.partition(":")
            key_name, _, key = header.partition("=")
            if "model-repository" not in apis.split(",") or not key_name:
                problems.append(f"{flag}={apis}:... must restrict model-repository with <header>=<key>")
            ref = re.fullmatch(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", key)
            if not ref:
                problems.append(f"{flag}: the key must be $(ENV_VAR) from a Secret, not written in the manifest")
                continue
            source = env.get(ref.group(1), {}).get("valueFrom", {}).get("secretKeyRef")
            if not source:
                problems.append(f"{flag}: ${ref.group(1)} is not an env var set from a secretKeyRef")
            elif r.named("Secret", source.get("name")) is None:
                problems.append(f"{flag}: the Secret {source.get('name')!r} is not part of this overlay")
    return problems


def rule_device(r: Rendered, device: str) -> list[str]:
    """GPU limits are whole GPUs, and only the gpu overlay asks for them."""
    problems, gpus = [], []
    for obj in r.objects:
        for path, node in _walk(obj):
            if isinstance(node, dict) and "nvidia.com/gpu" in node and path.split(".")[-1] in ("limits", "requests"):
                value = node["nvidia.com/gpu"]
                text = str(value)
                if isinstance(value, bool) or not re.fullmatch(r"[1-9][0-9]*", text):
                    problems.append(
                        f"{obj['kind']} {path}.nvidia.com/gpu is {value!r}: GPUs are whole, a positive integer"
                    )
                if path.endswith("limits"):
                    gpus.append(text)
                    requests = _get(obj, path.rsplit(".", 1)[0] + ".requests") or {}
                    if "nvidia.com/gpu" in requests and str(requests["nvidia.com/gpu"]) != text:
                        problems.append(f"{obj['kind']} {path}: nvidia.com/gpu requests and limits must be equal")
                elif "nvidia.com/gpu" not in (_get(obj, path.rsplit(".", 1)[0] + ".limits") or {}):
                    problems.append(f"{obj['kind']} {path}: extended resources such as nvidia.com/gpu go in limits")
    resources = r.container().get("resources", {})
    if device == "gpu" and "nvidia.com/gpu" not in resources.get("limits", {}):
        problems.append("the gpu overlay's predictor must set nvidia.com/gpu in resources.limits")
    if device == "cpu" and gpus:
        problems.append("the cpu overlay must not ask for nvidia.com/gpu")
    return problems


def _get(obj: Any, path: str) -> Any:
    for part in re.findall(r"[^.\[\]]+", path):
        if isinstance(obj, dict):
            obj = obj.get(part)
        elif isinstance(obj, list) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        else:
            return None
    return obj


def rule_quantities(r: Rendered, device: str) -> list[str]:
    """Every resource quantity parses, and no request exceeds its limit."""
    problems = []
    for obj in r.objects:
        label = f"{obj['kind']}/{obj.get('metadata', {}).get('name')}"
        for path, node in _walk(obj):
            leaf = path.rsplit(".", 1)[-1]
            values = {}
            if leaf in ("requests", "limits") and isinstance(node, dict):
                values = {f"{path}.{k}": v for k, v in node.items()}
            elif leaf == "sizeLimit":
                values = {path: node}
            for where, value in values.items():
                try:
                    parse_quantity(value)
                except ValueError as exc:
                    problems.append(f"{label} {where}: {exc}")
            if leaf == "resources" and isinstance(node, dict):
                requests, limits = node.get("requests") or {}, node.get("limits") or {}
                for name in set(requests) & set(limits):
                    try:
                        if parse_quantity(requests[name]) > parse_quantity(limits[name]):
                            problems.append(f"{label} {path}: the {name} request exceeds its limit")
                    except ValueError:
                        pass  # reported above
    return problems


def rule_name(r: Rendered, device: str) -> list[str]:
    """The InferenceService name is DNS-1035, short enough for Knative's revision names."""
    name = r.isvc.get("metadata", {}).get("name", "")
    if not DNS_1035.match(name) or len(name) > 63:
        return [f"InferenceService name {name!r} is not DNS-1035 (a-z, 0-9, '-', starting with a letter, <= 63)"]
    if len(f"{name}-predictor-00001") > 63:
        return [f"InferenceService name {name!r} is too long for Knative revisions ({name}-predictor-00001 > 63)"]
    return []


def rule_predictor(r: Rendered, device: str) -> list[str]:
    """Exactly one predictor implementation: model, triton, ..., or containers."""
    chosen = [k for k in PREDICTOR_IMPLEMENTATIONS if r.predictor.get(k)]
    if len(chosen) != 1:
        return [f"the predictor must set exactly one of {list(PREDICTOR_IMPLEMENTATIONS)}; it sets {chosen}"]
    return []


def rule_runtime(r: Rendered, device: str) -> list[str]:
    """The predictor's runtime exists, serves its model format, and runs the image of our Triton release."""
    runtime, model = r.runtime(), r.model
    problems = []
    formats = [f.get("name") for f in runtime.get("spec", {}).get("supportedModelFormats", [])]
    if model.get("modelFormat", {}).get("name") not in formats:
        problems.append(f"runtime {runtime['metadata']['name']} supports {formats}, not {model.get('modelFormat')}")
    image = r.container().get("image", "")
    tag = image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else ""
    if not tag.startswith(NGC_RELEASE):
        problems.append(f"image {image!r}: its tag must start with {NGC_RELEASE} (Triton {TRITON_VERSION})")
    if r.container().get("name") != "kserve-container":
        problems.append("the runtime's container must be named kserve-container")
    return problems


def rule_shm(r: Rendered, device: str) -> list[str]:
    """/dev/shm is a memory-backed emptyDir big enough for the Python backends, within the memory limit."""
    container = r.container()
    mount = next((m for m in container.get("volumeMounts", []) if m.get("mountPath") == "/dev/shm"), None)
    if mount is None:
        return ["no volumeMount at /dev/shm: the container default (64 Mi) breaks the Python backends"]
    volume = next((v for v in r.predictor.get("volumes", []) if v.get("name") == mount.get("name")), {})
    empty_dir = volume.get("emptyDir")
    if not isinstance(empty_dir, dict) or empty_dir.get("medium") != "Memory":
        return [f"/dev/shm volume {mount.get('name')!r} must be an emptyDir with medium: Memory"]
    try:
        size = parse_quantity(empty_dir.get("sizeLimit", "0"))
        memory = container.get("resources", {}).get("limits", {}).get("memory")
        problems = [] if size >= MIN_SHM else ["/dev/shm sizeLimit must be at least 1Gi"]
        if memory is None or parse_quantity(memory) <= size:
            problems.append("the memory limit must exceed /dev/shm's sizeLimit: the pod is charged for it")
    except ValueError as exc:
        return [str(exc)]
    return problems


def rule_security(r: Rendered, device: str) -> list[str]:
    """Non-root, no privilege escalation, and the PVC read-only in the predictor."""
    problems = []
    annotation = r.isvc.get("metadata", {}).get("annotations", {}).get("storage.kserve.io/readonly")
    if annotation != "true":
        problems.append('set metadata.annotations["storage.kserve.io/readonly"]: "true" (KServe mounts the PVC)')
    pod = r.uploader().get("spec", {}).get("template", {}).get("spec", {})
    for label, ctx, pod_ctx in [("predictor", r.container().get("securityContext", {}), {})] + [
        (f"uploader {c.get('name')}", c.get("securityContext", {}), pod.get("securityContext", {}))
        for c in pod.get("containers", [])
    ]:
        if not (ctx.get("runAsNonRoot") or pod_ctx.get("runAsNonRoot")):
            problems.append(f"{label}: runAsNonRoot must be true")
        if ctx.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{label}: allowPrivilegeEscalation must be false")
        if ctx.get("privileged"):
            problems.append(f"{label}: must not be privileged")
    return problems


def rule_probes(r: Rendered, device: str) -> list[str]:
    """Startup, readiness and liveness probes on the serving port, patient enough for model loads."""
    container = r.container()
    ports = [p.get("containerPort") for p in container.get("ports", [])]
    problems = []
    http_port = (flag_values(container.get("args", []), "--http-port") or ["8000"])[-1]
    if [str(p) for p in ports] != [http_port]:
        problems.append(f"the serving ports {ports} must be exactly Triton's --http-port ({http_port})")
    for kind in ("startupProbe", "livenessProbe"):
        probe = container.get(kind)
        if not isinstance(probe, dict) or "httpGet" not in probe:
            problems.append(f"{kind} must be an httpGet probe on Triton's health API")
            continue
        if probe["httpGet"].get("port") not in ports:
            problems.append(f"{kind} port {probe['httpGet'].get('port')} is not the serving port {ports}")
    readiness = container.get("readinessProbe")
    command = (readiness or {}).get("exec", {}).get("command", []) if isinstance(readiness, dict) else []
    wanted = ["python3", READINESS_SCRIPT, f"--url=127.0.0.1:{http_port}"]
    if command[:3] != wanted:
        problems.append(
            f"readinessProbe must run real inferences: exec {' '.join(wanted)} "
            "(/v2/health/ready stays 200 while a model whose stub died fails every request)"
        )
    elif readiness.get("timeoutSeconds", 1) < READINESS_TIMEOUT:
        problems.append(
            f"readinessProbe timeoutSeconds must be >= {READINESS_TIMEOUT}: it runs one inference per pipeline"
        )
    startup = container.get("startupProbe") or {}
    budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
    if budget < MIN_STARTUP_SECONDS:
        problems.append(f"startupProbe allows {budget}s; loading every model needs at least {MIN_STARTUP_SECONDS}s")
    deadline = r.predictor.get("annotations", {}).get("serving.knative.dev/progress-deadline")
    if deadline is not None:
        try:
            if parse_duration(deadline) <= budget:
                problems.append(f"progress-deadline {deadline} must exceed the startupProbe's {budget}s")
        except ValueError as exc:
            problems.append(str(exc))
    return problems


def rule_autoscaling(r: Rendered, device: str) -> list[str]:
    """Concurrency-based scaling between sane bounds that the PVC's access mode allows."""
    p = r.predictor
    low, high = p.get("minReplicas"), p.get("maxReplicas")
    problems = []
    if not isinstance(low, int) or low < 1:
        problems.append("minReplicas must be >= 1: a cold start loads every model (minutes)")
    if not isinstance(high, int) or (isinstance(low, int) and high < low):
        problems.append("maxReplicas must be set and >= minReplicas")
    if p.get("scaleMetric") != "concurrency" or not isinstance(p.get("scaleTarget"), int) or p["scaleTarget"] < 1:
        problems.append("scale on scaleMetric: concurrency with a positive scaleTarget")
    mode = r.isvc.get("metadata", {}).get("annotations", {}).get("serving.kserve.io/deploymentMode")
    if mode not in ("Knative", "Serverless"):
        problems.append(f"deploymentMode {mode!r}: concurrency scaling needs Knative mode")
    modes = {m for pvc in r.all("PersistentVolumeClaim") for m in pvc.get("spec", {}).get("accessModes", [])}
    if not modes & {"ReadWriteMany", "ReadOnlyMany"} and high != 1:
        problems.append(
            f"the PVC is {sorted(modes)}: replicas on other nodes cannot mount it, so maxReplicas must be 1"
        )
    return problems


def rule_prometheus(r: Rendered, device: str) -> list[str]:
    """Prometheus scrape annotations point at Triton's metrics port."""
    notes = r.predictor.get("annotations", {})
    ports = flag_values(r.container().get("args", []), "--metrics-port") or ["8002"]
    problems = []
    if notes.get("prometheus.io/scrape") != "true":
        problems.append('predictor.annotations["prometheus.io/scrape"] must be "true"')
    if notes.get("prometheus.io/port") != ports[-1]:
        problems.append(f'predictor.annotations["prometheus.io/port"] must be Triton\'s metrics port {ports[-1]}')
    return problems


RULES: list[tuple[str, Callable[[Rendered, str], list[str]]]] = [
    ("PVC, storageUri and uploader claim agree", rule_storage),
    ("--load-model lines == builders.catalog.model_names()", rule_models),
    ("model-repository API restricted, key from a Secret", rule_restricted_api),
    ("GPU limits are whole GPUs, on the gpu overlay only", rule_device),
    ("resource quantities parse, requests <= limits", rule_quantities),
    ("InferenceService name is DNS-1035", rule_name),
    ("exactly one predictor implementation", rule_predictor),
    ("runtime exists and runs Triton " + TRITON_VERSION, rule_runtime),
    ("/dev/shm is a big enough memory emptyDir", rule_shm),
    ("non-root, no privilege escalation, read-only PVC", rule_security),
    ("probes suit slow model loads", rule_probes),
    ("autoscaling on concurrency", rule_autoscaling),
    ("Prometheus scrapes Triton's metrics port", rule_prometheus),
]


# ----- running the checks -----------------------------------------------------------------------
def check_schemas(objects: list[dict], schemas: Schemas) -> list[Check]:
    """One check per object: the KServe schema of the chosen level, or kubernetes-validate."""
    checks = []
    for obj in objects:
        key = (obj.get("apiVersion", ""), obj.get("kind", ""))
        label = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        if key in schemas.kserve:
            checks.append(Check(f"schema {label} ({schemas.level})", crd_schema.errors(obj, schemas.kserve[key])))
        elif key[0].startswith("serving.kserve.io/"):
            checks.append(Check(f"schema {label}", [f"no {schemas.level} schema for {key}"]))
        else:
            checks.append(
                Check(
                    f"schema {label} (kubernetes-validate {crd_schema.K8S_VERSION} strict)", crd_schema.core_errors(obj)
                )
            )
    return checks


def check_rules(objects: list[dict], device: str) -> list[Check]:
    """Every project rule over one rendered overlay."""
    rendered = Rendered(objects)
    checks = []
    for name, rule in RULES:
        try:
            checks.append(Check(f"rule: {name}", rule(rendered, device)))
        except RuleError as exc:
            checks.append(Check(f"rule: {name}", [str(exc)]))
    return checks


def validate_objects(objects: list[dict], device: str, schemas: Schemas) -> list[Check]:
    """Schema checks, then project rules, for the objects of one rendered overlay."""
    return check_schemas(objects, schemas) + check_rules(objects, device)


def validate_overlay(folder: Path, device: str, schemas: Schemas, compare_kubectl: bool = True) -> list[Check]:
    """Render one overlay (strict YAML, the built-in renderer), compare with kubectl, validate."""
    try:
        objects = kustomize_lite.render(folder)
    except (kustomize_lite.ManifestError, OSError) as exc:
        return [Check("render (built-in kustomize subset)", [str(exc)])]
    checks = [Check(f"render (built-in kustomize subset): {len(objects)} objects")]
    if compare_kubectl:
        checks.append(compare_with_kubectl(folder, objects))
    return checks + validate_objects(objects, device, schemas)


def compare_with_kubectl(folder: Path, objects: list[dict]) -> Check:
    """The built-in rendering must equal `kubectl kustomize`, when kubectl is installed."""
    check = Check("render equals `kubectl kustomize`")
    try:
        real = kustomize_lite.kubectl_render(folder)
    except kustomize_lite.ManifestError as exc:
        check.problems.append(str(exc))
        return check
    if real is None:
        check.skipped = "kubectl not on PATH"
        return check
    ours = {kustomize_lite.identity(o): o for o in objects}
    theirs = {kustomize_lite.identity(o): o for o in real}
    for key in sorted(set(ours) | set(theirs)):
        if ours.get(key) != theirs.get(key):
            check.problems.append(f"{key} differs between the built-in renderer and kubectl kustomize")
    return check


def check_image(image_dir: Path = HERE / "image", root: Path = ROOT) -> Check:
    """The Dockerfile builds FROM the NGC release of our Triton version, with our packages and serving scripts."""
    check = Check(f"image: FROM nvcr.io/nvidia/tritonserver:{NGC_RELEASE}-py3 with {', '.join(IMAGE_PACKAGES)}")
    dockerfile = (image_dir / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", dockerfile, re.M)
    if froms != [f"nvcr.io/nvidia/tritonserver:{NGC_RELEASE}-py3"]:
        check.problems.append(f"Dockerfile FROM {froms}: must be nvcr.io/nvidia/tritonserver:{NGC_RELEASE}-py3")
    pins = {}
    for line in (image_dir / "requirements.txt").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)\s*==\s*(\S+)", line)
        if match:
            pins[match.group(1).lower()] = match.group(2)
    for package in IMAGE_PACKAGES:
        if package not in pins:
            check.problems.append(f"requirements.txt must pin {package}==<version>")
    if not pins.get("numpy", "1.").startswith("1."):
        check.problems.append("numpy must stay 1.x: Triton 24.10's Python-backend stub is built against numpy 1")
    check.problems += _image_copies(dockerfile, image_dir, root)
    return check


def _image_copies(dockerfile: str, image_dir: Path, root: Path) -> list[str]:
    """Every COPY source is let through Dockerfile.dockerignore; the serving scripts are copied, stdlib-only."""
    problems = []
    copies = dict(re.findall(r"^COPY\s+(\S+)\s+(\S+)\s*$", dockerfile, re.M))
    ignore = image_dir / "Dockerfile.dockerignore"
    allowed = set(re.findall(r"^!(\S+)", ignore.read_text(), re.M)) if ignore.is_file() else set()
    for source in copies:
        if source not in allowed:
            problems.append(f"COPY {source}: add !{source} to {ignore.name} (the context is the repository root)")
    for script, target in IMAGE_SCRIPTS.items():
        if copies.get(script) != target:
            problems.append(f"Dockerfile must COPY {script} {target}")
        problems += [f"{script}: {p}" for p in _stdlib_only(root / script)]
    return problems


def _stdlib_only(path: Path) -> list[str]:
    """A script the image runs alone on its Python 3.10 must parse as 3.10 and import only the standard library."""
    try:
        tree = ast.parse(path.read_text(), feature_version=(3, 10))
    except (OSError, SyntaxError) as exc:
        return [f"does not parse as Python 3.10: {exc}"]
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and not n.level}
    outside = sorted(m for m in imported if m.split(".")[0] not in sys.stdlib_module_names | {"__future__"})
    return [f"imports {', '.join(outside)}: it is copied alone into the image"] if outside else []


def check_dashboard(path: Path = DASHBOARD) -> Check:
    """The Grafana dashboard is JSON and queries only metrics Triton exports."""
    check = Check(f"Grafana dashboard {path.name}: JSON, only Triton {TRITON_VERSION} metric names")
    try:
        dashboard = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        check.problems.append(f"{path}: {exc}")
        return check
    exprs = [t.get("expr", "") for p in dashboard.get("panels", []) for t in p.get("targets", [])]
    if not exprs:
        check.problems.append("no panel queries anything")
    for expr in exprs:
        for metric in re.findall(r"\bnv_[a-z_]+", expr):
            base = re.sub(r"_(sum|count|bucket)$", "", metric)
            if metric not in TRITON_METRICS and base not in TRITON_METRICS:
                check.problems.append(f"{metric!r} is not a Triton {TRITON_VERSION} metric")
    return check


def run(overlays: dict[str, str], schemas: Schemas, out: TextIO = sys.stdout, kserve_dir: Path = HERE) -> int:
    """Validate every overlay, print a report, return the exit status (0 when all passed)."""
    out.write(f"validation level: {schemas.level}: {schemas.description}\n")
    failed = 0
    groups: list[tuple[str, list[Check]]] = []
    for name, device in overlays.items():
        folder = kserve_dir / "overlays" / name
        groups.append(
            (f"overlay {name} (repository built with DEVICE={device})", validate_overlay(folder, device, schemas))
        )
    groups.append(
        (
            "image and monitoring",
            [check_image(kserve_dir / "image"), check_dashboard(kserve_dir / "monitoring" / DASHBOARD.name)],
        )
    )
    for title, checks in groups:
        out.write(f"{title}\n")
        for check in checks:
            status = "skip" if check.skipped else ("ok" if check.ok else "FAIL")
            note = f" ({check.skipped})" if check.skipped else ""
            out.write(f"  {status:<4} {check.name}{note}\n")
            for problem in check.problems:
                out.write(f"       - {problem}\n")
            failed += not check.ok
    out.write(f"{'FAILED' if failed else 'passed'}: {failed} failing check(s); validation level {schemas.level}\n")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python kserve/validate.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--crds", type=Path, default=crd_schema.DEFAULT_CRD_DIR, help="folder with KServe's CRDs")
    parser.add_argument("--no-crds", action="store_true", help="use the fallback schema even if the CRDs exist")
    parser.add_argument("--overlay", action="append", choices=sorted(OVERLAYS), help="only these overlays")
    args = parser.parse_args(argv)
    if not args.no_crds and args.crds != crd_schema.DEFAULT_CRD_DIR and not args.crds.is_dir():
        parser.error(f"--crds {args.crds}: no such folder")  # asked for explicitly: no silent fallback
    schemas = select_schemas(None if args.no_crds else args.crds)
    overlays = {name: OVERLAYS[name] for name in (args.overlay or OVERLAYS)}
    return run(overlays, schemas)


if __name__ == "__main__":
    sys.exit(main())
