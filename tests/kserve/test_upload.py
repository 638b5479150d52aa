"""`make kserve-upload` (deploy_kserve/upload.py): repository checks and the kubectl commands it runs."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from deploy_kserve import tools, upload
from deploy_kserve.objects import generated_models


def fake_repository(root: Path, device: str, skip: tuple[str, ...] = ()) -> Path:
    """Folders with a config.pbtxt for every generated model; ONNX-ish ones on KIND_GPU when device is gpu."""
    kind = "KIND_GPU" if device == "gpu" else "KIND_CPU"
    for name in generated_models(device):
        if name in skip:
            continue
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(f'name: "{name}"\ninstance_group {{ kind: {kind} count: 1 }}\n')
    return root


def test_target_reads_claim_path_and_namespace_when_the_overlay_renders(kubectl: tools.Kubectl) -> None:
    where = upload.target("gpu")
    assert (where.namespace, where.job_name, where.container) == ("tritonyard", "tritonyard-uploader", "uploader")
    assert where.destination == "/mnt/pvc/model_repository"
    assert where.staging == "/mnt/pvc/.upload-staging"


def test_upload_prints_the_pinned_kubectl_commands_when_dry_run_and_repository_matches(
    tmp_path: Path, kubectl: tools.Kubectl
) -> None:
    repo = fake_repository(tmp_path / "model_repository", "gpu")
    out = io.StringIO()
    upload.upload(repo, "gpu", dry_run=True, out=out)
    commands = [line for line in out.getvalue().splitlines() if line.startswith(f"$ {kubectl.path} ")]
    assert commands[0] == (
        f"$ {kubectl.path} --namespace tritonyard delete job tritonyard-uploader"
        " --ignore-not-found --cascade=foreground --wait=true"
    )
    assert (
        f"$ {kubectl.path} --namespace tritonyard cp {repo} '<uploader-pod>:/mnt/pvc/.upload-staging/repo' -c uploader"
        in commands
    )
    swap = next(c for c in commands if "mv -t" in c)
    assert swap.index("rm -f /mnt/pvc/model_repository/.upload-complete") < swap.index(
        "touch /mnt/pvc/model_repository/.upload-complete"
    )
    assert commands[-1].endswith("-c uploader -- touch /tmp/upload-done")


def test_upload_refuses_when_the_repository_was_built_for_the_other_device(tmp_path: Path) -> None:
    repo = fake_repository(tmp_path / "model_repository", "cpu")
    with pytest.raises(
        upload.UploadError, match="built for DEVICE=cpu, this overlay serves DEVICE=gpu: run `make build DEVICE=gpu`"
    ):
        upload.upload(repo, "gpu", dry_run=True, out=io.StringIO())


def test_upload_refuses_when_a_generated_model_is_missing(tmp_path: Path) -> None:
    repo = fake_repository(tmp_path / "model_repository", "cpu", skip=("ensemble_jpeg",))
    assert upload.check_repository(repo, "cpu") == [f"{repo} lacks ['ensemble_jpeg']: run `make build DEVICE=cpu`"]


def test_upload_refuses_when_the_repository_does_not_exist(tmp_path: Path) -> None:
    assert upload.check_repository(tmp_path / "nope", "gpu") == [
        f"{tmp_path / 'nope'} does not exist: run `make build DEVICE=gpu` first"
    ]


def test_upload_main_exits_1_with_the_reason_when_the_repository_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert upload.main(["--overlay", "cpu", "--repository", str(tmp_path / "nope"), "--dry-run"]) == 1
    assert "kserve-upload: " in capsys.readouterr().err
