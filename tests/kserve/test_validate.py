"""The validator: the shipped manifests pass, and each check rejects a manifest broken on purpose."""

from __future__ import annotations

import io
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from deploy_kserve import OVERLAYS, ROOT, schema, tools, validate
from deploy_kserve.files import check_image
from deploy_kserve.objects import merge_container, parse_quantity
from tests.kserve.conftest import failing, find


def isvc(objects: list[dict]) -> dict:
    return find(objects, "InferenceService")


def model(objects: list[dict]) -> dict:
    return isvc(objects)["spec"]["predictor"]["model"]


def problems_of(objects: list[dict], schemas: schema.Schemas, device: str = "gpu") -> dict[str, list[str]]:
    return failing(validate.validate_objects(objects, device, schemas))


def only_rule(problems: dict[str, list[str]], fragment: str) -> list[str]:
    """The problems of the single failing check, which must be the rule named by `fragment`."""
    assert len(problems) == 1, problems
    ((name, found),) = problems.items()
    assert fragment in name
    return found


def test_validator_passes_when_manifests_are_as_shipped(schemas: schema.Schemas, kubectl: tools.Kubectl) -> None:
    out = io.StringIO()
    assert validate.run(OVERLAYS, schemas, kubectl, out) == 0, out.getvalue()
    assert out.getvalue().startswith("validation level: crd: KServe v0.20.0 CRDs from ")
    assert "FAIL" not in out.getvalue()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "deploy_kserve.validate", *args], capture_output=True, text=True, cwd=ROOT, timeout=300
    )


def test_validator_cli_reports_its_levels_and_kubectl_when_run_as_make_does() -> None:
    done = run_cli("--overlay", "cpu")
    assert done.returncode == 0, done.stdout + done.stderr
    pins = tools.pins()
    lines = done.stdout.splitlines()
    assert lines[0].startswith("validation level: crd: KServe v0.20.0 CRDs from ")
    assert lines[1] == f"core kinds: kubernetes-validate {schema.K8S_VERSION}, strict"
    assert lines[2] == (
        f"renderer: kubectl kustomize, kubectl {pins['KUBECTL_VERSION']} (kustomize {pins['KUSTOMIZE_VERSION']})"
        " at .tools/bin/kubectl"
    )
    assert "overlay cpu (repository built with DEVICE=cpu)" in lines
    assert "  ok   render (kubectl kustomize): 8 objects" in lines
    assert lines[-1] == "passed: 0 failing check(s); validation level crd"


def test_validator_cli_exits_2_naming_the_path_when_the_crd_folder_is_absent(tmp_path: Path) -> None:
    done = run_cli("--crds", str(tmp_path / "kserve-crds"))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith(f"kserve-validate: KServe's CRDs are not at {tmp_path / 'kserve-crds'}: ")


# ----- the negative cases the issue names -------------------------------------------------------
def test_schema_rejects_field_when_storage_uri_is_misspelled_storage_url(
    gpu_objects: list[dict], schemas: schema.Schemas
) -> None:
    m = model(gpu_objects)
    m["storageUrl"] = m.pop("storageUri")
    problems = problems_of(gpu_objects, schemas)
    schema_check = f"schema InferenceService/tritonyard ({schemas.level})"
    assert problems[schema_check] == [
        "spec.predictor.model: Additional properties are not allowed ('storageUrl' was unexpected)"
    ]


def test_schema_rejects_args_when_given_as_a_string(gpu_objects: list[dict], schemas: schema.Schemas) -> None:
    model(gpu_objects)["args"] = "--model-control-mode=explicit --load-model=ensemble"
    problems = problems_of(gpu_objects, schemas)
    assert problems[f"schema InferenceService/tritonyard ({schemas.level})"] == [
        "spec.predictor.model.args: '--model-control-mode=explicit --load-model=ensemble' is not of type 'array'"
    ]


def test_validator_rejects_quantity_when_memory_is_8gb(gpu_objects: list[dict], schemas: schema.Schemas) -> None:
    model(gpu_objects)["resources"]["limits"]["memory"] = "8GB"
    problems = problems_of(gpu_objects, schemas)
    (schema_problem,) = problems[f"schema InferenceService/tritonyard ({schemas.level})"]
    assert schema_problem.startswith("spec.predictor.model.resources.limits.memory: '8GB' does not match")
    assert any(
        "'8GB' is not a Kubernetes quantity" in p
        for p in problems["rule: resource quantities parse, requests <= limits"]
    )


