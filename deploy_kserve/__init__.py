"""tritonyard's KServe deployment tooling: validate the kserve/ manifests, upload the repository.

The manifests stay in kserve/ (base/, overlays/, image/, monitoring/); this package reads them.
It is not named `kserve` because that is the import name of KServe's own Python SDK.

    python -m deploy_kserve.validate     # make kserve-validate
    python -m deploy_kserve.upload       # make kserve-upload

Modules: tools (the pinned kubectl), render (`kubectl kustomize`, strict YAML), schema (KServe's
CRDs and kubernetes-validate), objects (a rendered overlay and its helpers), rules (project
rules), files (image, dashboard), validate (the CLI), upload; observability_rules (the tracing and
request-logging overlays); seldon_schema, seldon_v1_rules, seldon_v2_rules and seldon_validate (the
seldon/ manifests: `python -m deploy_kserve.seldon_validate`, also run by make kserve-validate).
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KSERVE_DIR = ROOT / "kserve"
# KServe's CRDs are data shared beside the project (CI lays out a copy of shared/ next to the clone).
CRD_DIR = ROOT.parent / "shared" / "kserve-crds"
OVERLAYS = {"gpu": "gpu", "cpu": "cpu"}  # overlay folder -> the DEVICE its repository is built for
# The opt-in observability overlays, each the gpu deployment plus one feature.
OVERLAYS |= {"tracing": "gpu", "request-logging": "gpu"}
