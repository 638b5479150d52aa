"""Start a real `tritonserver` and wait until it is ready; used by `make serve`, the demo and tests.

The binary comes from PATH (the NGC image) or else from the `nvidia-pytriton` wheel, which bundles
Triton 2.51 with the Python backend but expects its backend folder and libraries to be set up.

Locked down by default: explicit model control (every model in the repository is loaded at start,
nothing else ever is unless an admin asks), the model-repository API behind an admin key on HTTP
and gRPC, and every port bound to 127.0.0.1.

Leaves nothing behind (serving/reaper.py): each server gets its own Python-backend region prefix;
stop() ends the server, then SIGKILLs any stub still holding the prefix and removes the prefix's
/dev/shm regions, also when tritonserver was killed. If the launcher itself dies (even SIGKILL),
tritonserver gets SIGKILL from the kernel (a parent-death signal) and a watchdog process, which
notices the launcher's end through a closed pipe, kills the stubs and removes the regions.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import functools
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from serving import adminkey, reaper
from serving.supervisor import STUB_NAME, Supervisor, TritonAdmin

LOG_TAIL_LINES = 60
# What moves each port: `make serve`'s variable (the launcher also reads it from the environment) and the flag.
PORT_SETTINGS = {
    "HTTP": ("HTTP_PORT", "--http-port"),
    "gRPC": ("GRPC_PORT", "--grpc-port"),
    "metrics": ("METRICS_PORT", "--metrics-port"),
    "OpenAI": ("OPENAI_PORT", "--openai-port"),
}
PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded before any fork: the child only calls prctl


class ServerError(RuntimeError):
    """tritonserver could not be found, died, or never became ready; the message has its log tail."""


class PortInUse(ServerError):
    """A port the server needs is taken; the message is one line naming the port and what moves it."""


def check_ports(host: str, ports: dict[str, int]) -> None:
    """Raise PortInUse if two of `ports` (kind -> number, kinds of PORT_SETTINGS) are equal or one is taken on host.

    Binds each port for a moment with SO_REUSEADDR, as servers do: a socket still in TIME_WAIT does
    not count as taken, a listening one does (also one on 0.0.0.0 when host is 127.0.0.1).
    """
    seen: dict[int, str] = {}
    for kind, port in ports.items():
        if not port:  # 0 or None: not used
            continue
        variable, flag = PORT_SETTINGS[kind]
        if port in seen:
            raise PortInUse(
                f"the {kind} port {port} is also the {seen[port]} port: move one, e.g. "
                f"`make serve {variable}=<port>` (python -m serving {flag} <port>)"
            )
        seen[port] = kind
        family, kind_, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind_, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                raise PortInUse(
                    f"{kind} port {port} on {host} is already in use ({exc.strerror}): stop what holds it, or "
                    f"move it with `make serve {variable}=<port>` (python -m serving {flag} <port>)"
                ) from None


def _die_with(parent: int) -> None:
    """preexec_fn: the kernel SIGKILLs this child when the thread that started it ends (the launcher dies)."""
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the launcher died before prctl took effect
        os.kill(os.getpid(), signal.SIGKILL)


def free_ports(n: int) -> list[int]:
    """n TCP ports free on 127.0.0.1 right now (so a second server never collides with `make serve`)."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def otlp_trace_args(endpoint: str, service_name: str = "tritonyard") -> list[str]:
    """tritonserver's OpenTelemetry tracing flags for an OTLP/HTTP collector; [] when `endpoint` is empty.

    `endpoint` is a collector's base URL (http://host:4318, as $OTEL_EXPORTER_OTLP_ENDPOINT) or its
    full traces URL (…/v1/traces). Every request is traced: rate=1 samples each one, level=TIMESTAMPS
    turns tracing on (Triton's default level is OFF) and count=-1 never stops; an ensemble's trace
    holds a span per step. Raises ValueError for anything but an http(s) URL with a host.
    """
    endpoint = endpoint.strip()
    if not endpoint:
        return []
    url = urllib.parse.urlsplit(endpoint)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"OTLP endpoint {endpoint!r} is not an http(s) URL such as http://localhost:4318")
    if url.path in ("", "/"):
        endpoint = endpoint.rstrip("/") + "/v1/traces"
    return [
        "--trace-config=mode=opentelemetry",
        f"--trace-config=opentelemetry,url={endpoint}",
        f"--trace-config=opentelemetry,resource=service.name={service_name}",
        "--trace-config=rate=1",
        "--trace-config=level=TIMESTAMPS",
        "--trace-config=count=-1",
    ]


