"""serving/ without a server: the admin key's sources, the readiness probe's inputs, the stub scan."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from serving import adminkey, readiness
from serving.launcher import ServerError, TritonServer
from serving.supervisor import Supervisor, scan_stubs

LONG = "x" * 40


def test_admin_key_comes_from_the_environment_when_set(tmp_path: Path) -> None:
    key = adminkey.resolve(tmp_path / "key", {adminkey.ENV_KEY: LONG})
    assert (key.value, key.source, key.path) == (LONG, "env", None)
    assert not (tmp_path / "key").exists() and LONG not in repr(key) and LONG not in key.describe()


def test_admin_key_is_generated_into_a_private_file_when_none_exists(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "key"
    first = adminkey.resolve(path, {})
    assert first.source == "generated" and len(first.value) == 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text().strip() == first.value
    again = adminkey.resolve(path, {})
    assert (again.value, again.source) == (first.value, "file")
    assert adminkey.resolve_existing(path, {}) == first.value
    assert first.value not in first.describe("127.0.0.1:8000") and str(path) in first.describe()


@pytest.mark.parametrize("content,mode", [(LONG, 0o640), ("too-short", 0o600), ("a b" * 20, 0o600)])
def test_admin_key_is_refused_when_its_file_is_unsafe(tmp_path: Path, content: str, mode: int) -> None:
    path = tmp_path / "key"
    path.write_text(content)
    path.chmod(mode)
    with pytest.raises(adminkey.AdminKeyError):
        adminkey.resolve(path, {})


def test_resolve_existing_never_creates_a_key_when_there_is_none(tmp_path: Path) -> None:
    with pytest.raises(adminkey.AdminKeyError, match="make serve"):
        adminkey.resolve_existing(tmp_path / "key", {})
    assert not (tmp_path / "key").exists()


def test_restricted_args_name_the_repository_api_on_both_protocols_when_built() -> None:
    assert adminkey.restricted_args(LONG) == [
        f"--http-restricted-api=model-repository:admin-key={LONG}",
        f"--grpc-restricted-protocol=model-repository:admin-key={LONG}",
    ]


def test_readiness_image_decodes_as_rgb_png_when_built_without_pillow() -> None:
    image = Image.open(io.BytesIO(readiness.probe_png()))
    image.load()
    assert (image.format, image.mode, image.size) == ("PNG", "RGB", (64, 36))
    assert image.getpixel((32, 18)) == (200, 180, 40) and image.getpixel((0, 0)) == (90, 110, 130)


def test_readiness_exits_1_with_one_line_when_nothing_listens() -> None:
    done = subprocess.run(
        [sys.executable, str(Path(readiness.__file__)), "--url", "127.0.0.1:9", "--timeout", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": ""},  # runs as a lone file, as in the image
    )
    assert done.returncode == 1 and done.stdout.count("\n") == 1
    assert done.stdout.startswith("not ready: /v2/health/ready:")


def test_scan_stubs_maps_children_to_models_when_reading_proc(tmp_path: Path) -> None:
    def process(pid: int, ppid: int, state: str, args: list[str]) -> None:
        folder = tmp_path / str(pid)
        folder.mkdir()
        (folder / "stat").write_text(f"{pid} (triton_python_b) {state} {ppid} 1 1 0")
        (folder / "cmdline").write_bytes(b"\0".join(a.encode() for a in args) + b"\0")

    stub = "/opt/backends/python/triton_python_backend_stub"
    tail = ["shm", "1048576", "1048576", "100", "/opt/backends/python", "336"]
    process(201, 100, "S", [stub, "/repo/yolov8/3/model.py", *tail, "yolov8_0_0", "DEFAULT"])
    process(202, 100, "Z", [])  # a killed stub: zombie, empty command line
    process(203, 999, "S", [stub, "/repo/other/1/model.py", *tail, "other_0_0", "DEFAULT"])  # another server's
    process(204, 100, "S", ["/usr/bin/sleep", "1"])
    live, zombies = scan_stubs(100, tmp_path)
    assert list(live) == [201] and zombies == {202}
    assert (live[201].model, live[201].version, live[201].instance) == ("yolov8", "3", "yolov8_0_0")


@pytest.mark.parametrize(
    "message",
    [
        "in ensemble 'ensemble_jpeg', Exceeds maximum queue size",
        "Request timeout expired",
        "gpt2: overloaded, 32 requests already wait for a generation slot; retry later",
    ],
)
def test_readiness_counts_pipeline_busy_when_it_refuses_for_capacity(message: str) -> None:
    assert readiness.is_capacity_refusal(message)
    with pytest.raises(readiness.Busy):
        readiness.check_generation({"error": message}, where="gpt2")


def test_readiness_counts_pipeline_not_ready_when_the_error_is_not_capacity() -> None:
    assert not readiness.is_capacity_refusal("Stub process 'gpt2_0_0' is not healthy.")
    with pytest.raises(readiness.NotReady):
        readiness.check_generation({"error": "Stub process 'gpt2_0_0' is not healthy."}, where="gpt2")


def test_supervisor_asks_again_when_a_dead_stubs_model_state_cannot_be_read(tmp_path: Path) -> None:
    def process(pid: int, ppid: int, args: list[str]) -> None:
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(f"{pid} (x) S {ppid} 1 1 0")
        (tmp_path / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in args) + b"\0")

    class Admin:  # the repository API's answers, in order: a timeout first, then the real state
        answers: list = [OSError("timed out"), "READY"]

        def state(self, model: str, version: str) -> str:
            answer = self.answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

    stub = "/opt/backends/python/triton_python_backend_stub"
    process(100, 1, ["/opt/tritonserver/bin/tritonserver"])
    process(201, 100, [stub, "/repo/yolov8/1/model.py", "shm", "1", "1", "100", "/b", "336", "yolov8_0_0", "DEFAULT"])
    supervisor = Supervisor(100, Admin(), proc=tmp_path)
    reloaded: list[str] = []
    supervisor._reload = lambda model, reason, attempts: reloaded.append(model)
    supervisor.check_once()
    (tmp_path / "201" / "stat").unlink()  # the stub is gone
    (tmp_path / "201" / "cmdline").unlink()
    (tmp_path / "201").rmdir()
    supervisor.check_once()  # its model's state cannot be read: nothing reloaded, nothing forgotten
    assert reloaded == []
    supervisor.check_once()  # asked again: READY with a dead stub, so it is reloaded
    assert reloaded == ["yolov8"]


def test_launcher_raises_when_repository_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match="make build"):
        TritonServer(tmp_path / "nope").start()
