"""Project rules for seldon/v1: a SeldonDeployment running our Triton image as Seldon's TRITON_SERVER.

What Seldon Core v1.18's operator does with such a graph node, and so what these rules hold it to:
- the componentSpecs container named like the graph node is the Triton container; Seldon keeps its
  image and args when given (otherwise: its own image, every model loaded, an open repository API);
- it overwrites the container's ports with the node's endpoint httpPort/grpcPort (9000/9500 unless
  set), so Triton must listen there;
- `pvc://claim/path` is copied by an init container into /mnt/models;
- componentSpecs metadata annotations reach the pod last, so they decide Prometheus scraping.
The rules shared with KServe (models loaded, restricted API, GPUs, quantities, /dev/shm) run on the
Triton container through `SeldonV1`, which answers the lookups those rules make.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from deploy_kserve import rules
from deploy_kserve.objects import Rendered, RuleError, flag_values

IMPLEMENTATION = "TRITON_SERVER"
PROTOCOL = "v2"
MOUNT = "/mnt/models"  # where Seldon's storage initializer copies modelUri
REPOSITORY_PATH = "model_repository"  # the repository's folder on the PVC (kserve/ serves the same one)
DEFAULT_PORTS = {"httpPort": 9000, "grpcPort": 9500}  # Seldon's first container's ports
TRITON_COMMANDS = ("tritonserver", "/opt/tritonserver/bin/tritonserver")


class SeldonV1(Rendered):
    """A rendered seldon/v1: the one SeldonDeployment, its graph node and the Triton container."""

    @property
    def sdep(self) -> dict:
        return self.one("SeldonDeployment")

    @property
    def seldon_predictor(self) -> dict:
        predictors = self.sdep.get("spec", {}).get("predictors") or []
        if len(predictors) != 1:
            raise RuleError(f"expected exactly one predictor in the SeldonDeployment, found {len(predictors)}")
        return predictors[0]

    @property
    def graph(self) -> dict:
        return self.seldon_predictor.get("graph") or {}

    def component(self) -> dict:
        """The componentSpecs entry whose pod holds the container named like the graph node."""
        name = self.graph.get("name")
        for spec in self.seldon_predictor.get("componentSpecs") or []:
            if any(c.get("name") == name for c in spec.get("spec", {}).get("containers", [])):
                return spec
        raise RuleError(f"no componentSpecs container is named {name!r} like the graph node: Seldon would add its own")

    @property
    def predictor(self) -> dict:  # what the shared rules read `volumes` from: the pod spec
        return self.component().get("spec", {})

    def container(self) -> dict:
        name = self.graph.get("name")
        return next(c for c in self.predictor.get("containers", []) if c.get("name") == name)

    def ports(self) -> dict[str, int]:
        endpoint = self.graph.get("endpoint") or {}
        return {k: endpoint.get(k) or default for k, default in DEFAULT_PORTS.items()}


def rule_graph(r: SeldonV1, device: str) -> list[str]:
    """Protocol v2, one TRITON_SERVER node, modelUri on this rendering's PVC at the repository's path."""
    problems = []
    protocol = r.sdep.get("spec", {}).get("protocol")
    if protocol != PROTOCOL:
        problems.append(f"spec.protocol is {protocol!r}: Triton speaks the v2 protocol, set protocol: {PROTOCOL}")
    graph = r.graph
    if graph.get("implementation") != IMPLEMENTATION:
        problems.append(f"graph.implementation is {graph.get('implementation')!r}, not {IMPLEMENTATION}")
    if graph.get("children"):
        problems.append("graph.children: the Triton node serves every pipeline itself; Seldon chains nothing")
    uri = graph.get("modelUri", "")
    match = re.fullmatch(r"pvc://([a-z0-9]([-a-z0-9.]*[a-z0-9])?)/(.+)", uri)
    if not match:
        return problems + [f"graph.modelUri {uri!r} is not pvc://<claim>/<path>"]
    claim, path = match.group(1), match.group(3)
    pvcs = [p["metadata"]["name"] for p in r.all("PersistentVolumeClaim")]
    if pvcs != [claim]:
        problems.append(f"graph.modelUri claim {claim!r} but the PersistentVolumeClaim(s) here are {pvcs}")
    if path != REPOSITORY_PATH:
        problems.append(f"graph.modelUri path {path!r}: the repository is at {REPOSITORY_PATH} on the claim")
    return problems


def rule_container(r: SeldonV1, device: str) -> list[str]:
    """Our image of Triton's release, our args (not Seldon's defaults), listening on the node's ports."""
    container, ports = r.container(), r.ports()
    problems = []
    image = container.get("image", "")
    if not image.rsplit(":", 1)[-1].startswith(rules.NGC_RELEASE) or ":" not in image.rsplit("/", 1)[-1]:
        problems.append(f"image {image!r}: give our image, tagged {rules.NGC_RELEASE} (Triton {rules.TRITON_VERSION})")
    args = container.get("args") or []
    if not args or args[0] not in TRITON_COMMANDS:
        problems.append(
            "args must start with tritonserver: without args Seldon runs its defaults (every model, "
            "--strict-model-config=false, the repository API open)"
        )
    if flag_values(args, "--model-repository") != [MOUNT]:
        problems.append(f"need exactly one --model-repository={MOUNT}: Seldon's initializer copies modelUri there")
    for flag, key in (("--http-port", "httpPort"), ("--grpc-port", "grpcPort")):
        if flag_values(args, flag) != [str(ports[key])]:
            problems.append(
                f"{flag} must be {ports[key]}: Seldon exposes graph.endpoint.{key} ({ports[key]}) "
                f"and overwrites the container's ports with it; args give {flag_values(args, flag)}"
            )
    security = container.get("securityContext") or {}
    if not security.get("runAsNonRoot") or security.get("allowPrivilegeEscalation") is not False:
        problems.append("securityContext: runAsNonRoot true and allowPrivilegeEscalation false")
    return problems