@dataclass(frozen=True)
class Installation:
    """A tritonserver binary with the backend folder and environment it needs."""

    binary: Path
    backend_dir: Path | None  # None: the binary's built-in default (/opt/tritonserver/backends)
    env: dict[str, str]
    bundled: bool  # True for the pip wheel's CPU-only build


def _pytriton_root() -> Path:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServerError("no tritonserver on PATH and nvidia-pytriton is not installed: run `make setup`")
    return Path(list(spec.submodule_search_locations)[0])


def _python_backend_dir(server_root: Path) -> Path:
    """Copy the wheel's Python backend next to the stub for this interpreter, once per venv."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = server_root / "python_backend_stubs" / version / STUB_NAME
    if not stub.is_file():
        raise ServerError(f"nvidia-pytriton has no Python backend stub for Python {version}")
    backends = Path(sys.prefix) / "share" / "tritonyard" / "backends"
    python_dir = backends / "python"
    if not (python_dir / STUB_NAME).is_file():
        tmp = backends / ".python.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(server_root / "backends" / "python", tmp)
        shutil.copy2(stub, tmp / STUB_NAME)
        shutil.rmtree(python_dir, ignore_errors=True)
        tmp.rename(python_dir)
    return backends


def find_tritonserver() -> Installation:
    """Prefer a tritonserver on PATH; else prepare the one bundled in nvidia-pytriton."""
    env = dict(os.environ)
    on_path = shutil.which("tritonserver")
    if on_path:
        return Installation(Path(on_path), None, env, bundled=False)
    root = _pytriton_root()
    server_root = root / "tritonserver"
    binary = server_root / "bin" / "tritonserver"
    if not binary.is_file():
        raise ServerError(f"{binary} is missing: reinstall nvidia-pytriton==0.7.0")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    if ctypes.util.find_library(f"python{version}") is None:
        raise ServerError(f"the Python backend stub needs libpython{version}.so: `apt-get install libpython{version}`")
    libs = root.parent / "nvidia_pytriton.libs"
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(libs), env.get("LD_LIBRARY_PATH", "")) if p)
    # The stub's embedded interpreter finds this venv's site-packages through the python on PATH.
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    return Installation(binary, _python_backend_dir(server_root), env, bundled=True)


@dataclass
class TritonServer:
    """One tritonserver process. Use as a context manager, or call start() and stop()."""

    repository: Path
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    host: str = "127.0.0.1"
    ready_timeout: float = 300.0
    extra_args: tuple[str, ...] = ()
    echo: bool = False  # copy the server log to our stderr as it arrives
    log_file: Path | None = None
    # The repository API's key; a new random one per server unless given. None opens the API (avoid).
    admin_key: str | None = field(default_factory=adminkey.new_key, repr=False)
    # Explicit model control loading every model at start (`--load-model=*`); False: Triton's default mode.
    explicit: bool = True
    # Reload models whose Python stub dies (serving.supervisor); needs explicit mode and the key.
    supervise: bool = False
    # This server's Python-backend region prefix: its stubs and /dev/shm regions carry it (serving.reaper).
    shm_prefix: str = field(default_factory=reaper.new_prefix)
    # Ports the caller binds once the server is ready (kind of PORT_SETTINGS -> port), checked with Triton's.
    other_ports: dict[str, int | None] = field(default_factory=dict)
    process: subprocess.Popen | None = field(default=None, init=False)
    watchdog: subprocess.Popen | None = field(default=None, init=False)
    supervisor: Supervisor | None = field(default=None, init=False)
    _tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=LOG_TAIL_LINES), init=False)

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def admin_headers(self) -> dict[str, str]:
        """HTTP headers for the restricted repository API (gRPC: adminkey.GRPC_HEADER)."""
        return {adminkey.HTTP_HEADER: self.admin_key} if self.admin_key else {}

    def command(self, install: Installation) -> list[str]:
        """The tritonserver command line; flags already in extra_args win over the defaults they would repeat."""
        given = {a.split("=", 1)[0] for a in self.extra_args}
        cmd = [
            str(install.binary),
            f"--model-repository={self.repository.resolve()}",
            f"--http-address={self.host}",
            f"--grpc-address={self.host}",
            f"--metrics-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            # Configs are generated complete, so skip auto-complete: startup takes half the time.
            "--disable-auto-complete-config",
            "--exit-timeout-secs=10",
        ]
        if install.backend_dir is not None:
            cmd.append(f"--backend-directory={install.backend_dir}")
        cmd.append(reaper.backend_arg(self.shm_prefix))
        if install.bundled:  # CPU-only build: no pinned memory or GPU metrics to set up
            cmd += ["--pinned-memory-pool-byte-size=0", "--allow-gpu-metrics=false"]
        if self.explicit and "--model-control-mode" not in given:
            cmd += ["--model-control-mode=explicit", "--load-model=*"]
        if self.admin_key:
            cmd += [a for a in adminkey.restricted_args(self.admin_key) if a.split("=", 1)[0] not in given]
        return cmd + list(self.extra_args)

    def start(self) -> TritonServer:
        if not (self.repository / ".").is_dir():
            raise ServerError(f"model repository {self.repository} does not exist: run `make build` first")
        ports = {"HTTP": self.http_port, "gRPC": self.grpc_port, "metrics": self.metrics_port}
        check_ports(self.host, ports | self.other_ports)  # before anything starts: a taken port fails at once
        install = find_tritonserver()
        self._start_watchdog()
        # The parent-death signal follows the thread that forks: only the main thread lives as long as we do.
        in_main = threading.current_thread() is threading.main_thread()
        self.process = subprocess.Popen(
            self.command(install),
            env=install.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            start_new_session=True,  # Ctrl-C reaches the launcher only, which then stops the server in order
            preexec_fn=functools.partial(_die_with, os.getpid()) if in_main else None,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        return self

    def _start_watchdog(self) -> None:
        """serving/reaper.py in its own session, reading a pipe only we hold: its EOF means we are gone."""
        if self.watchdog is not None and self.watchdog.poll() is None:
            return
        self.watchdog = subprocess.Popen(
            [sys.executable, str(Path(reaper.__file__).resolve()), "--tag", reaper.tag(self.shm_prefix)],
            stdin=subprocess.PIPE,
            start_new_session=True,
        )

    def _stop_watchdog(self) -> None:
        if self.watchdog is not None:
            self.watchdog.stdin.close()  # it reaps (nothing is left by now) and exits
            try:
                self.watchdog.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.watchdog.kill()
                self.watchdog.wait()
            self.watchdog = None

    def _pump(self) -> None:
        sink = self.log_file.open("a") if self.log_file else None
        try:
            for line in self.process.stdout:
                self._tail.append(line.rstrip("\n"))
                if sink:
                    sink.write(line)
                    sink.flush()
                if self.echo:
                    sys.stderr.write(line)
        finally:
            if sink:
                sink.close()

    def log_tail(self) -> str:
        return "\n".join(self._tail)

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self) -> TritonServer:
        """Block until /v2/health/ready answers 200; raise with the log tail if it dies or times out."""
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                time.sleep(0.2)  # let the pump thread drain the last lines
                raise ServerError(f"tritonserver exited with code {self.process.returncode}:\n{self.log_tail()}")
            if self.is_ready():
                if self.supervise and self.supervisor is None:
                    self.supervisor = Supervisor(self.process.pid, TritonAdmin(self.http_url, self.admin_key))
                    self.supervisor.start()
                return self
            time.sleep(0.5)
        self.stop()
        raise ServerError(f"tritonserver was not ready after {self.ready_timeout:.0f}s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM, SIGKILL if it outlives its own exit timeout; then no stub and no region of it is left."""
        if self.supervisor is not None:  # first, so stubs exiting at shutdown are not "reloaded"
            self.supervisor.stop()
            self.supervisor.join(timeout=30)
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        # Also after a clean exit: Triton 2.51 leaves the regions of instances it could not unload.
        reaper.reap(self.shm_prefix)
        self._stop_watchdog()

    def __enter__(self) -> TritonServer:
        try:
            return self.start().wait_ready()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
