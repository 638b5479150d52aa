"""Validate the kserve/ manifests offline, as strictly as `kubectl apply` against a real cluster.

    python -m deploy_kserve.validate                  # every overlay (make kserve-validate)
    python -m deploy_kserve.validate --overlay cpu    # only that one
    python -m deploy_kserve.validate --crds DIR       # KServe's CRDs from another folder

Each overlay (kserve/overlays/gpu, kserve/overlays/cpu) is rendered by the pinned `kubectl kustomize`
(versions in kserve/tools.mk; `make kubectl-tools` installs it). Every object then goes through a
strict schema: InferenceService and ServingRuntime through KServe's own CRDs, core kinds through
kubernetes-validate (schema.py). Then come the project rules no schema covers (rules.py), and the
checks of the image and the dashboard (files.py). It prints which levels ran and every check, and
exits 1 on any failure, 2 when the pinned kubectl or the CRDs are missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from deploy_kserve import CRD_DIR, KSERVE_DIR, OVERLAYS, batch_job, render, schema, tools
from deploy_kserve.files import DASHBOARD, check_dashboard, check_image
from deploy_kserve.objects import Check, Rendered, RuleError, write_report
from deploy_kserve.rules import RULES


def check_schemas(objects: list[dict], schemas: schema.Schemas) -> list[Check]:
    """One check per object: KServe's CRD for KServe kinds, kubernetes-validate for the rest."""
    checks = []
    for obj in objects:
        key = (obj.get("apiVersion", ""), obj.get("kind", ""))
        label = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        if key in schemas.kserve:
            checks.append(Check(f"schema {label} ({schemas.level})", schema.errors(obj, schemas.kserve[key])))
        elif key[0].startswith("serving.kserve.io/"):
            checks.append(Check(f"schema {label}", [f"no {schemas.level} schema for {key}"]))
        else:
            name = f"schema {label} (kubernetes-validate {schema.K8S_VERSION} strict)"
            checks.append(Check(name, schema.core_errors(obj)))
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


def validate_objects(objects: list[dict], device: str, schemas: schema.Schemas) -> list[Check]:
    """Schema checks, then project rules, for the objects of one rendered overlay."""
    return check_schemas(objects, schemas) + check_rules(objects, device)


def validate_overlay(
    folder: Path, device: str, schemas: schema.Schemas, kubectl: tools.Kubectl | None = None
) -> list[Check]:
    """Render one overlay with `kubectl kustomize` (a warning or a patch that matches nothing fails), then validate."""
    try:
        rendering = render.kustomize(folder, kubectl)
    except render.RenderError as exc:
        return [Check("render (kubectl kustomize)", [str(exc)])]
    checks = [Check(f"render (kubectl kustomize): {len(rendering.objects)} objects", rendering.problems)]
    return checks + validate_objects(rendering.objects, device, schemas)


def check_yaml(kserve_dir: Path = KSERVE_DIR) -> Check:
    """Every manifest under base/ and overlays/ parses strictly: no duplicate keys (the message names the file)."""
    count, problems = render.yaml_problems([kserve_dir / "base", kserve_dir / "overlays"])
    return Check(f"YAML: {count} files under base/ and overlays/ parse strictly (no duplicate keys)", problems)


def run(
    overlays: dict[str, str],
    schemas: schema.Schemas,
    kubectl: tools.Kubectl,
    out: TextIO = sys.stdout,
    kserve_dir: Path = KSERVE_DIR,
) -> int:
    """Validate every overlay, print a report, return the exit status (0 when all passed)."""
    out.write(f"validation level: {schemas.level}: {schemas.description}\n")
    out.write(f"core kinds: kubernetes-validate {schema.K8S_VERSION}, strict\n")
    out.write(f"renderer: kubectl kustomize, {kubectl.describe()}\n")
    groups: list[tuple[str, list[Check]]] = [
        (
            f"overlay {name} (repository built with DEVICE={device})",
            validate_overlay(kserve_dir / "overlays" / name, device, schemas, kubectl),
        )
        for name, device in overlays.items()
    ]
    files = [
        check_yaml(kserve_dir),
        check_image(kserve_dir / "image"),
        check_dashboard(kserve_dir / "monitoring" / DASHBOARD.name),
    ]
    groups.append(("files: manifests, image and monitoring", files))
    groups.append(("batch scoring Job (kserve/batch)", batch_job.validate_batch(schemas, kubectl, kserve_dir)))
    return write_report(out, groups, schemas.level)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy_kserve.validate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--crds", type=Path, default=CRD_DIR, help=f"folder with KServe's CRDs (default {CRD_DIR})")
    parser.add_argument("--overlay", action="append", choices=sorted(OVERLAYS), help="only these overlays")
    args = parser.parse_args(argv)
    try:
        schemas = schema.load(args.crds)
        kubectl = tools.kubectl()
    except (schema.CrdsMissing, tools.ToolError) as exc:
        sys.stderr.write(f"kserve-validate: {exc}\n")
        return 2
    overlays = {name: OVERLAYS[name] for name in (args.overlay or OVERLAYS)}
    return run(overlays, schemas, kubectl)


if __name__ == "__main__":
    sys.exit(main())
