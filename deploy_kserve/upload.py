"""`make kserve-upload`: copy the built model repository onto the PVC the InferenceService reads.

    python -m deploy_kserve.upload --overlay gpu --repository model_repository     # make kserve-upload
    python -m deploy_kserve.upload --overlay cpu --dry-run      # print the kubectl commands only

The claim, the path inside it, the namespace and the uploader Job all come from the rendered
overlay (the pinned `kubectl kustomize`), so they cannot drift from the manifests. Steps: check
that the repository holds exactly the models `builders.catalog` generates, built for the overlay's
device; (re)create the uploader Job; `kubectl cp` into a staging folder on the PVC; move the staged
models into <claim>/<path> in place (the predictor mounts that folder, so it must stay the same
folder); write the `.upload-complete` marker the Triton image waits for; let the Job finish. Every
kubectl command runs the pinned kubectl of `make kubectl-tools`, on the current (or --context) cluster.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from deploy_kserve import KSERVE_DIR, OVERLAYS, render, tools
from deploy_kserve.objects import Rendered, RuleError, generated_models

MARKER = ".upload-complete"
STAGING = ".upload-staging"
DONE_FILE = "/tmp/upload-done"  # the uploader Job's container exits once this exists
POD_PLACEHOLDER = "<uploader-pod>"


class UploadError(RuntimeError):
    """Why the upload cannot go ahead (wrong repository, kubectl failure...)."""


@dataclass(frozen=True)
class Target:
    """Where the repository goes, read from the rendered overlay."""

    namespace: str
    job: dict
    container: str
    isvc: str
    destination: str  # <uploader mount of the claim>/<path from storageUri>
    staging: str

    @property
    def job_name(self) -> str:
        return self.job["metadata"]["name"]


def target(overlay: str, kserve_dir: Path = KSERVE_DIR) -> Target:
    """Read the claim, path, namespace and uploader Job from `kserve/overlays/<overlay>`."""
    rendered = Rendered(render.render(kserve_dir / "overlays" / overlay))
    match = re.fullmatch(r"pvc://([^/]+)/(.+)", rendered.model.get("storageUri", ""))
    if not match:
        raise UploadError("the InferenceService's storageUri is not pvc://<claim>/<path>")
    claim, path = match.groups()
    job = rendered.uploader()
    pod = job["spec"]["template"]["spec"]
    volume = next(v["name"] for v in pod["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") == claim)
    container = pod["containers"][0]
    mount = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == volume)
    return Target(
        namespace=job["metadata"].get("namespace", "default"),
        job=job,
        container=container["name"],
        isvc=rendered.isvc["metadata"]["name"],
        destination=f"{mount.rstrip('/')}/{path.strip('/')}",
        staging=f"{mount.rstrip('/')}/{STAGING}",
    )


def repository_device(repository: Path) -> str:
    """'gpu' if any model of the repository has a KIND_GPU instance group, else 'cpu'."""
    configs = sorted(repository.glob("*/config.pbtxt"))
    return "gpu" if any(re.search(r"\bKIND_GPU\b", c.read_text()) for c in configs) else "cpu"


def check_repository(repository: Path, device: str) -> list[str]:
    """Problems that make `repository` the wrong thing to upload for `device`; [] when it is right."""
    build = f"make build DEVICE={device}"
    if not repository.is_dir():
        return [f"{repository} does not exist: run `{build}` first"]
    present = sorted(d.name for d in repository.iterdir() if (d / "config.pbtxt").is_file())
    expected = generated_models(device)
    problems = []
    missing = [m for m in expected if m not in present]
    extra = [m for m in present if m not in expected]
    if missing:
        problems.append(f"{repository} lacks {missing}: run `{build}`")
    if extra:
        problems.append(f"{repository} has models the builder does not generate: {extra}: run `{build}`")
    built_for = repository_device(repository) if present else None
    if built_for and built_for != device:
        problems.append(
            f"{repository} was built for DEVICE={built_for}, this overlay serves DEVICE={device}: run `{build}`"
        )
    return problems


class Kubectl:
    """Runs kubectl in one namespace; with dry_run it only prints the commands."""

    def __init__(self, binary: Path, namespace: str, context: str | None, dry_run: bool, out=sys.stdout) -> None:
        self.base = [str(binary), *(["--context", context] if context else []), "--namespace", namespace]
        self.dry_run, self.out = dry_run, out

    def __call__(self, *args: str, stdin: str | None = None, stdin_label: str = "", capture: bool = False) -> str:
        cmd = [*self.base, *args]
        self.out.write(f"$ {shlex.join(cmd)}{f'  < {stdin_label}' if stdin is not None else ''}\n")
        self.out.flush()
        if self.dry_run:
            return POD_PLACEHOLDER if capture else ""
        done = subprocess.run(cmd, input=stdin, text=True, capture_output=capture)
        if done.returncode != 0:
            raise UploadError(f"`{shlex.join(cmd)}` failed ({done.returncode}): {(done.stderr or '').strip()}")
        return (done.stdout or "").strip()


def wait_for_pod(kubectl: Kubectl, job: str, timeout: float = 180.0) -> str:
    """The name of the Job's pod, once it exists and is Ready."""
    deadline = time.monotonic() + timeout
    while True:
        names = kubectl(
            "get", "pods", "-l", f"job-name={job}", "-o", "jsonpath={.items[*].metadata.name}", capture=True
        )
        if names:
            name = names.split()[0]
            break
        if time.monotonic() > deadline:
            raise UploadError(f"no pod for Job {job} after {timeout:.0f}s: kubectl describe job {job}")
        time.sleep(2)
    kubectl("wait", "--for=condition=Ready", f"pod/{name}", "--timeout=300s")
    return name