def test_schema_rejects_inference_service_when_predictor_is_missing(
    gpu_objects: list[dict], schemas: schema.Schemas
) -> None:
    del isvc(gpu_objects)["spec"]["predictor"]
    problems = problems_of(gpu_objects, schemas)
    assert problems[f"schema InferenceService/tritonyard ({schemas.level})"] == [
        "spec: 'predictor' is a required property"
    ]


def test_rule_rejects_load_model_when_the_model_does_not_exist(
    gpu_objects: list[dict], schemas: schema.Schemas
) -> None:
    model(gpu_objects)["args"].append("--load-model=no_such_model")
    found = only_rule(problems_of(gpu_objects, schemas), "--load-model lines")
    assert found == [
        "--load-model of models the builder does not generate for gpu; remove:\n        - --load-model=no_such_model"
    ]


def test_rule_lists_the_missing_lines_when_a_generated_model_is_not_loaded(
    gpu_objects: list[dict], schemas: schema.Schemas
) -> None:
    args = model(gpu_objects)["args"]
    args.remove("--load-model=ensemble_jpeg")
    args.remove("--load-model=yolov8")
    (problem,) = only_rule(problems_of(gpu_objects, schemas), "--load-model lines")
    assert problem.endswith("\n        - --load-model=yolov8\n        - --load-model=ensemble_jpeg")


def test_validator_rejects_duplicate_key_when_yaml_repeats_one(
    kserve_copy: Path, schemas: schema.Schemas, kubectl: tools.Kubectl
) -> None:
    runtime = kserve_copy / "base" / "servingruntime.yaml"
    runtime.write_text(
        runtime.read_text().replace("  multiModel: false\n", "  multiModel: false\n  multiModel: true\n")
    )
    out = io.StringIO()
    assert validate.run({"cpu": "cpu"}, schemas, kubectl, out, kserve_dir=kserve_copy) == 1
    report = out.getvalue()
    assert f"duplicate key 'multiModel' at line 22 of {runtime} (first at line 21)" in report  # the file, from us
    assert "  FAIL render (kubectl kustomize)\n" in report  # and kustomize refuses it too
    assert 'mapping key "multiModel" already defined' in report


