"""The batch scoring Job (kserve/batch) and its image (kserve/image/Dockerfile.batch), checked like the overlays.

kserve/batch is a kustomization of its own (a finished Job is deleted and applied again per run), so it
is rendered on its own, its objects go through the same strict schemas, and these rules tie it to the
InferenceService of a rendered overlay: the Job runs `python -m clients.clo --batch` (its args parsed by
the client's own parser) against that predictor's cluster-local address, with a served entry point; it
reads and writes a claim of its own, runs as non-root, retries a bounded number of times within a
deadline, and fails at once on the exit codes that a retry cannot change.
"""

from __future__ import annotations

import contextlib
import io
import posixpath
import re
import sys
from pathlib import Path

from deploy_kserve import KSERVE_DIR, ROOT, render, schema, tools
from deploy_kserve.files import _imports, _module_files
from deploy_kserve.objects import Check, Rendered, RuleError, flag_values, get

BATCH_DIR = KSERVE_DIR / "batch"
DOCKERFILE = KSERVE_DIR / "image" / "Dockerfile.batch"
COMMAND = ["python", "-m", "clients.clo"]
ENTRY_SCRIPTS = ("clients/clo.py", "clients/batch.py")  # what the command runs; their imports must be in the image
SYNTHETIC_ONLY = {"training.scenes", "clients.synthetic"}  # imported only for --synthetic, never by --batch
PACKAGES = {"numpy": "numpy", "PIL": "pillow", "tritonclient": "tritonclient", "tqdm": "tqdm"}
PACKAGES |= {"matplotlib": "matplotlib", "polars": "polars"}  # the histogram; --out *.parquet
MAX_BACKOFF = 6
MAX_DEADLINE_S = 24 * 3600


def _exit_codes() -> tuple[int, int]:
    from clients.batch import EXIT_FAILED, EXIT_USAGE

    return EXIT_FAILED, EXIT_USAGE


def _pod(job: dict) -> dict:
    return get(job, "spec.template.spec") or {}


def _container(job: dict) -> dict:
    containers = _pod(job).get("containers") or []
    if len(containers) != 1:
        raise RuleError(f"the batch Job must have exactly one container, found {len(containers)}")
    return containers[0]


def rule_retries(job: dict) -> list[str]:
    """Bounded retries inside a deadline; exit codes 1 and 2 (a retry cannot change them) fail the Job at once."""
    spec, problems = job.get("spec", {}), []
    if not isinstance(spec.get("backoffLimit"), int) or not 1 <= spec["backoffLimit"] <= MAX_BACKOFF:
        problems.append(f"backoffLimit must be 1..{MAX_BACKOFF}: retries resume from the results table")
    deadline = spec.get("activeDeadlineSeconds")
    if not isinstance(deadline, int) or not 600 <= deadline <= MAX_DEADLINE_S:
        problems.append(f"activeDeadlineSeconds must be set, 600..{MAX_DEADLINE_S}")
    if _pod(job).get("restartPolicy") != "Never":
        problems.append("restartPolicy must be Never (podFailurePolicy needs it; each retry keeps its log)")
    name = _container(job).get("name")
    fail_at_once = {
        code
        for rule in get(spec, "podFailurePolicy.rules") or []
        if rule.get("action") == "FailJob" and get(rule, "onExitCodes.operator") == "In"
        and get(rule, "onExitCodes.containerName") in (None, name)
        for code in get(rule, "onExitCodes.values") or []
    }  # fmt: skip
    if not set(_exit_codes()) <= fail_at_once:
        problems.append(f"podFailurePolicy must FailJob on exit codes {list(_exit_codes())} (failed rows, usage)")
    return problems