def upload(repository: Path, overlay: str, context: str | None = None, dry_run: bool = False, out=sys.stdout) -> None:
    """Check the repository, then copy it onto the overlay's PVC (see the module docstring)."""
    device = OVERLAYS[overlay]
    problems = check_repository(repository, device)
    if problems:
        raise UploadError("\n".join(problems))
    where = target(overlay)
    kubectl = Kubectl(tools.kubectl().path, where.namespace, context, dry_run, out)
    out.write(f"uploading {repository} (DEVICE={device}) to {where.destination} in namespace {where.namespace}\n")

    # A fresh uploader pod every time: a finished Job's pod cannot be reused.
    kubectl("delete", "job", where.job_name, "--ignore-not-found", "--cascade=foreground", "--wait=true")
    job_yaml = yaml.safe_dump(where.job, sort_keys=False)
    kubectl("create", "-f", "-", stdin=job_yaml, stdin_label=f"the Job {where.job_name} of kserve/overlays/{overlay}")
    pod = wait_for_pod(kubectl, where.job_name)
    exec_sh = ("exec", pod, "-c", where.container, "--", "sh", "-ec")
    dest, staged = shlex.quote(where.destination), shlex.quote(f"{where.staging}/repo")

    kubectl(*exec_sh, f"rm -rf {shlex.quote(where.staging)}; mkdir -p {shlex.quote(where.staging)} {dest}")
    # staging/repo does not exist yet, so every kubectl version copies the folder's contents into it.
    kubectl("cp", str(repository), f"{pod}:{where.staging}/repo", "-c", where.container)
    # Same folder, new contents: the predictor mounts <claim>/<path> itself (subPath), so replacing
    # the folder would hide the new files from it. The marker goes last: Triton waits for it.
    kubectl(
        *exec_sh,
        f"rm -f {dest}/{MARKER}; find {dest} -mindepth 1 -maxdepth 1 -exec rm -rf {{}} +; "
        f"find {staged} -mindepth 1 -maxdepth 1 -exec mv -t {dest} {{}} +; "
        f"rm -rf {shlex.quote(where.staging)}; sync; touch {dest}/{MARKER}; sync; ls {dest}",
    )
    kubectl("exec", pod, "-c", where.container, "--", "touch", DONE_FILE)
    out.write(
        f"done: {where.destination} holds the repository and its {MARKER} marker.\n"
        f"A predictor waiting for the upload starts loading now. Replicas already running keep the models\n"
        f"they loaded; roll them onto this upload with a new revision:\n"
        f"  kubectl -n {where.namespace} patch inferenceservice {where.isvc} --type merge -p "
        f'\'{{"spec":{{"predictor":{{"annotations":{{"tritonyard.io/uploaded-at":"{int(time.time())}"}}}}}}}}\'\n'
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy_kserve.upload", description=__doc__.split("\n\n")[0])
    parser.add_argument("--overlay", choices=sorted(OVERLAYS), default="gpu", help="which deployment")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"), help="the built repository")
    parser.add_argument("--context", help="kubectl context (default: the current one)")
    parser.add_argument("--dry-run", action="store_true", help="check the repository, print the kubectl commands")
    args = parser.parse_args(argv)
    try:
        upload(args.repository, args.overlay, args.context, args.dry_run)
    except (UploadError, render.RenderError, RuleError, tools.ToolError) as exc:
        sys.stderr.write(f"kserve-upload: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
