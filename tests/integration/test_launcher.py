"""The launcher against real tritonserver processes: readiness, failures and the admin key (shutdown and
what it leaves behind: test_leftovers.py; busy ports: tests/unit/test_busy_ports.py)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from serving import adminkey
from serving.launcher import ServerError, TritonServer, free_ports
from tests.conftest import ROOT
from tests.helpers.servers import BROKEN_MODEL, ECHO_MODEL, tiny_repo

pytestmark = pytest.mark.integration


def test_launcher_raises_with_log_tail_when_a_model_fails_to_load(tmp_path: Path) -> None:
    server = TritonServer(tiny_repo(tmp_path, "broken", BROKEN_MODEL), *free_ports(3), ready_timeout=120)
    start = time.monotonic()
    with pytest.raises(ServerError, match="model-exploded-on-purpose") as info:
        with server:
            pass
    assert "exited with code" in str(info.value)
    assert time.monotonic() - start < 120 and server.process.poll() is not None


# The probe run by `python -m serving -- CMD`: the repository API refuses no key, accepts the key file's.
KEY_PROBE = """
import os, sys, urllib.error, urllib.request
def load(headers):
    url = os.environ["TRITON_HTTP_URL"]
    req = urllib.request.Request(f"http://{url}/v2/repository/models/echo/load", b"{}", headers, method="POST")
    try:
        return urllib.request.urlopen(req, timeout=60).status
    except urllib.error.HTTPError as exc:
        return exc.code
key = os.environ.get("TRITON_ADMIN_KEY") or open(os.environ["TRITON_ADMIN_KEY_FILE"]).read().strip()
sys.exit(0 if (load({}), load({"admin-key": key})) == (403, 200) else 3)
"""


def serve_command(repo: Path, *args: str) -> tuple[list[str], int]:
    """`python -m serving` on free ports for `repo`, and its HTTP port."""
    http, grpc, metrics = free_ports(3)
    ports = ["--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)]
    return [sys.executable, "-m", "serving", "--model-repository", str(repo), "--quiet", *ports, *args], http


def serve_cli(repo: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    cmd, _ = serve_command(repo, *args)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in (adminkey.ENV_KEY, adminkey.ENV_KEY_FILE)}


def test_serve_cli_restricts_the_repository_api_with_a_private_key_file_when_no_key_is_given(tmp_path: Path) -> None:
    repo, key_file = tiny_repo(tmp_path / "repo", "echo", ECHO_MODEL), tmp_path / "keys" / "admin-key"
    done = serve_cli(repo, "--admin-key-file", str(key_file), "--", sys.executable, "-c", KEY_PROBE, env=clean_env())
    assert done.returncode == 0, done.stderr[-3000:]
    key = key_file.read_text().strip()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and len(key) == 64
    assert f"send the key in {key_file} as header 'admin-key'" in done.stderr and "generated key" in done.stderr
    assert key not in done.stderr + done.stdout

    again = serve_cli(repo, "--admin-key-file", str(key_file), "--", sys.executable, "-c", KEY_PROBE, env=clean_env())
    assert again.returncode == 0 and "(file key)" in again.stderr and key_file.read_text().strip() == key


def test_serve_cli_uses_the_environment_key_when_it_is_set(tmp_path: Path) -> None:
    repo, key_file = tiny_repo(tmp_path / "repo", "echo", ECHO_MODEL), tmp_path / "admin-key"
    env = {**clean_env(), adminkey.ENV_KEY: "e" * 40}
    done = serve_cli(repo, "--admin-key-file", str(key_file), "--", sys.executable, "-c", KEY_PROBE, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "(env key)" in done.stderr and not key_file.exists() and "e" * 40 not in done.stderr


@pytest.mark.parametrize(
    "content,mode,message", [("k" * 64, 0o644, "readable by others"), ("tiny-key-42", 0o600, "at least 32 characters")]
)
def test_serve_cli_refuses_to_start_when_the_key_file_is_unsafe(
    tmp_path: Path, content: str, mode: int, message: str
) -> None:
    key_file = tmp_path / "admin-key"
    key_file.write_text(content)
    key_file.chmod(mode)
    done = serve_cli(
        tiny_repo(tmp_path / "repo", "echo", ECHO_MODEL), "--admin-key-file", str(key_file), env=clean_env()
    )
    assert done.returncode == 1 and message in done.stderr and content not in done.stderr