# ----- the other project rules ------------------------------------------------------------------
@pytest.mark.parametrize("where", ["pvc", "uri", "job"])
def test_rule_rejects_claim_when_pvc_storage_uri_and_uploader_disagree(
    gpu_objects: list[dict], schemas: schema.Schemas, where: str
) -> None:
    if where == "pvc":
        find(gpu_objects, "PersistentVolumeClaim")["metadata"]["name"] = "other-claim"
    elif where == "uri":
        model(gpu_objects)["storageUri"] = "pvc://other-claim/model_repository"
    else:
        job = find(gpu_objects, "Job")
        job["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] = "other-claim"
    found = only_rule(problems_of(gpu_objects, schemas), "PVC, storageUri and uploader")
    assert "other-claim" in found[0]


@pytest.mark.parametrize("gpus", ["0.5", "500m", 0, "two", True])
def test_rule_rejects_gpu_limit_when_not_a_whole_gpu(gpu_objects: list[dict], gpus: object) -> None:
    model(gpu_objects)["resources"]["limits"]["nvidia.com/gpu"] = gpus
    problems = failing(validate.check_rules(gpu_objects, "gpu"))
    assert any("GPUs are whole" in p for p in problems["rule: GPU limits are whole GPUs, on the gpu overlay only"])


def test_rule_rejects_gpu_request_when_cpu_overlay_asks_for_one(rendered_overlays: dict[str, list[dict]]) -> None:
    found = only_rule(failing(validate.check_rules(rendered_overlays["gpu"], "cpu")), "GPU limits")
    assert found == ["the cpu overlay must not ask for nvidia.com/gpu"]


@pytest.mark.parametrize("name", ["Tritonyard", "3d-vision", "triton_yard", "x" * 64, "a-" * 24 + "b"])
def test_rule_rejects_name_when_not_dns_1035_or_too_long(gpu_objects: list[dict], name: str) -> None:
    isvc(gpu_objects)["metadata"]["name"] = name
    problems = failing(validate.check_rules(gpu_objects, "gpu"))
    assert "rule: InferenceService name is DNS-1035" in problems


def test_rule_rejects_predictor_when_two_implementations_are_set(gpu_objects: list[dict]) -> None:
    isvc(gpu_objects)["spec"]["predictor"]["triton"] = {"storageUri": "pvc://tritonyard-models/model_repository"}
    found = only_rule(failing(validate.check_rules(gpu_objects, "gpu")), "exactly one predictor")
    assert "it sets ['model', 'triton']" in found[0]


def test_rule_rejects_key_when_it_is_written_into_the_args(gpu_objects: list[dict]) -> None:
    args = model(gpu_objects)["args"]
    for i, arg in enumerate(args):
        args[i] = arg.replace("$(TRITON_ADMIN_KEY)", "hunter2")
    found = only_rule(failing(validate.check_rules(gpu_objects, "gpu")), "restricted")
    assert all("not written in the manifest" in p for p in found) and len(found) == 2


def test_rule_rejects_restriction_when_model_repository_is_left_open(gpu_objects: list[dict]) -> None:
    args = model(gpu_objects)["args"]
    model(gpu_objects)["args"] = [a for a in args if not a.startswith("--grpc-restricted-protocol=")]
    found = only_rule(failing(validate.check_rules(gpu_objects, "gpu")), "restricted")
    assert found == ["--grpc-restricted-protocol is missing: the model-repository API would be open to every client"]


def test_rule_rejects_shm_when_it_is_the_default_size(gpu_objects: list[dict]) -> None:
    isvc(gpu_objects)["spec"]["predictor"]["volumes"][0]["emptyDir"]["sizeLimit"] = "64Mi"
    found = only_rule(failing(validate.check_rules(gpu_objects, "gpu")), "/dev/shm")
    assert found == ["/dev/shm sizeLimit must be at least 1Gi"]


def test_rule_rejects_security_when_container_may_escalate_or_pvc_is_writable(gpu_objects: list[dict]) -> None:
    model(gpu_objects)["securityContext"]["allowPrivilegeEscalation"] = True
    isvc(gpu_objects)["metadata"]["annotations"]["storage.kserve.io/readonly"] = "false"
    found = only_rule(failing(validate.check_rules(gpu_objects, "gpu")), "non-root")
    assert len(found) == 2


def test_rule_rejects_probes_when_startup_budget_is_too_short(gpu_objects: list[dict]) -> None:
    model(gpu_objects)["startupProbe"]["failureThreshold"] = 6
    found = only_rule(failing(validate.check_rules(gpu_objects, "gpu")), "probes")
    assert found == ["startupProbe allows 60s; loading every model needs at least 600s"]


def test_rule_rejects_replicas_when_the_pvc_is_read_write_once(gpu_objects: list[dict]) -> None:
    find(gpu_objects, "PersistentVolumeClaim")["spec"]["accessModes"] = ["ReadWriteOnce"]
    found = only_rule(failing(validate.check_rules(gpu_objects, "gpu")), "autoscaling")
    assert "maxReplicas must be 1" in found[0]


def test_rule_rejects_autoscaling_when_scaling_on_cpu(gpu_objects: list[dict]) -> None:
    isvc(gpu_objects)["spec"]["predictor"]["scaleMetric"] = "cpu"
    found = only_rule(failing(validate.check_rules(gpu_objects, "gpu")), "autoscaling")
    assert found == ["scale on scaleMetric: concurrency with a positive scaleTarget"]


def test_rule_rejects_image_when_its_tag_is_not_the_ngc_release(gpu_objects: list[dict]) -> None:
    find(gpu_objects, "ServingRuntime")["spec"]["containers"][0]["image"] = "nvcr.io/nvidia/tritonserver:24.11-py3"
    found = only_rule(failing(validate.check_rules(gpu_objects, "gpu")), "runtime")
    assert "must start with 24.10" in found[0]


def test_rule_rejects_scrape_port_when_it_is_not_the_metrics_port(gpu_objects: list[dict]) -> None:
    isvc(gpu_objects)["spec"]["predictor"]["annotations"]["prometheus.io/port"] = "8000"
    found = only_rule(failing(validate.check_rules(gpu_objects, "gpu")), "Prometheus")
    assert "8002" in found[0]


def test_merge_container_appends_args_and_merges_env_when_isvc_overrides_the_runtime() -> None:
    runtime = {"name": "kserve-container", "args": ["tritonserver"], "env": [{"name": "A", "value": "1"}]}
    override = {"args": ["--x=1"], "env": [{"name": "A", "value": "2"}, {"name": "B", "value": "3"}]}
    merged = merge_container(runtime, override)
    assert merged["args"] == ["tritonserver", "--x=1"]
    assert merged["env"] == [{"name": "A", "value": "2"}, {"name": "B", "value": "3"}]
    assert merged["name"] == "kserve-container"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("8Gi", Decimal(8 * 2**30)),
        ("500m", Decimal("0.5")),
        (2, Decimal(2)),
        ("1e3", Decimal(1000)),
        ("4G", Decimal(4e9)),
    ],
)
def test_parse_quantity_returns_the_amount_when_quantity_is_valid(text: object, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["8GB", "8 Gi", "", "Gi", 0.5, None, "1.2.3"])
def test_parse_quantity_raises_when_quantity_is_invalid(text: object) -> None:
    with pytest.raises(ValueError, match="quantity"):
        parse_quantity(text)