def rule_prometheus(r: SeldonV1, device: str) -> list[str]:
    """The pod's scrape annotations (componentSpecs metadata wins over Seldon's) point at Triton's metrics."""
    notes = r.component().get("metadata", {}).get("annotations", {})
    port = (flag_values(r.container().get("args") or [], "--metrics-port") or ["8002"])[-1]
    want = {"prometheus.io/scrape": "true", "prometheus.io/port": port, "prometheus.io/path": "/metrics"}
    return [
        f'componentSpecs metadata.annotations["{key}"] must be "{value}" (Triton\'s metrics), not {notes.get(key)!r}'
        for key, value in want.items()
        if notes.get(key) != value
    ]


def rule_probes(r: SeldonV1, device: str) -> list[str]:
    """Readiness runs real inferences on Seldon's HTTP port; startup waits for every model to load."""
    container, port = r.container(), r.ports()["httpPort"]
    problems = []
    command = ((container.get("readinessProbe") or {}).get("exec") or {}).get("command", [])
    wanted = ["python3", rules.READINESS_SCRIPT, f"--url=127.0.0.1:{port}"]
    if command[:3] != wanted:
        problems.append(f"readinessProbe must run real inferences: exec {' '.join(wanted)}")
    for kind in ("startupProbe", "livenessProbe"):
        probe = container.get(kind) or {}
        if (probe.get("httpGet") or {}).get("port") != port:
            problems.append(f"{kind} must be an httpGet probe on Triton's HTTP port {port}")
    startup = container.get("startupProbe") or {}
    budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
    if budget < rules.MIN_STARTUP_SECONDS:
        problems.append(f"startupProbe allows {budget}s; loading every model needs {rules.MIN_STARTUP_SECONDS}s")
    return problems


def rule_models(r: SeldonV1, device: str) -> list[str]:
    """KServe's rule on the Triton container: one --load-model per generated model."""
    where = "the triton container's args in seldon/v1/seldondeployment.yaml"
    return [
        p.replace("predictor.model.args in kserve/base/inferenceservice.yaml", where)
        for p in rules.rule_models(r, device)
    ]


def rule_uploader(r: SeldonV1, device: str) -> list[str]:
    """The uploader Job (kserve/base, `make kserve-upload`) writes the claim the SeldonDeployment reads."""
    pod = r.uploader().get("spec", {}).get("template", {}).get("spec", {})
    claims = [
        v["persistentVolumeClaim"].get("claimName") for v in pod.get("volumes", []) if "persistentVolumeClaim" in v
    ]
    pvcs = [p["metadata"]["name"] for p in r.all("PersistentVolumeClaim")]
    return [] if claims == pvcs else [f"the uploader Job mounts {claims}, the PVC(s) here are {pvcs}"]


RULES: list[tuple[str, Callable[[SeldonV1, str], list[str]]]] = [
    ("protocol v2, one TRITON_SERVER node, modelUri on the PVC", rule_graph),
    ("our image and args, on Seldon's ports", rule_container),
    ("--load-model lines == builders.catalog.model_names()", rule_models),
    ("model-repository API restricted, key from a Secret", rules.rule_restricted_api),
    ("GPU limits are whole GPUs", rules.rule_device),
    ("resource quantities parse, requests <= limits", rules.rule_quantities),
    ("/dev/shm is a big enough memory emptyDir", rules.rule_shm),
    ("probes suit slow model loads", rule_probes),
    ("Prometheus scrapes Triton's metrics port", rule_prometheus),
    ("the uploader writes the claim served", rule_uploader),
]
