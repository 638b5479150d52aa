"""Tiny model repositories for the tests that start tritonservers of their own (launcher, security, KServe),
and what a server leaves behind: its processes and /dev/shm regions, found by its region prefix.

Free ports come from `serving.launcher.free_ports`, the launcher's own helper.
"""

from __future__ import annotations

import time
from pathlib import Path

from serving import reaper

CONFIG = """name: "{name}"
backend: "python"
max_batch_size: 4
input {{ name: "X" data_type: TYPE_FP32 dims: 1 }}
output {{ name: "Y" data_type: TYPE_FP32 dims: 1 }}
instance_group {{ kind: KIND_CPU count: 1 }}
"""
BROKEN_MODEL = """
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("model-exploded-on-purpose")
"""
ECHO_MODEL = """
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy())])
                for r in requests]
"""


def tiny_repo(root: Path, name: str, source: str) -> Path:
    """`root` as a repository of one Python model `name` (FP32 X -> Y) whose model.py is `source`."""
    (root / name / "1").mkdir(parents=True)
    (root / name / "config.pbtxt").write_text(CONFIG.format(name=name))
    (root / name / "1" / "model.py").write_text(source)
    return root


def children(pid: int) -> list[int]:
    """Pids of the live processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] not in "ZX":
            found.append(int(entry.name))
    return found


def cmdline(pid: int) -> list[str]:
    try:
        return [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return []


def launched_server(launcher_pid: int) -> tuple[int, str]:
    """The tritonserver a `python -m serving` process started, and its region prefix (from its command line)."""
    for pid in children(launcher_pid):
        args = cmdline(pid)
        if args and Path(args[0]).name == "tritonserver":
            (flag,) = [a for a in args if "shm-region-prefix-name=" in a]
            return pid, flag.split("shm-region-prefix-name=", 1)[1]
    raise AssertionError(f"no tritonserver child of pid {launcher_pid}")


def leftovers(prefix: str, timeout: float) -> tuple[list[int], list[str], float]:
    """Waits up to `timeout` s for every process and /dev/shm region of `prefix` to go; returns what is left
    (pid and command line of each process, region names) and the seconds it took."""
    start = time.monotonic()
    while True:
        pids, files = reaper.holders(prefix), [p.name for p in reaper.regions(prefix)]
        if not pids and not files or time.monotonic() - start > timeout:
            return [f"{pid} {' '.join(cmdline(pid))[:200]}" for pid in pids], files, time.monotonic() - start
        time.sleep(0.1)
