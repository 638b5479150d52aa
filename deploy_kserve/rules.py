"""The project rules no schema covers, one function per rule over a rendered overlay.

Each rule takes the rendering and the DEVICE its repository is built for, and returns its problems
([] when it holds). RULES names them in the order the report lists them.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from deploy_kserve.objects import Rendered, flag_values, generated_models, get, parse_duration, parse_quantity, walk
from deploy_kserve.observability_rules import rule_logger, rule_tracing
from deploy_kserve.openai_rules import rule_openai_transformer

TRITON_VERSION = "2.51"  # what the generated configs are tested against (nvidia-pytriton 0.7.0)
NGC_RELEASE = {"2.51": "24.10"}[TRITON_VERSION]
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
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
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
        for path, node in walk(obj):
            if isinstance(node, dict) and "nvidia.com/gpu" in node and path.split(".")[-1] in ("limits", "requests"):
                value = node["nvidia.com/gpu"]
                text = str(value)
                if isinstance(value, bool) or not re.fullmatch(r"[1-9][0-9]*", text):
                    problems.append(
                        f"{obj['kind']} {path}.nvidia.com/gpu is {value!r}: GPUs are whole, a positive integer"
                    )
                if path.endswith("limits"):
                    gpus.append(text)
                    requests = get(obj, path.rsplit(".", 1)[0] + ".requests") or {}
                    if "nvidia.com/gpu" in requests and str(requests["nvidia.com/gpu"]) != text:
                        problems.append(f"{obj['kind']} {path}: nvidia.com/gpu requests and limits must be equal")
                elif "nvidia.com/gpu" not in (get(obj, path.rsplit(".", 1)[0] + ".limits") or {}):
                    problems.append(f"{obj['kind']} {path}: extended resources such as nvidia.com/gpu go in limits")
    resources = r.container().get("resources", {})
    if device == "gpu" and "nvidia.com/gpu" not in resources.get("limits", {}):
        problems.append("the gpu overlay's predictor must set nvidia.com/gpu in resources.limits")
    if device == "cpu" and gpus:
        problems.append("the cpu overlay must not ask for nvidia.com/gpu")
    return problems


def _quantities_at(path: str, node: object) -> dict[str, object]:
    """The resource quantities `node` holds at `path`: each entry of requests/limits, or a sizeLimit."""
    leaf = path.rsplit(".", 1)[-1]
    if leaf in ("requests", "limits") and isinstance(node, dict):
        return {f"{path}.{k}": v for k, v in node.items()}
    if leaf == "sizeLimit":
        return {path: node}
    return {}


def _requests_over_limits(label: str, path: str, resources: dict) -> list[str]:
    """Each resource whose request exceeds its limit; unparsable quantities are reported elsewhere."""
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    problems = []
    for name in set(requests) & set(limits):
        try:
            if parse_quantity(requests[name]) > parse_quantity(limits[name]):
                problems.append(f"{label} {path}: the {name} request exceeds its limit")
        except ValueError:
            pass  # reported by rule_quantities' parse
    return problems


def rule_quantities(r: Rendered, device: str) -> list[str]:
    """Every resource quantity parses, and no request exceeds its limit."""
    problems = []
    for obj in r.objects:
        label = f"{obj['kind']}/{obj.get('metadata', {}).get('name')}"
        for path, node in walk(obj):
            for where, value in _quantities_at(path, node).items():
                try:
                    parse_quantity(value)
                except ValueError as exc:
                    problems.append(f"{label} {where}: {exc}")
            if path.rsplit(".", 1)[-1] == "resources" and isinstance(node, dict):
                problems += _requests_over_limits(label, path, node)
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


def _health_probe_problems(container: dict, ports: list) -> list[str]:
    """The startup and liveness probes: httpGet on the serving port."""
    problems = []
    for kind in ("startupProbe", "livenessProbe"):
        probe = container.get(kind)
        if not isinstance(probe, dict) or "httpGet" not in probe:
            problems.append(f"{kind} must be an httpGet probe on Triton's health API")
            continue
        if probe["httpGet"].get("port") not in ports:
            problems.append(f"{kind} port {probe['httpGet'].get('port')} is not the serving port {ports}")
    return problems


def _readiness_problems(container: dict, http_port: str) -> list[str]:
    """The readiness probe runs the image's inference script against Triton, with time for it."""
    readiness = container.get("readinessProbe")
    probe = readiness if isinstance(readiness, dict) else {}
    command = probe.get("exec", {}).get("command", [])
    wanted = ["python3", READINESS_SCRIPT, f"--url=127.0.0.1:{http_port}"]
    if command[:3] != wanted:
        return [
            f"readinessProbe must run real inferences: exec {' '.join(wanted)} "
            "(/v2/health/ready stays 200 while a model whose stub died fails every request)"
        ]
    if probe.get("timeoutSeconds", 1) < READINESS_TIMEOUT:
        return [f"readinessProbe timeoutSeconds must be >= {READINESS_TIMEOUT}: it runs one inference per pipeline"]
    return []


def _startup_budget_problems(startup: dict, predictor: dict) -> list[str]:
    """The startup probe waits long enough for every model to load, and Knative's deadline waits longer."""
    problems = []
    budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
    if budget < MIN_STARTUP_SECONDS:
        problems.append(f"startupProbe allows {budget}s; loading every model needs at least {MIN_STARTUP_SECONDS}s")
    deadline = predictor.get("annotations", {}).get("serving.knative.dev/progress-deadline")
    if deadline is not None:
        try:
            if parse_duration(deadline) <= budget:
                problems.append(f"progress-deadline {deadline} must exceed the startupProbe's {budget}s")
        except ValueError as exc:
            problems.append(str(exc))
    return problems


def rule_probes(r: Rendered, device: str) -> list[str]:
    """Startup, readiness and liveness probes on the serving port, patient enough for model loads."""
    container = r.container()
    ports = [p.get("containerPort") for p in container.get("ports", [])]
    problems = []
    http_port = (flag_values(container.get("args", []), "--http-port") or ["8000"])[-1]
    if [str(p) for p in ports] != [http_port]:
        problems.append(f"the serving ports {ports} must be exactly Triton's --http-port ({http_port})")
    problems += _health_probe_problems(container, ports)
    problems += _readiness_problems(container, http_port)
    problems += _startup_budget_problems(container.get("startupProbe") or {}, r.predictor)
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
    ("OpenAI transformer reaches Triton's gRPC port", rule_openai_transformer),
    ("tracing, when on, exports OTLP spans of every sampled request", rule_tracing),
    ("request logger, when on, sends to an http(s) sink", rule_logger),
]
