"""Project rules for seldon/v2: a Seldon Core 2 Server running our Triton image, its Models, the Pipeline.

Seldon Core 2 (scheduler/pkg/agent/repository/triton at the CRDs' commit) loads every Model into
Triton under `<name>_<version>`, rewriting the `name` in its config.pbtxt. A Triton ensemble's steps
and gpt2's BLS call to `gpt2_stream` keep the original names, so they never resolve there: the
Models are the steps of `ensemble_jpeg` and a Pipeline chains them. These rules derive what the
Models and the Pipeline must be from the builder's own ensemble (builders.catalog), so the two
cannot drift apart.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable

from deploy_kserve import rules
from deploy_kserve.objects import Rendered, RuleError, parse_quantity
from deploy_kserve.seldon_v1_rules import REPOSITORY_PATH

SERVER_CONFIG = "triton"
CAPABILITY = "tritonyard"  # the Server's extra capability; every Model requires it
ENSEMBLE = "ensemble_jpeg"  # the Pipeline's counterpart in the repository
RENAMED = "Seldon Core 2 loads each Model as <name>_<version>, so"


def model_name(folder: str) -> str:
    """The Kubernetes name of a repository folder's Model: DNS-1123, so '_' becomes '-'."""
    return folder.replace("_", "-")


@functools.lru_cache(maxsize=2)
def _specs(device: str) -> dict[str, object]:
    with contextlib.redirect_stdout(sys.stderr):  # keep library banners out of the report
        from builders import catalog

        return {s.name: s for s in catalog.all_specs(device)}


def backend_capability(folder: str, device: str) -> str:
    """The Seldon Triton capability a step's config needs: onnx for the gpu target's ONNX steps, else python."""
    from builders.triton_config import OnnxModel

    return "onnx" if isinstance(_specs(device)[folder], OnnxModel) and device == "gpu" else "python"


def expected_pipeline(pipeline: str, device: str) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """(step name, input references) per step, and the output references, of the ensemble as a Pipeline."""
    ensemble = _specs(device)[ENSEMBLE]
    producers: dict[str, str] = {}  # ensemble tensor -> "<step>.outputs.<model tensor>"
    steps = []
    for step in ensemble.steps:
        name = model_name(step.model)
        inputs = [producers.get(tensor, f"{pipeline}.inputs.{tensor}") for tensor in step.input_map.values()]
        steps.append((name, inputs))
        producers |= {tensor: f"{name}.outputs.{own}" for own, tensor in step.output_map.items()}
    return steps, [producers[t.name] for t in ensemble.outputs]


class SeldonV2(Rendered):
    """A rendered seldon/v2: the one Server, its Models, the one Pipeline."""

    @property
    def server(self) -> dict:
        return self.one("Server")

    @property
    def pipeline(self) -> dict:
        return self.one("Pipeline")

    def server_container(self, name: str) -> dict:
        containers = self.server.get("spec", {}).get("podSpec", {}).get("containers", [])
        found = next((c for c in containers if c.get("name") == name), None)
        if found is None:
            raise RuleError(f"the Server's podSpec has no {name!r} container (the ServerConfig's names it)")
        return found

    def volume(self, name: str) -> dict:
        volumes = self.server.get("spec", {}).get("podSpec", {}).get("volumes", [])
        return next((v for v in volumes if v.get("name") == name), {})

    def pvc_mount(self) -> str:
        """Where the rclone container mounts this rendering's PVC; RuleError when it does not."""
        pvcs = [p["metadata"]["name"] for p in self.all("PersistentVolumeClaim")]
        volumes = self.server.get("spec", {}).get("podSpec", {}).get("volumes", [])
        named = [v["name"] for v in volumes if (v.get("persistentVolumeClaim") or {}).get("claimName") in pvcs]
        mounts = [m for m in self.server_container("rclone").get("volumeMounts", []) if m.get("name") in named]
        if len(mounts) != 1:
            raise RuleError(f"the rclone container must mount the PVC {pvcs} once (Models are copied from it)")
        return mounts[0]["mountPath"].rstrip("/")


def rule_server(r: SeldonV2, device: str) -> list[str]:
    """Seldon's triton ServerConfig, our image, the capability, a GPU, the PVC read-only, a big /dev/shm."""
    spec, triton = r.server.get("spec", {}), r.server_container("triton")
    problems = []
    if spec.get("serverConfig") != SERVER_CONFIG:
        problems.append(f"serverConfig is {spec.get('serverConfig')!r}, not {SERVER_CONFIG}")
    if CAPABILITY not in spec.get("extraCapabilities", []):
        problems.append(f"extraCapabilities must include {CAPABILITY!r}: only this Server has our Python packages")
    image = triton.get("image", "")
    if ":" not in image.rsplit("/", 1)[-1] or not image.rsplit(":", 1)[-1].startswith(rules.NGC_RELEASE):
        problems.append(f"triton image {image!r}: give our image, tagged {rules.NGC_RELEASE}")
    limits = (triton.get("resources") or {}).get("limits", {})
    if device == "gpu" and str(limits.get("nvidia.com/gpu", "")) != "1":
        problems.append("the triton container must have nvidia.com/gpu: 1 in its limits (the gpu build)")
    claim = next((v for v in spec.get("podSpec", {}).get("volumes", []) if "persistentVolumeClaim" in v), {})
    if not claim.get("persistentVolumeClaim", {}).get("readOnly"):
        problems.append("the PVC volume must be readOnly: Seldon only reads the repository")
    shm = r.volume("dshm").get("emptyDir") or {}
    try:
        if shm.get("medium") != "Memory" or parse_quantity(shm.get("sizeLimit", "0")) < rules.MIN_SHM:
            problems.append("the dshm volume (the ServerConfig's /dev/shm) must be a Memory emptyDir of >= 1Gi")
        elif "memory" not in limits or parse_quantity(limits["memory"]) <= parse_quantity(shm["sizeLimit"]):
            problems.append("the triton memory limit must exceed /dev/shm's sizeLimit: the pod is charged for it")
    except ValueError as exc:
        problems.append(str(exc))
    return problems


