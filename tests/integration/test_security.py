"""Locked down by default: the repository API needs the admin key, no pickle ships, no request names a file.

The API tests run against real tritonservers started the default way (TritonServer()); the static
checks read the built repository and the Python-backend sources.
"""

from __future__ import annotations

import ast
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from serving import adminkey
from serving.launcher import TritonServer
from tests.conftest import ROOT
from tests.integration.conftest import free_ports
from tests.integration.test_launcher import ECHO_MODEL, tiny_repo

pytestmark = pytest.mark.integration

WRONG_KEY = "0" * 64
SHIPPED_SUFFIXES = {".onnx", ".json", ".py", ".pbtxt", ".txt", ".md"}  # weights ONNX, tokenizers JSON, code, configs
PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal", "torch"}
PICKLE_CALLS = {"read_pickle", "load_pickle"}  # pandas and friends
# Calls that reach the file system. Image.open is allowed on an in-memory buffer only (see opens_a_file).
FILE_FUNCTIONS = {"open", "Path", "PurePath", "PosixPath", "InferenceSession", "urlopen", "__import__"}
FILE_METHODS = {"read_text", "read_bytes", "write_text", "write_bytes", "from_file", "fromfile", "tofile", "iterdir"}
FILE_METHODS |= {"glob", "rglob", "listdir", "scandir", "walk", "exists", "is_file", "unlink", "mkdir", "rmdir"}
FILE_MODULES = {"os", "shutil", "subprocess", "pathlib", "io", "glob", "tempfile"}
NOT_FILES = {"BytesIO", "StringIO", "urandom", "getpid", "cpu_count", "sched_getaffinity"}  # in io/os, no paths
LOADERS = {"np", "numpy", "onnx", "json", "pickle", "torch", "yaml"}  # <module>.load(...) reads a file object


