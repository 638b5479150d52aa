"""Strict schemas for Seldon Core's kinds, from Seldon's own CRDs in ../shared/seldon-crds.

The same conversion as KServe's (schema.py: unknown fields are errors, int-or-string quantities,
list types), applied to:
- SeldonDeployment (machinelearning.seldon.io/v1), Seldon Core v1.18.2;
- Model, Server, Pipeline and the other mlops.seldon.io/v1alpha1 kinds of Seldon Core 2.

The CRDs are read where they are (never copied into the project); without them `load` fails and
names the folder.
"""

from __future__ import annotations

import functools
from pathlib import Path

import yaml

from deploy_kserve import ROOT, schema

SELDON_DIR = ROOT / "seldon"
SELDON_CRD_DIR = ROOT.parent / "shared" / "seldon-crds"
V1_CRDS = "v1.18.2-seldondeployments.yaml"
V2_CRDS = "v2-main-2026-01-08-crds.yaml"
GROUPS = ("machinelearning.seldon.io/", "mlops.seldon.io/")


def load(crd_dir: Path = SELDON_CRD_DIR) -> schema.Schemas:
    """The "crd" level for Seldon's kinds; schema.CrdsMissing (naming the folder) without the CRDs."""
    crd_dir = Path(crd_dir)
    missing = [name for name in (V1_CRDS, V2_CRDS) if not (crd_dir / name).is_file()]
    if missing:
        raise schema.CrdsMissing(
            f"Seldon's CRDs are not at {crd_dir} (missing {', '.join(missing)}): they are read from "
            "../shared/seldon-crds beside the project (a copy of shared/ next to the clone, as in CI), or --crds DIR"
        )
    found = _crd_schemas(crd_dir.resolve())
    return schema.Schemas(
        "crd", f"Seldon Core v1.18.2 and 2 CRDs from {crd_dir}, strict (unknown fields rejected)", found
    )


@functools.lru_cache(maxsize=2)
def _crd_schemas(crd_dir: Path) -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> JSON Schema of every served version of every CRD in the two files."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the files are 35k lines each
    found = {}
    for filename in (V1_CRDS, V2_CRDS):
        for crd in yaml.load_all((crd_dir / filename).read_text(), Loader=loader):
            if not isinstance(crd, dict) or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if version.get("served", True):
                    found[(f"{group}/{version['name']}", kind)] = schema.crd_to_schema(crd, version["name"])
    return found


def is_seldon(api_version: str) -> bool:
    return api_version.startswith(GROUPS)