def test_check_image_rejects_dockerfile_when_from_is_another_release(kserve_copy) -> None:
    dockerfile = kserve_copy / "image" / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace("tritonserver:24.10-py3", "tritonserver:24.12-py3"))
    check = check_image(kserve_copy / "image")
    assert check.problems == [
        "Dockerfile FROM ['nvcr.io/nvidia/tritonserver:24.12-py3']: must be nvcr.io/nvidia/tritonserver:24.10-py3"
    ]


def test_check_image_rejects_numpy_when_pinned_to_2(kserve_copy) -> None:
    reqs = kserve_copy / "image" / "requirements.txt"
    reqs.write_text(reqs.read_text().replace("numpy==1.26.4", "numpy==2.1.0"))
    assert any("numpy must stay 1.x" in p for p in check_image(kserve_copy / "image").problems)


def test_rule_rejects_readiness_when_it_only_asks_triton_health(gpu_objects: list[dict]) -> None:
    model(gpu_objects)["readinessProbe"] = {"httpGet": {"path": "/v2/health/ready", "port": 8000}}
    found = only_rule(failing(validate.check_rules(gpu_objects, "gpu")), "probes")
    assert len(found) == 1 and found[0].startswith("readinessProbe must run real inferences: exec python3 ")


def test_rule_rejects_readiness_when_its_timeout_cannot_fit_three_inferences(gpu_objects: list[dict]) -> None:
    model(gpu_objects)["readinessProbe"]["timeoutSeconds"] = 3
    found = only_rule(failing(validate.check_rules(gpu_objects, "gpu")), "probes")
    assert found == ["readinessProbe timeoutSeconds must be >= 30: it runs one inference per pipeline"]


def test_check_image_rejects_dockerfile_when_a_serving_script_is_not_copied(kserve_copy) -> None:
    dockerfile = kserve_copy / "image" / "Dockerfile"
    dockerfile.write_text(
        dockerfile.read_text().replace("COPY serving/supervisor.py /opt/tritonyard/supervisor.py\n", "")
    )
    problems = check_image(kserve_copy / "image").problems
    assert problems == ["Dockerfile must COPY serving/supervisor.py /opt/tritonyard/supervisor.py"]


READINESS = "serving/readiness.py"


def test_check_image_rejects_copy_when_the_dockerignore_keeps_it_out(kserve_copy) -> None:
    ignore = kserve_copy / "image" / "Dockerfile.dockerignore"
    ignore.write_text(ignore.read_text().replace("!serving/readiness.py\n", ""))
    problems = check_image(kserve_copy / "image").problems
    assert problems == [
        f"COPY {READINESS}: add !{READINESS} to Dockerfile.dockerignore (the context is the repository root)"
    ]


def test_check_image_rejects_script_when_it_imports_what_the_image_lacks(kserve_copy, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "serving").mkdir(parents=True)
    (root / "ours").mkdir()
    (root / "ours" / "__init__.py").write_text("import json\n")
    # numpy is in the image; requests is not; ours/ is a project package the Dockerfile does not copy.
    (root / "serving" / "readiness.py").write_text("import numpy\nimport requests\nimport ours\nimport json\n")
    (root / "serving" / "supervisor.py").write_text("match x:\n    case 1: pass\n")  # 3.10 syntax: fine
    problems = check_image(kserve_copy / "image", root).problems
    assert problems == [
        "serving/readiness.py: serving/readiness.py imports ours: the Dockerfile must COPY ours/__init__.py "
        "/opt/tritonyard/ours/__init__.py",
        "serving/readiness.py: serving/readiness.py imports requests: neither the standard library, the image's "
        "packages, nor ours",
    ]