def http_load(server: TritonServer, model: str, headers: dict[str, str]) -> tuple[int, str]:
    request = urllib.request.Request(
        f"http://{server.http_url}/v2/repository/models/{model}/load", data=b"{}", method="POST", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture(scope="module")
def echo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """A tiny server started with the defaults, whose one model a test may load and unload at will."""
    repo = tiny_repo(tmp_path_factory.mktemp("echo-repo"), "echo", ECHO_MODEL)
    with TritonServer(repo, *free_ports(3), ready_timeout=120) as server:
        yield server


def test_default_server_refuses_http_model_load_when_the_admin_key_is_missing_or_wrong(triton: TritonServer) -> None:
    for headers in ({}, {adminkey.HTTP_HEADER: WRONG_KEY}, {"Authorization": f"Bearer {triton.admin_key}"}):
        status, body = http_load(triton, "ensemble", headers)
        assert status == 403 and "admin-key" in body, (headers.keys(), status, body)


def test_default_server_refuses_grpc_model_load_when_the_admin_key_is_missing_or_wrong(triton: TritonServer) -> None:
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    try:
        for headers in (None, {adminkey.GRPC_HEADER: WRONG_KEY}, {adminkey.HTTP_HEADER: triton.admin_key}):
            with pytest.raises(InferenceServerException, match="restricted"):
                client.load_model("ensemble", headers=headers)
            with pytest.raises(InferenceServerException, match="restricted"):
                client.unload_model("ensemble", headers=headers)
        assert client.is_model_ready("ensemble")  # nothing was unloaded
    finally:
        client.close()


def test_model_load_works_over_http_and_grpc_when_the_admin_key_is_sent(echo_server: TritonServer) -> None:
    client = grpcclient.InferenceServerClient(echo_server.grpc_url)
    grpc_key = {adminkey.GRPC_HEADER: echo_server.admin_key}
    try:
        client.unload_model("echo", headers=grpc_key)
        assert not client.is_model_ready("echo")
        status, body = http_load(echo_server, "echo", echo_server.admin_headers)
        assert status == 200, body
        assert client.is_model_ready("echo")
        client.unload_model("echo", headers=grpc_key)
        client.load_model("echo", headers=grpc_key)
        assert client.is_model_ready("echo")
        assert {m.name for m in client.get_model_repository_index(headers=grpc_key).models} == {"echo"}
    finally:
        client.close()


def test_default_server_binds_loopback_and_hides_the_key_when_started(echo_server: TritonServer) -> None:
    command = (Path("/proc") / str(echo_server.process.pid) / "cmdline").read_bytes().split(b"\0")
    assert {b"--http-address=127.0.0.1", b"--grpc-address=127.0.0.1", b"--metrics-address=127.0.0.1"} <= set(command)
    assert b"--model-control-mode=explicit" in command and b"--load-model=*" in command
    assert echo_server.admin_key not in echo_server.log_tail() and echo_server.admin_key not in repr(echo_server)


# ----- no pickle in the serving path --------------------------------------------------------------


def shipped_files(repo: Path) -> list[Path]:
    """Every file the repository ships, without the interpreter's own bytecode caches."""
    return [p for p in repo.rglob("*") if p.is_file() and "__pycache__" not in p.parts]


def test_repository_ships_only_onnx_json_and_source_when_built(model_repo: Path) -> None:
    files = shipped_files(model_repo)
    assert {p.suffix for p in files} <= SHIPPED_SUFFIXES, sorted({p.suffix for p in files} - SHIPPED_SUFFIXES)
    for path in files:
        head = path.read_bytes()[:4]
        assert not head.startswith(b"PK\x03\x04"), f"{path}: a zip archive (torch.save format)"
        assert not (head[:1] == b"\x80" and head[1:2] in b"\x02\x03\x04\x05"), f"{path}: a pickle"
        if path.suffix == ".json":
            json.loads(path.read_text())  # tokenizers are plain JSON
    weights = [p for p in files if p.suffix == ".onnx"]
    assert weights and all(p.stat().st_size > 0 for p in weights)
    assert [p.name for p in files if p.suffix == ".json"]  # the tokenizers


def pickle_uses(source: str) -> list[str]:
    """Imports of pickle-based modules, pickle loaders, and allow_pickle=True in one module's source."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in PICKLE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLE_MODULES:
            found.append(node.module)
        elif isinstance(node, ast.Call):
            if _name(node.func) in PICKLE_CALLS:
                found.append(_name(node.func))
            for keyword in node.keywords:
                if keyword.arg == "allow_pickle" and not (
                    isinstance(keyword.value, ast.Constant) and keyword.value.value is False
                ):
                    found.append("allow_pickle")
    return found


def served_sources(model_repo: Path) -> dict[str, list[Path]]:
    """The Python files of each built version folder (what Triton runs), by model."""
    return {
        folder.parent.name: sorted(folder.glob("*.py"))
        for folder in sorted(model_repo.glob("*/[0-9]*"))
        if (folder / "model.py").is_file()
    }


def test_model_code_never_unpickles_when_parsed(model_repo: Path) -> None:
    sources = sorted((ROOT / "python_backends").rglob("*.py")) + [
        p for ps in served_sources(model_repo).values() for p in ps
    ]
    assert len(sources) > 10
    found = {str(p): pickle_uses(p.read_text()) for p in sources}
    assert {p: uses for p, uses in found.items() if uses} == {}


def test_pickle_check_flags_code_when_it_unpickles() -> None:
    source = (
        "import numpy as np\nfrom torch import load\nimport pickle\nnp.load(f, allow_pickle=True)\npd.read_pickle(x)"
    )
    assert pickle_uses(source) == ["torch", "pickle", "allow_pickle", "read_pickle"]
    assert pickle_uses("import numpy as np\nnp.load(f, allow_pickle=False)\n# import pickle") == []


# ----- no file paths from requests -----------------------------------------------------------------
# Rule: model code touches the file system only while loading (initialize and what it calls), with
# paths Triton gives it (args["model_repository"]). Nothing that `execute` can reach, by any call
# name defined in the model's own files (an over-approximation: same-named functions all count),
# may call a file-system function. So no request value can ever become a path.


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


def test_execute_paths_never_touch_files_when_models_are_parsed(model_repo: Path) -> None:
    checked = {}
    for model, paths in served_sources(model_repo).items():
        reached, offending = execute_reach({p.name: p.read_text() for p in paths})
        assert "execute" in reached, model
        assert offending == [], model
        checked[model] = len(reached)
    assert {"image_decoder", "efficientnet_v2", "gpt2", "gpt2_tokenizer", "gpt2_detokenizer"} <= set(checked)


def test_file_check_flags_execute_when_it_opens_a_path_from_a_request() -> None:
    source = """
class TritonPythonModel:
    def initialize(self, args):
        self.session = InferenceSession(str(Path(args["model_repository"]) / "1" / "model.onnx"))
        threading.Thread(target=self._worker).start()
    def _worker(self):
        while True:
            self.queue.get().path.read_bytes()
    def execute(self, requests):
        return [self._one(r) for r in requests]
    def _one(self, request):
        name = get_input(request, "path")
        img = Image.open(io.BytesIO(b"..."))
        return helper(name)
def helper(name):
    return Image.open(name), np.load(name), open(name).read()
"""
    reached, offending = execute_reach({"model.py": source})
    assert {"execute", "_one", "helper", "_worker"} <= reached and "initialize" not in reached
    assert offending == [
        "_worker: self.queue.get().path.read_bytes()",
        "helper: Image.open(name)",
        "helper: np.load(name)",
        "helper: open(name)",
    ]