def rule_non_root(job: dict) -> list[str]:
    """Non-root, no privilege escalation, read-only root filesystem, no capabilities, no API token."""
    pod, c = _pod(job), _container(job)
    sc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    problems = []
    run_as = csc.get("runAsUser", sc.get("runAsUser"))
    if csc.get("runAsNonRoot", sc.get("runAsNonRoot")) is not True or not isinstance(run_as, int) or run_as == 0:
        problems.append("runAsNonRoot: true with a non-zero runAsUser")
    if not isinstance(sc.get("fsGroup"), int):
        problems.append("set the pod's fsGroup, so the non-root user can write the results to the volume")
    if csc.get("allowPrivilegeEscalation") is not False or csc.get("readOnlyRootFilesystem") is not True:
        problems.append("the container needs allowPrivilegeEscalation: false and readOnlyRootFilesystem: true")
    if "ALL" not in (get(csc, "capabilities.drop") or []):
        problems.append("the container must drop ALL capabilities")
    seccomp = get(csc, "seccompProfile.type") or get(sc, "seccompProfile.type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        problems.append("seccompProfile RuntimeDefault (pod or container)")
    if pod.get("automountServiceAccountToken") is not False:
        problems.append("automountServiceAccountToken: false (the Job never talks to the API server)")
    return problems


def _mounted_claim(job: dict, path: str) -> tuple[str | None, str | None]:
    """(claim, mount path) of the PVC volume `path` lies under, or (None, None)."""
    volumes = {v.get("name"): v for v in _pod(job).get("volumes", [])}
    for mount in _container(job).get("volumeMounts", []):
        root = mount.get("mountPath", "").rstrip("/")
        claim = get(volumes.get(mount.get("name"), {}), "persistentVolumeClaim.claimName")
        if claim and posixpath.normpath(path).startswith(root + "/") and not mount.get("readOnly"):
            return claim, root
    return None, None


def _parsed_args(container: dict) -> tuple[object | None, list[str]]:
    """The Job's args as clients.clo parses them, or the problem."""
    from clients import batch as client_batch
    from clients import clo

    if container.get("command") != COMMAND:
        return None, [
            f"command must be {COMMAND} (the same command as on a workstation), got {container.get('command')}"
        ]
    try:
        with contextlib.redirect_stderr(io.StringIO()) as err:
            args = clo._parser().parse_args([str(a) for a in container.get("args", [])])
    except SystemExit:
        return None, [f"clients.clo refuses the args: {err.getvalue().strip().splitlines()[-1]}"]
    if args.batch is None:
        return None, ["args must run --batch"]
    why = clo._usage(args) or client_batch.usage(args, check_files=False)
    return args, [f"clients.clo refuses the args: {why}"] if why else []


def _target_problems(job: dict, args, overlay: Rendered) -> list[str]:
    """The overlay's predictor, at its cluster-local address, over HTTP, through an entry point it loads."""
    problems = []
    isvc = overlay.isvc["metadata"]
    host = f"{isvc['name']}-predictor.{isvc.get('namespace', 'default')}.svc.cluster.local"
    if args.url not in (host, f"{host}:80"):
        problems.append(f"--url must be the predictor's cluster-local address {host}:80, got {args.url!r}")
    if job["metadata"].get("namespace") != isvc.get("namespace"):
        problems.append(f"the Job's namespace must be the InferenceService's ({isvc.get('namespace')})")
    entry = args.entry or "ensemble_jpeg"
    if args.protocol != "http" or args.shm or entry != "ensemble_jpeg":
        problems.append("over Knative: --protocol http and --entry ensemble_jpeg (no shared memory across pods)")
    if entry not in flag_values(overlay.container().get("args", []), "--load-model"):
        problems.append(f"the predictor does not load {entry} (--load-model)")
    return problems


def rule_command(job: dict, batch: Rendered, overlay: Rendered) -> list[str]:
    """The client's own parser accepts the args; frames and results on a claim of this rendering (not the
    model repository's); the overlay's predictor as the target."""
    args, problems = _parsed_args(_container(job))
    if args is None:
        return problems
    claims = [p["metadata"]["name"] for p in batch.all("PersistentVolumeClaim")]
    for flag, path in (("--batch", str(args.batch)), ("--out", str(args.out))):
        claim, _ = _mounted_claim(job, path)
        if claim is None or claim not in claims:
            problems.append(f"{flag} {path} must lie on a writable PVC mount whose claim is in kserve/batch {claims}")
    model_claims = {p["metadata"]["name"] for p in overlay.all("PersistentVolumeClaim")}
    if set(claims) & model_claims:
        problems.append(f"the frames claim must not be the model repository's {sorted(model_claims)}")
    return problems + _target_problems(job, args, overlay)


def check_dockerfile(path: Path = DOCKERFILE, root: Path = ROOT) -> list[str]:
    """The image runs as non-root, installs the packages and copies the project files the command imports."""
    text = path.read_text()
    problems = [] if re.search(r"^USER\s+[1-9]\d*\s*$", text, re.M) else ["the image must switch to a non-root USER"]
    copies = set(re.findall(r"^COPY\s+(\S+)\s+\S+\s*$", text, re.M))
    ignore = path.with_name(path.name + ".dockerignore")
    allowed = set(re.findall(r"^!(\S+)", ignore.read_text(), re.M)) if ignore.is_file() else set()
    problems += [f"COPY {s}: add !{s.rstrip('/')} to {ignore.name}" for s in copies if s.rstrip("/") not in allowed]
    seen, todo = set(), [root / s for s in ENTRY_SCRIPTS]
    while todo:
        file = todo.pop()
        if file in seen:
            continue
        seen.add(file)
        rel = file.relative_to(root).as_posix()
        if not any(rel == c or rel.startswith(c.rstrip("/") + "/") for c in copies):
            problems.append(f"the image must COPY {rel} (the batch command imports it)")
        imported, error = _imports(file)
        problems += [f"{rel} {error}"] if error else []
        for module in sorted(imported - SYNTHETIC_ONLY):
            top = module.split(".")[0]
            if top in sys.stdlib_module_names or top == "__future__":
                continue
            if top in PACKAGES:
                if not re.search(rf"\b{PACKAGES[top]}\b", text):
                    problems.append(f"{rel} imports {top}: the image must pip install {PACKAGES[top]}")
                continue
            files = _module_files(root, module)
            problems += [] if files else [f"{rel} imports {module}: neither a package the image installs nor ours"]
            todo += files
    return sorted(set(problems))


def validate_batch(
    schemas: schema.Schemas, kubectl: tools.Kubectl, kserve_dir: Path = KSERVE_DIR, overlays: tuple = ("gpu", "cpu")
) -> list[Check]:
    """Render kserve/batch; its schemas, its rules against each overlay's InferenceService, and its image."""
    from deploy_kserve.validate import check_schemas

    try:
        rendering = render.kustomize(kserve_dir / "batch", kubectl)
        targets = {name: Rendered(render.render(kserve_dir / "overlays" / name, kubectl)) for name in overlays}
    except render.RenderError as exc:
        return [Check("render kserve/batch (kubectl kustomize)", [str(exc)])]
    checks = [Check(f"render kserve/batch (kubectl kustomize): {len(rendering.objects)} objects", rendering.problems)]
    checks += check_schemas(rendering.objects, schemas)
    batch = Rendered(rendering.objects)
    try:
        job = batch.one("Job")
    except RuleError as exc:
        return [*checks, Check("batch Job", [str(exc)])]
    rules = [
        ("batch Job: bounded retries, a deadline, FailJob on what a retry cannot fix", lambda: rule_retries(job)),
        ("batch Job: non-root, read-only root, no capabilities, no API token", lambda: rule_non_root(job)),
    ]
    rules += [
        (f"batch Job: clients.clo --batch against overlay {name}'s predictor, frames on their own PVC",
         lambda target=target: rule_command(job, batch, target))
        for name, target in targets.items()
    ]  # fmt: skip
    for name, rule in rules:
        try:
            checks.append(Check(name, rule()))
        except RuleError as exc:
            checks.append(Check(name, [str(exc)]))
    image = kserve_dir / "image" / DOCKERFILE.name
    checks.append(
        Check(f"batch image {image.name}: non-root, copies what the command imports", check_dockerfile(image))
    )
    return checks
