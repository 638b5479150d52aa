"""Run the frontend as a child process beside a tritonserver: `make serve`, the tests and the benchmark."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


class FrontendError(RuntimeError):
    """The frontend exited or never answered /health."""


@dataclass
class Frontend:
    """`python -m openai_frontend` for Triton's gRPC `triton_url`; a context manager that waits for /health."""

    triton_url: str
    port: int = 9000
    host: str = "127.0.0.1"
    api_key: str | None = field(default=None, repr=False)
    extra_args: tuple[str, ...] = ()
    log_file: Path | None = None
    ready_timeout: float = 60.0
    process: subprocess.Popen | None = field(default=None, init=False)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> Frontend:
        env = {k: v for k, v in os.environ.items() if k != "TRITONYARD_OPENAI_API_KEY"}
        if self.api_key:
            env["TRITONYARD_OPENAI_API_KEY"] = self.api_key
        cmd = [sys.executable, "-m", "openai_frontend", "--triton-url", self.triton_url]
        cmd += ["--host", self.host, "--port", str(self.port), *self.extra_args]
        out = self.log_file.open("a") if self.log_file else subprocess.DEVNULL
        root = Path(__file__).resolve().parent.parent
        try:
            self.process = subprocess.Popen(cmd, env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT)
        finally:
            if self.log_file:
                out.close()  # the child has its own descriptor
        return self

    def wait_ready(self) -> Frontend:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise FrontendError(f"the OpenAI frontend exited with code {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"http://{self.host}:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise FrontendError(f"the OpenAI frontend did not answer /health within {self.ready_timeout:.0f}s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> Frontend:
        try:
            return self.start().wait_ready()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
