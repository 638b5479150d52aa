"""One rendered overlay, the helpers the project rules read it with, and a report's Check.

`Rendered` finds the objects a rule needs (exactly one InferenceService, the runtime it names...)
and builds the kserve-container as KServe does: the ServingRuntime's container overlaid with
`predictor.model`, args appended. The parsers follow Kubernetes (quantities) and Go (durations).
"""

from __future__ import annotations

import contextlib
import functools
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, TextIO

MODEL_ONLY_FIELDS = {"modelFormat", "runtime", "storageUri", "storage", "protocolVersion", "runtimeVersion"}
QUANTITY = re.compile(r"^([+-]?)(\d+(?:\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?$")
BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
DECIMAL = {"n": "1e-9", "u": "1e-6", "m": "1e-3", "": "1", "k": "1e3", "M": "1e6", "G": "1e9", "T": "1e12"}
DECIMAL |= {"P": "1e15", "E": "1e18"}


class RuleError(Exception):
    """A rendering that lacks what a rule needs (no InferenceService, two PVCs...)."""


@dataclass
class Check:
    """One named check of the report and what it found; no problems means it passed."""

    name: str
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class Rendered:
    """The objects of one rendered overlay, with the lookups the rules need."""

    objects: list[dict]

    def all(self, kind: str) -> list[dict]:
        return [o for o in self.objects if o.get("kind") == kind]

    def one(self, kind: str) -> dict:
        found = self.all(kind)
        if len(found) != 1:
            raise RuleError(f"expected exactly one {kind}, found {len(found)}")
        return found[0]

    def named(self, kind: str, name: str) -> dict | None:
        return next((o for o in self.all(kind) if o.get("metadata", {}).get("name") == name), None)

    @property
    def isvc(self) -> dict:
        return self.one("InferenceService")

    @property
    def predictor(self) -> dict:
        predictor = self.isvc.get("spec", {}).get("predictor")
        if not isinstance(predictor, dict):
            raise RuleError("the InferenceService has no spec.predictor")
        return predictor

    @property
    def model(self) -> dict:
        model = self.predictor.get("model")
        if not isinstance(model, dict):
            raise RuleError("the predictor has no `model` (modelFormat triton + runtime) to check")
        return model

    def runtime(self) -> dict:
        name = self.model.get("runtime")
        runtime = self.named("ServingRuntime", name)
        if runtime is None:
            raise RuleError(f"predictor.model.runtime {name!r} names no ServingRuntime in this rendering")
        return runtime

    def container(self) -> dict:
        """The kserve-container as KServe builds it: the runtime's, overlaid with predictor.model."""
        containers = self.runtime().get("spec", {}).get("containers") or [{}]
        overrides = {k: v for k, v in self.model.items() if k not in MODEL_ONLY_FIELDS}
        return merge_container(containers[0], overrides)

    def uploader(self) -> dict:
        return self.one("Job")


def merge_container(runtime: dict, override: dict) -> dict:
    """KServe's MergeRuntimeContainers: a strategic merge where args are appended, not replaced."""
    merged = _merge(runtime, override)
    merged["args"] = list(runtime.get("args", [])) + list(override.get("args", []))
    return merged


LIST_KEYS = {"env": "name", "volumeMounts": "mountPath", "ports": "containerPort"}


def _merge(base: Any, patch: Any, key: str = "") -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = _merge(base[k], v, k) if k in base else v
        return out
    if isinstance(base, list) and isinstance(patch, list) and key in LIST_KEYS:
        by = LIST_KEYS[key]
        out = [dict(item) for item in base]
        for item in patch:
            match = next((i for i, old in enumerate(out) if old.get(by) == item.get(by)), None)
            if match is None:
                out.append(item)
            else:
                out[match] = _merge(out[match], item)
        return out
    return patch


def flag_values(args: list[str], flag: str) -> list[str]:
    """Values of every `--flag=value` in args."""
    return [a.split("=", 1)[1] for a in args if isinstance(a, str) and a.startswith(flag + "=")]


def parse_quantity(value: Any) -> Decimal:
    """A Kubernetes resource quantity as a number ('8Gi', '500m', 2); ValueError if it is not one."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{value!r} is not a Kubernetes quantity (a string such as 8Gi or 500m, or an integer)")
    match = QUANTITY.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a Kubernetes quantity (use 8Gi, 8G, 500m or 2; not 8GB)")
    sign, number, suffix = match.groups()
    suffix = suffix or ""
    try:
        amount = Decimal(number)
        if suffix in BINARY:
            amount *= BINARY[suffix]
        elif suffix in DECIMAL:
            amount *= Decimal(DECIMAL[suffix])
        else:
            amount *= Decimal(10) ** int(suffix[1:])
    except InvalidOperation as exc:
        raise ValueError(f"{value!r} is not a Kubernetes quantity") from exc
    return -amount if sign == "-" else amount


def parse_duration(value: str) -> float:
    """Seconds in a Go duration such as '45m' or '1h30m'."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise ValueError(f"{value!r} is not a duration such as 45m or 600s")
    return sum(float(n) * units[u] for n, u in parts)


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, f"{path}[{i}]")


def get(obj: Any, path: str) -> Any:
    """The value at a dotted path such as `spec.containers[0].resources`; None when it is absent."""
    for part in re.findall(r"[^.\[\]]+", path):
        if isinstance(obj, dict):
            obj = obj.get(part)
        elif isinstance(obj, list) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        else:
            return None
    return obj


@functools.lru_cache(maxsize=2)
def generated_models(device: str) -> tuple[str, ...]:
    """What `make build DEVICE=device` writes: builders.catalog is the one list."""
    with contextlib.redirect_stdout(sys.stderr):  # keep library banners out of the report
        from builders import catalog

        return tuple(catalog.model_names(device))


def write_report(out: TextIO, groups: Iterable[tuple[str, list[Check]]], level: str) -> int:
    """Print each titled group of checks and the verdict; the exit status (0 when every check passed)."""
    failed = 0
    for title, checks in groups:
        out.write(f"{title}\n")
        for check in checks:
            out.write(f"  {'ok' if check.ok else 'FAIL':<4} {check.name}\n")
            for problem in check.problems:
                out.write(f"       - {problem}\n")
            failed += not check.ok
    out.write(f"{'FAILED' if failed else 'passed'}: {failed} failing check(s); validation level {level}\n")
    return 1 if failed else 0
