"""Validate the seldon/ manifests offline, as strictly as the KServe ones (part of `make kserve-validate`).

    python -m deploy_kserve.seldon_validate                # seldon/v1 and seldon/v2
    python -m deploy_kserve.seldon_validate --only v2      # one of them
    python -m deploy_kserve.seldon_validate --crds DIR     # Seldon's CRDs from another folder

Each folder is rendered by the pinned `kubectl kustomize` (a warning fails it). Seldon's kinds go
through Seldon's own CRDs (seldon_schema.py), core kinds through kubernetes-validate, strict; then
come the project rules (seldon_v1_rules.py, seldon_v2_rules.py). Exit 1 on any failure, 2 when the
pinned kubectl or the CRDs are missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from deploy_kserve import render, schema, seldon_schema, tools
from deploy_kserve.objects import Check, RuleError, write_report
from deploy_kserve.seldon_v1_rules import RULES as V1_RULES
from deploy_kserve.seldon_v1_rules import SeldonV1
from deploy_kserve.seldon_v2_rules import RULES as V2_RULES
from deploy_kserve.seldon_v2_rules import SeldonV2

# folder under seldon/ -> (the DEVICE its repository is built for, its view, its rules)
VERSIONS = {"v1": ("gpu", SeldonV1, V1_RULES), "v2": ("gpu", SeldonV2, V2_RULES)}


def check_schemas(objects: list[dict], schemas: schema.Schemas) -> list[Check]:
    """Seldon's CRD for Seldon's kinds, kubernetes-validate for core kinds; any other kind is an error."""
    checks = []
    for obj in objects:
        key = (obj.get("apiVersion", ""), obj.get("kind", ""))
        label = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        if key in schemas.kserve:
            checks.append(Check(f"schema {label} ({schemas.level})", schema.errors(obj, schemas.kserve[key])))
        elif seldon_schema.is_seldon(key[0]) or "kserve.io/" in key[0]:
            checks.append(Check(f"schema {label}", [f"no Seldon schema for {key}: not part of a Seldon deployment"]))
        else:
            name = f"schema {label} (kubernetes-validate {schema.K8S_VERSION} strict)"
            checks.append(Check(name, schema.core_errors(obj)))
    return checks


def validate_objects(objects: list[dict], version: str, schemas: schema.Schemas) -> list[Check]:
    """Schema checks, then the version's project rules, for one rendered folder."""
    device, view, rules = VERSIONS[version]
    rendered = view(objects)
    checks = check_schemas(objects, schemas)
    for name, rule in rules:
        try:
            checks.append(Check(f"rule: {name}", rule(rendered, device)))
        except RuleError as exc:
            checks.append(Check(f"rule: {name}", [str(exc)]))
    return checks


def validate_folder(folder: Path, version: str, schemas: schema.Schemas, kubectl: tools.Kubectl) -> list[Check]:
    try:
        rendering = render.kustomize(folder, kubectl)
    except render.RenderError as exc:
        return [Check("render (kubectl kustomize)", [str(exc)])]
    checks = [Check(f"render (kubectl kustomize): {len(rendering.objects)} objects", rendering.problems)]
    return checks + validate_objects(rendering.objects, version, schemas)


def run(
    versions: list[str],
    schemas: schema.Schemas,
    kubectl: tools.Kubectl,
    out: TextIO = sys.stdout,
    seldon_dir: Path = seldon_schema.SELDON_DIR,
) -> int:
    """Validate each folder, print a report, return the exit status (0 when all passed)."""
    out.write(f"validation level: {schemas.level}: {schemas.description}\n")
    groups = []
    for version in versions:
        count, yaml_problems = render.yaml_problems([seldon_dir / version])
        checks = [Check(f"YAML: {count} files parse strictly (no duplicate keys)", yaml_problems)]
        title = f"seldon/{version} (repository built with DEVICE={VERSIONS[version][0]})"
        groups.append((title, checks + validate_folder(seldon_dir / version, version, schemas, kubectl)))
    return write_report(out, groups, schemas.level)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy_kserve.seldon_validate", description=__doc__.split("\n\n")[0]
    )
    default = seldon_schema.SELDON_CRD_DIR
    parser.add_argument("--crds", type=Path, default=default, help=f"folder with Seldon's CRDs (default {default})")
    parser.add_argument("--only", action="append", choices=sorted(VERSIONS), help="only these folders of seldon/")
    args = parser.parse_args(argv)
    try:
        schemas = seldon_schema.load(args.crds)
        kubectl = tools.kubectl()
    except (schema.CrdsMissing, tools.ToolError) as exc:
        sys.stderr.write(f"kserve-validate: {exc}\n")
        return 2
    return run(args.only or sorted(VERSIONS), schemas, kubectl)


if __name__ == "__main__":
    sys.exit(main())
