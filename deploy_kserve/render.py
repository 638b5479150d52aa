"""Render an overlay with the pinned `kubectl kustomize`, and load YAML strictly.

kustomize itself rejects a duplicate key, but its message names no file; `yaml_problems` names the
file and both lines, and is what `python -m deploy_kserve.validate` reports alongside.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from deploy_kserve import tools


class RenderError(ValueError):
    """A manifest or kustomization that cannot be loaded or rendered; the message says where."""


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys, which PyYAML otherwise keeps the last of."""


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<:` merges may be overridden; only explicit keys must be unique
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            first = seen[key].start_mark
            raise RenderError(
                f"duplicate key {key!r} at line {key_node.start_mark.line + 1} of {key_node.start_mark.name} "
                f"(first at line {first.line + 1}): YAML keeps only the last one"
            )
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_documents(text: str, name: str = "<string>") -> list[Any]:
    """Every non-empty YAML document in `text`, parsed strictly (duplicate keys are errors)."""
    try:
        loader = StrictLoader(text)
        loader.name = name
        try:
            docs = []
            while loader.check_data():
                doc = loader.get_data()
                if doc is not None:
                    docs.append(doc)
            return docs
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise RenderError(f"{name}: invalid YAML: {exc}") from exc


def yaml_problems(folders: list[Path]) -> tuple[int, list[str]]:
    """(files read, problems) for every *.yaml under `folders`, each parsed strictly."""
    files = sorted({p for folder in folders for p in Path(folder).rglob("*.y*ml")})
    problems = []
    for path in files:
        try:
            load_documents(path.read_text(), str(path))
        except (RenderError, OSError) as exc:
            problems.append(str(exc))
    return len(files), problems


@dataclass
class Rendering:
    """What `kubectl kustomize` made of one kustomization: its objects, and what is wrong with it anyway."""

    objects: list[dict]
    problems: list[str] = field(default_factory=list)  # kustomize's warnings, patches that match nothing


def kustomize(folder: Path, kubectl: tools.Kubectl | None = None) -> Rendering:
    """`kubectl kustomize folder` with the pinned kubectl, parsed strictly; RenderError when it fails."""
    kubectl = kubectl or tools.kubectl()
    try:
        done = subprocess.run(
            [str(kubectl.path), "kustomize", str(folder)], capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise RenderError(f"kubectl kustomize {folder}: {exc}") from exc
    if done.returncode != 0:
        raise RenderError(f"kubectl kustomize {folder} failed: {done.stderr.strip()}")
    objects = load_documents(done.stdout, f"kubectl kustomize {folder}")
    for obj in objects:
        if not isinstance(obj, dict) or "kind" not in obj:
            raise RenderError(f"kubectl kustomize {folder}: a document is not a Kubernetes object: {obj!r:.80}")
    warnings = [f"kustomize warns: {line}" for line in done.stderr.splitlines() if line.strip()]
    return Rendering(objects, warnings + unmatched_patches(Path(folder), objects))


def unmatched_patches(folder: Path, objects: list[dict]) -> list[str]:
    """Patches of `folder`'s kustomization whose target matches no rendered object: kustomize skips them silently."""
    path = folder / "kustomization.yaml"
    docs = load_documents(path.read_text(), str(path)) if path.is_file() else []
    patches = docs[0].get("patches", []) if docs and isinstance(docs[0], dict) else []
    problems = []
    for patch in patches:
        target = patch.get("target") if isinstance(patch, dict) else None
        if not isinstance(target, dict) or {"labelSelector", "annotationSelector"} & set(target):
            continue  # no target: kustomize itself fails when nothing matches; selectors: not judged here
        if not any(_targets(target, obj) for obj in objects):
            problems.append(
                f"{path}: the patch {patch.get('path', '(inline)')} targets {target}, which matches nothing"
            )
    return problems


def _targets(target: dict, obj: dict) -> bool:
    """kustomize's selector: group, version and kind exact; name and namespace anchored regular expressions."""
    group, _, version = obj.get("apiVersion", "").rpartition("/")
    meta = obj.get("metadata") or {}
    actual = {"group": group, "version": version, "kind": obj.get("kind", "")}
    actual |= {"name": meta.get("name", ""), "namespace": meta.get("namespace", "")}
    for key, want in target.items():
        if key in ("group", "version", "kind") and actual[key] != want:
            return False
        if key in ("name", "namespace") and not re.fullmatch(str(want), actual[key]):
            return False
    return True


def render(folder: Path, kubectl: tools.Kubectl | None = None) -> list[dict]:
    """The objects of the kustomization in `folder`, rendered by the pinned `kubectl kustomize`."""
    return kustomize(folder, kubectl).objects
