"""The batch scoring Job (kserve/batch): the shipped manifests pass, and each rule rejects a Job broken on purpose."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from deploy_kserve import batch_job, render, schema, tools
from deploy_kserve.objects import Rendered
from tests.kserve.conftest import KSERVE, failing, find


@pytest.fixture(scope="module")
def batch_objects(kubectl: tools.Kubectl) -> list[dict]:
    return render.render(KSERVE / "batch", kubectl)


@pytest.fixture
def job(batch_objects: list[dict]) -> dict:
    return copy.deepcopy(find(batch_objects, "Job"))


def container(job: dict) -> dict:
    return job["spec"]["template"]["spec"]["containers"][0]


def set_arg(job: dict, flag: str, value: str) -> None:
    args = container(job)["args"]
    args[args.index(flag) + 1] = value


def command_problems(job: dict, batch_objects: list[dict], gpu_objects: list[dict]) -> list[str]:
    others = [o for o in batch_objects if o["kind"] != "Job"]
    return batch_job.rule_command(job, Rendered([*others, job]), Rendered(gpu_objects))


def test_batch_job_passes_every_check_when_manifests_are_as_shipped(schemas, kubectl) -> None:
    checks = batch_job.validate_batch(schemas, kubectl)

    assert failing(checks) == {}
    assert any("schema Job/tritonyard-batch (kubernetes-validate" in c.name for c in checks)
    assert sum("against overlay" in c.name for c in checks) == 2  # gpu and cpu


def test_batch_job_schema_rejects_field_when_it_is_misspelled(job: dict) -> None:
    job["spec"]["backofLimit"] = job["spec"].pop("backoffLimit")
    assert any("backofLimit" in p for p in schema.core_errors(job))


@pytest.mark.parametrize(
    "breaks,words",
    [
        (lambda j: j["spec"].pop("backoffLimit"), "backoffLimit must be 1..6"),
        (lambda j: j["spec"].__setitem__("backoffLimit", 50), "backoffLimit must be 1..6"),
        (lambda j: j["spec"].pop("activeDeadlineSeconds"), "activeDeadlineSeconds must be set"),
        (lambda j: j["spec"].pop("podFailurePolicy"), "FailJob on exit codes [1, 2]"),
        (lambda j: j["spec"]["template"]["spec"].__setitem__("restartPolicy", "OnFailure"), "restartPolicy"),
    ],
)
def test_batch_job_retry_rule_fails_when_retries_are_unbounded_or_pointless(job: dict, breaks, words: str) -> None:
    breaks(job)
    assert any(words in p for p in batch_job.rule_retries(job)), batch_job.rule_retries(job)


@pytest.mark.parametrize(
    "breaks,words",
    [
        (lambda pod, c: pod["securityContext"].__setitem__("runAsUser", 0), "non-zero runAsUser"),
        (lambda pod, c: pod["securityContext"].pop("runAsNonRoot"), "runAsNonRoot: true"),
        (lambda pod, c: pod["securityContext"].pop("fsGroup"), "fsGroup"),
        (lambda pod, c: c["securityContext"].__setitem__("readOnlyRootFilesystem", False), "readOnlyRootFilesystem"),
        (lambda pod, c: c["securityContext"].pop("capabilities"), "drop ALL"),
        (lambda pod, c: pod.pop("automountServiceAccountToken"), "automountServiceAccountToken"),
    ],
)
def test_batch_job_security_rule_fails_when_the_pod_can_run_as_root_or_escalate(job: dict, breaks, words) -> None:
    breaks(job["spec"]["template"]["spec"], container(job))
    assert any(words in p for p in batch_job.rule_non_root(job)), batch_job.rule_non_root(job)


@pytest.mark.parametrize(
    "flag,value,words",
    [
        ("--url", "tritonyard-predictor.default.svc.cluster.local:80", "cluster-local address"),
        ("--url", "tritonyard.tritonyard.svc.cluster.local", "cluster-local address"),  # the transformer, not Triton
        ("--entry", "ensemble", "--entry ensemble_jpeg"),
        ("--out", "/tmp/results.csv", "--out /tmp/results.csv must lie on a writable PVC mount"),
        ("--out", "/mnt/frames/results/results.xlsx", "suffix"),
        ("--timeout", "-1", "--timeout must be positive"),
    ],
)
def test_batch_job_command_rule_fails_when_args_miss_the_predictor_or_the_volume(
    job, batch_objects, gpu_objects, flag: str, value: str, words: str
) -> None:
    set_arg(job, flag, value)
    problems = command_problems(job, batch_objects, gpu_objects)
    assert any(words in p for p in problems), problems


def test_batch_job_command_rule_fails_when_the_client_does_not_know_a_flag(job, batch_objects, gpu_objects) -> None:
    container(job)["args"].append("--parallel=8")
    assert command_problems(job, batch_objects, gpu_objects) == [
        "clients.clo refuses the args: python -m clients.clo: error: unrecognized arguments: --parallel=8"
    ]


def test_batch_job_command_rule_fails_when_frames_share_the_model_repository_claim(
    job, batch_objects, gpu_objects
) -> None:
    pvc = copy.deepcopy(find(batch_objects, "PersistentVolumeClaim"))
    pvc["metadata"]["name"] = "tritonyard-models"
    job["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] = "tritonyard-models"
    problems = batch_job.rule_command(job, Rendered([pvc, job]), Rendered(gpu_objects))
    assert problems == ["the frames claim must not be the model repository's ['tritonyard-models']"]


@pytest.mark.parametrize(
    "old,new,words",
    [
        ("COPY clients/batch_table.py clients/batch_table.py\n", "", "must COPY clients/batch_table.py"),
        ("tqdm==4.70.1 ", "", "pip install tqdm"),
        ("USER 1000\n", "", "non-root USER"),
    ],
)
def test_batch_image_check_fails_when_the_dockerfile_lacks_what_the_command_needs(
    kserve_copy: Path, old: str, new: str, words: str
) -> None:
    dockerfile = kserve_copy / "image" / "Dockerfile.batch"
    assert old in dockerfile.read_text()
    dockerfile.write_text(dockerfile.read_text().replace(old, new))

    problems = batch_job.check_dockerfile(dockerfile)
    assert any(words in p for p in problems), problems


def test_batch_image_check_fails_when_a_copied_file_is_not_let_through_the_dockerignore(kserve_copy: Path) -> None:
    ignore = kserve_copy / "image" / "Dockerfile.batch.dockerignore"
    ignore.write_text(ignore.read_text().replace("!clients/batch_summary.py\n", ""))

    problems = batch_job.check_dockerfile(kserve_copy / "image" / "Dockerfile.batch")
    assert problems == ["COPY clients/batch_summary.py: add !clients/batch_summary.py to Dockerfile.batch.dockerignore"]
