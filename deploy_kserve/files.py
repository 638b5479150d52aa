"""Checks of the files around the manifests: the Triton image's Dockerfile and the Grafana dashboard."""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

from deploy_kserve import KSERVE_DIR, ROOT
from deploy_kserve.objects import Check
from deploy_kserve.rules import IMAGE_SCRIPTS, NGC_RELEASE, TRITON_VERSION

# onnxruntime-gpu: the CUDA provider (and the CPU one) for gpt2_stream; torch: its KV cache on the GPU (IO binding).
IMAGE_PACKAGES = ("numpy", "onnxruntime-gpu", "torch", "tokenizers", "pillow")
# Every metric Triton 2.51 exports (https://github.com/triton-inference-server/server/blob/r24.10/docs/user_guide/metrics.md).
TRITON_METRICS = {
    *(
        f"nv_inference_{m}"
        for m in ("request_success", "request_failure", "count", "exec_count", "pending_request_count")
    ),
    *(
        f"nv_inference_{m}_duration_us"
        for m in ("request", "queue", "compute_input", "compute_infer", "compute_output")
    ),
    *(f"nv_inference_{m}_summary_us" for m in ("request", "queue", "compute_input", "compute_infer", "compute_output")),
    "nv_inference_first_response_histogram_ms",
    *(f"nv_gpu_{m}" for m in ("utilization", "memory_total_bytes", "memory_used_bytes", "power_usage", "power_limit")),
    "nv_energy_consumption",
    *(f"nv_cpu_{m}" for m in ("utilization", "memory_total_bytes", "memory_used_bytes")),
    *(f"nv_cache_{m}" for m in ("num_hits_per_model", "num_misses_per_model", "hit_duration_per_model")),
    "nv_cache_miss_duration_per_model",
    "nv_pinned_memory_pool_total_bytes",
    "nv_pinned_memory_pool_used_bytes",
}
DASHBOARD = KSERVE_DIR / "monitoring" / "grafana-dashboard.json"


def check_image(image_dir: Path = KSERVE_DIR / "image", root: Path = ROOT) -> Check:
    """The Dockerfile builds FROM the NGC release of our Triton version, with our packages and serving scripts."""
    check = Check(f"image: FROM nvcr.io/nvidia/tritonserver:{NGC_RELEASE}-py3 with {', '.join(IMAGE_PACKAGES)}")
    dockerfile = (image_dir / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", dockerfile, re.M)
    if froms != [f"nvcr.io/nvidia/tritonserver:{NGC_RELEASE}-py3"]:
        check.problems.append(f"Dockerfile FROM {froms}: must be nvcr.io/nvidia/tritonserver:{NGC_RELEASE}-py3")
    pins = {}
    for line in (image_dir / "requirements.txt").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)\s*==\s*(\S+)", line)
        if match:
            pins[match.group(1).lower()] = match.group(2)
    for package in IMAGE_PACKAGES:
        if package not in pins:
            check.problems.append(f"requirements.txt must pin {package}==<version>")
    if not pins.get("numpy", "1.").startswith("1."):
        check.problems.append("numpy must stay 1.x: Triton 24.10's Python-backend stub is built against numpy 1")
    check.problems += _image_copies(dockerfile, image_dir, root)
    return check


def _image_copies(dockerfile: str, image_dir: Path, root: Path) -> list[str]:
    """Every COPY source is let through Dockerfile.dockerignore; the serving scripts and what they import are copied."""
    problems = []
    copies = dict(re.findall(r"^COPY\s+(\S+)\s+(\S+)\s*$", dockerfile, re.M))
    ignore = image_dir / "Dockerfile.dockerignore"
    allowed = set(re.findall(r"^!(\S+)", ignore.read_text(), re.M)) if ignore.is_file() else set()
    for source in copies:
        if source not in allowed:
            problems.append(f"COPY {source}: add !{source} to {ignore.name} (the context is the repository root)")
    for script, target in IMAGE_SCRIPTS.items():
        if copies.get(script) != target:
            problems.append(f"Dockerfile must COPY {script} {target}")
        problems += [f"{script}: {p}" for p in _image_closure(root / script, copies, root)]
    return problems


IMAGE_HOME = "/opt/tritonyard"  # the scripts' folder in the image: the project files they import go beside them
IMAGE_IMPORTS = {"numpy", "onnxruntime", "torch", "tokenizers", "PIL"}  # what kserve/image/requirements.txt installs


def _imports(path: Path) -> tuple[set[str], str | None]:
    """Absolute module names `path` imports, parsed as Python 3.10 (the image's), or the parse error."""
    try:
        tree = ast.parse(path.read_text(), feature_version=(3, 10))
    except (OSError, SyntaxError) as exc:
        return set(), f"does not parse as Python 3.10: {exc}"
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and not n.level}
    return imported, None


def _module_files(root: Path, module: str) -> list[Path]:
    """The project files importing `module` loads: each package's __init__.py, then the module itself."""
    parts, files = module.split("."), []
    for i in range(1, len(parts) + 1):
        folder = root.joinpath(*parts[:i])
        if (folder / "__init__.py").is_file():
            files.append(folder / "__init__.py")
        elif folder.with_suffix(".py").is_file() and i == len(parts):
            files.append(folder.with_suffix(".py"))
        else:
            return []
    return files


def _copied(rel: str, copies: dict[str, str]) -> bool:
    return copies.get(rel) == f"{IMAGE_HOME}/{rel}" or any(
        rel.startswith(src.rstrip("/") + "/") and dst.rstrip("/") == f"{IMAGE_HOME}/{src.rstrip('/')}"
        for src, dst in copies.items()
    )


def _image_closure(script: Path, copies: dict[str, str], root: Path) -> list[str]:
    """A script the image runs on its Python 3.10 imports the standard library, the image's packages, and
    project files copied beside it (checked again, file by file)."""
    problems, seen, todo = [], set(), [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        imported, error = _imports(path)
        name = path.relative_to(root).as_posix()
        if error:
            problems.append(f"{name} {error}")
        for module in sorted(imported):
            if module.split(".")[0] in sys.stdlib_module_names | {"__future__"} | IMAGE_IMPORTS:
                continue
            files = _module_files(root, module)
            if not files:
                problems.append(
                    f"{name} imports {module}: neither the standard library, the image's packages, nor ours"
                )
            for f in files:
                rel = f.relative_to(root).as_posix()
                if not _copied(rel, copies):
                    problems.append(f"{name} imports {module}: the Dockerfile must COPY {rel} {IMAGE_HOME}/{rel}")
                todo.append(f)
    return sorted(set(problems))


def check_dashboard(path: Path = DASHBOARD) -> Check:
    """The Grafana dashboard is JSON and queries only metrics Triton exports."""
    check = Check(f"Grafana dashboard {path.name}: JSON, only Triton {TRITON_VERSION} metric names")
    try:
        dashboard = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        check.problems.append(f"{path}: {exc}")
        return check
    exprs = [t.get("expr", "") for p in dashboard.get("panels", []) for t in p.get("targets", [])]
    if not exprs:
        check.problems.append("no panel queries anything")
    for expr in exprs:
        for metric in re.findall(r"\bnv_[a-z_]+", expr):
            base = re.sub(r"_(sum|count|bucket)$", "", metric)
            if metric not in TRITON_METRICS and base not in TRITON_METRICS:
                check.problems.append(f"{metric!r} is not a Triton {TRITON_VERSION} metric")
    return check
