"""Strict YAML loading and the small kustomize subset the kserve/ manifests use.

`render(folder)` builds a kustomization the way `kubectl kustomize` does, for exactly the
features used here: `resources` (files and folders), `namespace`, `images` and JSON 6902
`patches` with a `target`. Anything else in a kustomization is an error, not silently ignored:
extend this file (and its tests) before using a new feature. `kubectl_render` runs the real
kustomize when `kubectl` is on PATH, so the two can be compared.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

KUSTOMIZATION_KEYS = {"apiVersion", "kind", "namespace", "resources", "images", "patches"}
PATCH_KEYS = {"path", "patch", "target"}
TARGET_KEYS = {"group", "version", "kind", "name"}
IMAGE_KEYS = {"name", "newName", "newTag", "digest"}
# Kinds without a namespace among those kustomize knows; anything else gets `namespace:`.
CLUSTER_SCOPED = {"Namespace", "ClusterServingRuntime", "ClusterStorageContainer", "PersistentVolume", "StorageClass"}


class ManifestError(ValueError):
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
            raise ManifestError(
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
        raise ManifestError(f"{name}: invalid YAML: {exc}") from exc


def load_file(path: Path) -> list[Any]:
    """The YAML documents of one file."""
    return load_documents(path.read_text(), str(path))


@dataclass(frozen=True)
class Target:
    """A patch target: every given field must match exactly."""

    kind: str | None = None
    name: str | None = None
    group: str | None = None
    version: str | None = None

    def matches(self, obj: dict) -> bool:
        group, _, version = obj.get("apiVersion", "").rpartition("/")
        actual = {"kind": obj.get("kind"), "name": obj.get("metadata", {}).get("name"), "group": group}
        actual["version"] = version
        return all(want is None or actual[field] == want for field, want in vars(self).items())


def _only(keys: set[str], data: dict, where: str) -> None:
    unknown = set(data) - keys
    if unknown:
        raise ManifestError(
            f"{where}: unsupported field(s) {sorted(unknown)}; the built-in renderer knows {sorted(keys)} "
            "(extend kserve/kustomize_lite.py first)"
        )


def render(folder: Path) -> list[dict]:
    """Render the kustomization in `folder` into its list of objects, in resource order."""
    folder = Path(folder)
    path = folder / "kustomization.yaml"
    if not path.is_file():
        raise ManifestError(f"{folder}: no kustomization.yaml")
    docs = load_file(path)
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise ManifestError(f"{path}: expected one mapping")
    kust = docs[0]
    _only(KUSTOMIZATION_KEYS, kust, str(path))
    if kust.get("kind", "Kustomization") != "Kustomization":
        raise ManifestError(f"{path}: kind must be Kustomization")

    objects: list[dict] = []
    for entry in kust.get("resources", []):
        source = (folder / entry).resolve()
        if "://" in entry or not source.exists():
            raise ManifestError(f"{path}: resource {entry!r} is not a local file or folder")
        if source.is_dir():
            objects += render(source)
        else:
            for doc in load_file(source):
                if not isinstance(doc, dict) or "kind" not in doc:
                    raise ManifestError(f"{source}: every document must be a Kubernetes object")
                objects.append(doc)

    for patch in kust.get("patches", []):
        _apply_patch(folder, path, patch, objects)
    for image in kust.get("images", []):
        _only(IMAGE_KEYS, image, f"{path}: images")
        for obj in objects:
            _set_images(obj, image)
    if "namespace" in kust:
        for obj in objects:
            _set_namespace(obj, kust["namespace"])
    _check_unique(objects, path)
    return objects


def _apply_patch(folder: Path, kust_path: Path, patch: dict, objects: list[dict]) -> None:
    _only(PATCH_KEYS, patch, f"{kust_path}: patches")
    if ("path" in patch) == ("patch" in patch):
        raise ManifestError(f"{kust_path}: a patch needs exactly one of `path` or `patch`")
    if "target" not in patch:
        raise ManifestError(f"{kust_path}: only JSON 6902 patches with a `target` are supported")
    _only(TARGET_KEYS, patch["target"], f"{kust_path}: patch target")
    target = Target(**patch["target"])
    if "path" in patch:
        ops = load_file(folder / patch["path"])
        where = str(folder / patch["path"])
    else:
        ops = load_documents(patch["patch"], f"{kust_path}: inline patch")
        where = f"{kust_path}: inline patch"
    if len(ops) != 1 or not isinstance(ops[0], list):
        raise ManifestError(f"{where}: expected a JSON 6902 list of operations (strategic merge is not supported)")
    hits = [obj for obj in objects if target.matches(obj)]
    if not hits:
        raise ManifestError(f"{where}: the target {target} matches no resource")
    for obj in hits:
        for op in ops[0]:
            json_patch(obj, op, where)


def _pointer(path: str, where: str) -> list[str]:
    if not path.startswith("/"):
        raise ManifestError(f"{where}: path {path!r} must start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str], where: str, path: str) -> Any:
    for part in parts:
        if isinstance(doc, dict) and part in doc:
            doc = doc[part]
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            raise ManifestError(f"{where}: path {path!r} does not exist (at {part!r})")
    return doc


def json_patch(doc: dict, op: dict, where: str) -> None:
    """Apply one RFC 6902 operation (add, replace, remove, test) to `doc` in place."""
    if not isinstance(op, dict) or op.get("op") not in {"add", "replace", "remove", "test"} or "path" not in op:
        raise ManifestError(f"{where}: unsupported operation {op!r}")
    _only({"op", "path", "value"}, op, where)
    kind, path = op["op"], op["path"]
    parts = _pointer(path, where)
    parent = _walk(doc, parts[:-1], where, path)
    key = parts[-1]
    value = copy.deepcopy(op.get("value"))
    if kind == "test":
        if _walk(parent, [key], where, path) != value:
            raise ManifestError(f"{where}: test failed at {path!r}")
    elif isinstance(parent, list):
        if kind == "add":
            index = len(parent) if key == "-" else int(key) if key.isdigit() else -1
            if not 0 <= index <= len(parent):
                raise ManifestError(f"{where}: bad list index in {path!r}")
            parent.insert(index, value)
        else:
            _walk(parent, [key], where, path)
            if kind == "replace":
                parent[int(key)] = value
            else:
                del parent[int(key)]
    elif isinstance(parent, dict):
        if kind != "add":
            _walk(parent, [key], where, path)  # replace and remove need an existing member
        if kind == "remove":
            del parent[key]
        else:
            parent[key] = value
    else:
        raise ManifestError(f"{where}: {path!r} does not point into an object or a list")


def _split_image(image: str) -> tuple[str, str]:
    """("repo/name", "tag-or-digest suffix") for an image reference."""
    if "@" in image:
        name, digest = image.split("@", 1)
        return name, "@" + digest
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon:]
    return image, ""


def _containers(node: Any) -> list[dict]:
    """Every container in `containers`/`initContainers` lists anywhere under `node` (kustomize's rule)."""
    found: list[dict] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                found += [c for c in value if isinstance(c, dict)]
            found += _containers(value)
    elif isinstance(node, list):
        for item in node:
            found += _containers(item)
    return found


def _set_images(obj: dict, image: dict) -> None:
    for container in _containers(obj):
        name, suffix = _split_image(str(container.get("image", "")))
        if name != image["name"]:
            continue
        if "digest" in image:
            suffix = "@" + image["digest"]
        elif "newTag" in image:
            suffix = f":{image['newTag']}"
        container["image"] = image.get("newName", name) + suffix


def _set_namespace(obj: dict, namespace: str) -> None:
    meta = obj.setdefault("metadata", {})
    if obj.get("kind") == "Namespace":
        meta["name"] = namespace  # kustomize renames the Namespace object too
    elif obj.get("kind") not in CLUSTER_SCOPED:
        meta["namespace"] = namespace


def _check_unique(objects: list[dict], where: Path) -> None:
    seen = set()
    for obj in objects:
        key = identity(obj)
        if key in seen:
            raise ManifestError(f"{where}: {key} is defined twice")
        seen.add(key)


def identity(obj: dict) -> tuple[str, str, str, str]:
    """(apiVersion, kind, namespace, name): what makes an object unique in a rendering."""
    meta = obj.get("metadata") or {}
    return (obj.get("apiVersion", ""), obj.get("kind", ""), meta.get("namespace", ""), meta.get("name", ""))


def kubectl_render(folder: Path) -> list[dict] | None:
    """`kubectl kustomize folder`, parsed; None when kubectl is not installed."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    done = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise ManifestError(f"kubectl kustomize {folder} failed: {done.stderr.strip()}")
    return load_documents(done.stdout, f"kubectl kustomize {folder}")
