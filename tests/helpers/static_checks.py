"""Static checks of model code: what a model's files may import and call (no pickle, no file paths from requests).

Used on the built repository (tests/backends/test_served_sources.py) and tested on small sources
(tests/unit/test_static_checks.py).

Rule for files: model code touches the file system only while loading (initialize and what it calls), with
paths Triton gives it (args["model_repository"]). Nothing that `execute` can reach, by any call name defined
in the model's own files (an over-approximation: same-named functions all count), may call a file-system
function. So no request value can ever become a path.
"""

from __future__ import annotations

import ast
from pathlib import Path

SHIPPED_SUFFIXES = {".onnx", ".json", ".py", ".pbtxt", ".txt", ".md"}  # weights ONNX, tokenizers JSON, code, configs
PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
PICKLE_CALLS = {"read_pickle", "load_pickle"}  # pandas and friends
# torch may be imported (gpt2_stream's cache tensors on the gpu target), but torch.load unpickles.
PICKLE_METHODS = {("torch", "load")}
# Calls that reach the file system. Image.open is allowed on an in-memory buffer only (see opens_a_file).
FILE_FUNCTIONS = {"open", "Path", "PurePath", "PosixPath", "InferenceSession", "urlopen", "__import__"}
FILE_METHODS = {"read_text", "read_bytes", "write_text", "write_bytes", "from_file", "fromfile", "tofile", "iterdir"}
FILE_METHODS |= {"glob", "rglob", "listdir", "scandir", "walk", "exists", "is_file", "unlink", "mkdir", "rmdir"}
FILE_MODULES = {"os", "shutil", "subprocess", "pathlib", "io", "glob", "tempfile"}
NOT_FILES = {"BytesIO", "StringIO", "urandom", "getpid", "cpu_count", "sched_getaffinity"}  # in io/os, no paths
LOADERS = {"np", "numpy", "onnx", "json", "pickle", "torch", "yaml"}  # <module>.load(...) reads a file object


def shipped_files(repo: Path) -> list[Path]:
    """Every file the repository ships, without the interpreter's own bytecode caches."""
    return [p for p in repo.rglob("*") if p.is_file() and "__pycache__" not in p.parts]


def pickle_uses(source: str) -> list[str]:
    """Imports of pickle-based modules, pickle loaders, and allow_pickle=True in one module's source."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in PICKLE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLE_MODULES:
            found.append(node.module)
        elif isinstance(node, ast.ImportFrom):
            found += [f"{node.module}.{a.name}" for a in node.names if (node.module, a.name) in PICKLE_METHODS]
        elif isinstance(node, ast.Call):
            if _name(node.func) in PICKLE_CALLS:
                found.append(_name(node.func))
            if (_owner(node.func), _name(node.func)) in PICKLE_METHODS:
                found.append(ast.unparse(node.func))
            for keyword in node.keywords:
                if keyword.arg == "allow_pickle" and not (
                    isinstance(keyword.value, ast.Constant) and keyword.value.value is False
                ):
                    found.append("allow_pickle")
    return found


def served_sources(model_repo: Path) -> dict[str, list[Path]]:
    """The Python files of each built version folder (what Triton runs), by model, the shipped contract included."""
    return {
        folder.parent.name: sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)
        for folder in sorted(model_repo.glob("*/[0-9]*"))
        if (folder / "model.py").is_file()
    }


def _name(func: ast.expr) -> str:
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _owner(func: ast.expr) -> str:
    return _name(func.value) if isinstance(func, ast.Attribute) else ""


def opens_a_file(call: ast.Call) -> bool:
    """Whether a call can reach the file system (Image.open(io.BytesIO(...)) reads memory: allowed)."""
    name, owner = _name(call.func), _owner(call.func)
    if name in NOT_FILES:
        return False
    if name == "open" and owner == "Image":
        return not (call.args and isinstance(call.args[0], ast.Call) and _name(call.args[0].func) == "BytesIO")
    if isinstance(call.func, ast.Name):
        return name in FILE_FUNCTIONS
    return name in FILE_METHODS or owner in FILE_MODULES or (name == "load" and owner in LOADERS)


def execute_reach(sources: dict[str, str]) -> tuple[set[str], list[str]]:
    """Function names reachable from request handling in one model's files, and the file-system calls inside them.

    Roots: `execute`, and every function handed around as a value anywhere (a thread target such as
    the GPT-2 engine loop, a callback), since those run on request data without being called by name.
    """
    functions: dict[str, list[ast.AST]] = {}
    trees = [ast.parse(source) for source in sources.values()]
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                functions.setdefault(node.name, []).append(node)
    called = {id(n.func) for tree in trees for n in ast.walk(tree) if isinstance(n, ast.Call)}
    passed = {
        _name(n)
        for tree in trees
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute | ast.Name) and id(n) not in called and _name(n) in functions
    }
    reached, frontier, offending = set(), ["execute", *sorted(passed)], []
    while frontier:
        name = frontier.pop()
        if name in reached or name not in functions:
            continue
        reached.add(name)
        for definition in functions[name]:
            for node in ast.walk(definition):
                if isinstance(node, ast.Call):
                    frontier.append(_name(node.func))
                    if opens_a_file(node):
                        offending.append(f"{name}: {ast.unparse(node)}")
    return reached, sorted(offending)