BLS_CALLERS = {"gpt2": "gpt2_stream"}  # python_backends/gpt2 forwards every request to gpt2_stream by name


def _why_not_a_model(folder: str, device: str) -> str:
    """Why a repository model other than the ensemble's steps is no Model here."""
    from builders.triton_config import Ensemble

    if isinstance(_specs(device).get(folder), Ensemble):
        return f"{RENAMED} the steps this ensemble names are not in Triton; the Pipeline replaces it"
    if folder in BLS_CALLERS:
        return f"{RENAMED} its BLS call to {BLS_CALLERS[folder]} names a model Triton does not have"
    return f"not a step of {ENSEMBLE}"


def _model_problems(name: str, spec: dict, folder: str, mount: str, device: str) -> list[str]:
    problems = []
    want = f"{mount}/{REPOSITORY_PATH}/{folder}"
    if spec.get("storageUri") != want:
        problems.append(f"Model {name}: storageUri {spec.get('storageUri')!r} must be {want!r}")
    needs = {CAPABILITY, backend_capability(folder, device)}
    if not needs <= set(spec.get("requirements", [])):
        problems.append(f"Model {name}: requirements must include {sorted(needs)}")
    return problems


def rule_models(r: SeldonV2, device: str) -> list[str]:
    """One Model per step of the ensemble, each from its repository folder, needing our Server's capability."""
    folders = {model_name(s.model): s.model for s in _specs(device)[ENSEMBLE].steps}
    mount = r.pvc_mount()
    models = {m["metadata"]["name"]: m.get("spec", {}) for m in r.all("Model")}
    problems = []
    for name, spec in models.items():
        if name in folders:
            problems += _model_problems(name, spec, folders[name], mount, device)
        else:
            problems.append(f"Model {name}: {_why_not_a_model(name.replace('-', '_'), device)}")
    missing = sorted(set(folders) - set(models))
    if missing:
        problems.append(f"no Model for the steps {missing} of {ENSEMBLE}")
    return problems


def rule_pipeline(r: SeldonV2, device: str) -> list[str]:
    """The Pipeline is the ensemble: the same steps in order, each reading what the ensemble feeds it."""
    name = r.pipeline["metadata"]["name"]
    spec = r.pipeline.get("spec", {})
    steps, outputs = expected_pipeline(name, device)
    problems = []
    given = [s.get("name") for s in spec.get("steps", [])]
    if given != [s for s, _ in steps]:
        return [f"Pipeline {name} steps {given} must be {ENSEMBLE}'s, in order: {[s for s, _ in steps]}"]
    for step, (step_name, inputs) in zip(spec["steps"], steps):
        if sorted(step.get("inputs", [])) != sorted(inputs):
            problems.append(f"step {step_name}: inputs {step.get('inputs', [])} must be {inputs} (as in {ENSEMBLE})")
        if step.get("tensorMap"):
            problems.append(f"step {step_name}: no tensorMap; the models share the ensemble's tensor names")
    got = spec.get("output", {}).get("steps", [])
    if sorted(got) != sorted(outputs):
        problems.append(f"output.steps {got} must be {outputs}: {ENSEMBLE}'s outputs")
    return problems


def rule_uploader(r: SeldonV2, device: str) -> list[str]:
    """The uploader Job (kserve/base, `make kserve-upload`) writes the claim the Server reads."""
    pod = r.uploader().get("spec", {}).get("template", {}).get("spec", {})
    claims = [
        v["persistentVolumeClaim"].get("claimName") for v in pod.get("volumes", []) if "persistentVolumeClaim" in v
    ]
    server = [
        v["persistentVolumeClaim"].get("claimName")
        for v in r.server["spec"]["podSpec"].get("volumes", [])
        if "persistentVolumeClaim" in v
    ]
    return [] if claims == server else [f"the uploader Job writes {claims}, the Server reads {server}"]


RULES: list[tuple[str, Callable[[SeldonV2, str], list[str]]]] = [
    ("Server: triton config, our image, GPU, PVC read-only, /dev/shm", rule_server),
    (f"Models == the steps of {ENSEMBLE}, from the PVC", rule_models),
    (f"Pipeline == {ENSEMBLE}'s steps and wiring", rule_pipeline),
    ("resource quantities parse, requests <= limits", rules.rule_quantities),
    ("the uploader writes the claim served", rule_uploader),
]
