"""Reload a model whose Python-backend stub died: Triton itself never restarts one.

A killed `triton_python_backend_stub` stays a zombie child of tritonserver, `/v2/models/M/ready`
keeps answering 200, and every request that reaches the instance fails with "Stub process ... is
not healthy". Loading the model again with unchanged files is a no-op in Triton, so the supervisor
unloads it and loads it again through the repository API (explicit model control, admin key).
Unloading a step also unloads the ensembles that use it and loading it loads them back; the
supervisor checks that, and loads any ensemble that was ready before and is not after.

How it watches: every `poll` seconds it lists tritonserver's stub children in /proc and maps each
to its model and version from the stub's command line (`<repo>/<model>/<version>/model.py`). A
stub it saw alive that is gone or a zombie, while the repository index still says its model
version is READY and no live stub has taken its instance's place, is dead. A stub that goes away
because an admin unloaded or replaced the model is left alone (the index no longer says READY, or
a new stub of the same instance is running).

A hung stub, one stopped by a signal (state T, e.g. SIGSTOP), never answers and never dies, so
Triton waits on it forever. A stub seen stopped for `hung_after` seconds (default 5) is killed with
SIGKILL, and then reloaded like any dead stub: from the stop to serving again takes at most
hung_after + two polls + the reload (tests/integration/test_probes.py measures it). A stub that is
busy or deadlocked while running is not detected this way (the readiness probe fails on it).

The standard library and the contract package only, so the file can also run on its own next to a
tritonserver (a container, with `tritonyard_contract/` copied beside it):
    python3 supervisor.py --url 127.0.0.1:8000 --server-pid PID   # key from $TRITON_ADMIN_KEY
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

if not __package__:  # run as a file: let it import the contract of the repository it sits in
    sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from tritonyard_contract.protocol import ADMIN_HTTP_HEADER as HTTP_HEADER
from tritonyard_contract.protocol import ADMIN_KEY_ENV as ENV_KEY

STUB_NAME = "triton_python_backend_stub"
MAX_BACKOFF = 60.0
MAX_ATTEMPTS = 6
HUNG_AFTER = 5.0  # seconds a stub may stay stopped (state T) before it is killed and reloaded

log = logging.getLogger("serving.supervisor")


@dataclass(frozen=True)
class Stub:
    """One stub process, and the model instance it runs."""

    pid: int
    model: str
    version: str
    instance: str
    state: str = "S"  # /proc state letter; T: stopped by a signal (t, stopped in a debugger, is left alone)

    @property
    def stopped(self) -> bool:
        return self.state == "T"

    @property
    def key(self) -> tuple[str, str, str]:
        return self.model, self.version, self.instance


@dataclass(frozen=True)
class Reload:
    """What the supervisor did about one dead stub (times are time.monotonic())."""

    model: str
    reason: str
    ok: bool
    seconds: float
    started: float
    finished: float
    dependents: tuple[str, ...] = ()
    error: str = ""


def _stat(proc: Path, pid: str) -> tuple[str, int] | None:
    """(state letter, parent pid) of a process, or None if it is gone."""
    try:
        text = (proc / pid / "stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def alive(pid: int, proc: Path = Path("/proc")) -> bool:
    """The process exists and is not a zombie (a dead child its parent has not reaped yet)."""
    stat = _stat(proc, str(pid))
    return stat is not None and stat[0] not in "ZX"


def scan_stubs(server_pid: int, proc: Path = Path("/proc")) -> tuple[dict[int, Stub], set[int]]:
    """Live stub children of `server_pid` by pid, and the pids of its zombie children.

    A zombie's command line is empty, so it can only be matched to a model seen alive before.
    """
    live: dict[int, Stub] = {}
    zombies: set[int] = set()
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        stat = _stat(proc, entry)
        if stat is None or stat[1] != server_pid:
            continue
        if stat[0] in "ZX":
            zombies.add(int(entry))
            continue
        try:
            args = [a.decode(errors="replace") for a in (proc / entry / "cmdline").read_bytes().split(b"\0") if a]
        except OSError:
            continue
        if len(args) < 3 or Path(args[0]).name != STUB_NAME:
            continue
        model_file = Path(args[1])  # <repository>/<model>/<version>/model.py; the folder name is the model's name
        # The instance name (e.g. efficientnet_v2_0_0) comes just before the execution environment argument.
        live[int(entry)] = Stub(
            int(entry), model_file.parent.parent.name, model_file.parent.name, args[-2], state=stat[0]
        )
    return live, zombies


class TritonAdmin:
    """The few repository-API calls the supervisor makes, with the admin key."""

    def __init__(self, url: str, admin_key: str | None, timeout: float = 300.0) -> None:
        self.base = url if url.startswith("http") else f"http://{url}"
        self.headers = {HTTP_HEADER: admin_key} if admin_key else {}
        self.timeout = timeout

    def _call(self, path: str, body: dict | None = None) -> tuple[int, str]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method="POST" if data else "GET")
        for name, value in self.headers.items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, response.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def index(self) -> list[dict]:
        """Every model version the repository knows, with its state."""
        status, body = self._call("/v2/repository/index", {})
        if status != 200:
            raise RuntimeError(f"repository index: HTTP {status}: {body[:200]}")
        return json.loads(body)

    def state(self, model: str, version: str) -> str:
        for entry in self.index():
            if entry.get("name") == model and entry.get("version") == version:
                return entry.get("state", "")
        return "UNKNOWN"

    def ready(self, model: str) -> bool:
        return self._call(f"/v2/models/{model}/ready")[0] == 200

    def config(self, model: str) -> dict:
        status, body = self._call(f"/v2/models/{model}/config")
        return json.loads(body) if status == 200 else {}

    def unload(self, model: str) -> None:
        status, body = self._call(f"/v2/repository/models/{model}/unload", {})
        if status != 200:
            raise RuntimeError(f"unload {model}: HTTP {status}: {body[:300]}")

    def load(self, model: str) -> None:
        status, body = self._call(f"/v2/repository/models/{model}/load", {})
        if status != 200:
            raise RuntimeError(f"load {model}: HTTP {status}: {body[:300]}")

    def dependents(self, model: str) -> list[str]:
        """Ready ensembles that use `model`, directly or through another ensemble."""
        steps: dict[str, set[str]] = {}
        for entry in self.index():
            name = entry.get("name", "")
            if entry.get("state") == "READY" and name not in steps:
                config = self.config(name)
                if config.get("platform") == "ensemble":
                    steps[name] = {s["model_name"] for s in config.get("ensemble_scheduling", {}).get("step", [])}
        found: list[str] = []
        frontier = {model}
        while frontier:
            users = sorted(e for e, used in steps.items() if used & frontier and e not in found)
            found += users
            frontier = set(users)
        return found


class Supervisor(threading.Thread):
    """A daemon thread that reloads models whose stubs died; `stop()` ends it. `reloads` records each action."""

    def __init__(
        self,
        server_pid: int,
        admin: TritonAdmin,
        poll: float = 0.2,
        proc: Path = Path("/proc"),
        hung_after: float = HUNG_AFTER,
    ) -> None:
        super().__init__(name="triton-supervisor", daemon=True)
        self.server_pid = server_pid
        self.admin = admin
        self.poll = poll
        self.proc = proc
        self.hung_after = hung_after
        self.hung_kills: list[tuple[int, str, float]] = []  # (pid, instance, time.monotonic() of the kill)
        self._stopped_since: dict[int, float] = {}
        self._hung_reason: dict[int, str] = {}
        self.reloads: list[Reload] = []
        self._stop_event = threading.Event()
        self._known: dict[int, Stub] = {}
        self._pending: dict[str, tuple[str, int, float]] = {}  # model -> (reason, attempts, next try)
        self._unsure: dict[tuple, tuple[Stub, str]] = {}  # dead stubs whose model state could not be read yet

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        log.info("watching the Python-backend stubs of tritonserver pid %d", self.server_pid)
        while not self._stop_event.is_set() and alive(self.server_pid, self.proc):
            try:
                self.check_once()
            except Exception:  # keep watching: one bad poll must not end the supervisor
                log.exception("poll failed")
            self._stop_event.wait(self.poll)

    def check_once(self) -> None:
        """One poll: kill stubs stopped too long, find stubs that died since the last one, reload what is due."""
        live, zombies = scan_stubs(self.server_pid, self.proc)
        self._kill_hung(live)
        for key, (stub, reason) in list(self._unsure.items()):  # asked last poll, unanswered
            del self._unsure[key]
            if key not in {s.key for s in live.values()}:
                self._suspect(stub, reason)
        for pid, stub in list(self._known.items()):
            if pid in live:
                continue
            del self._known[pid]
            if stub.key in {s.key for s in live.values()}:
                continue  # Triton replaced the instance itself (an admin reload)
            how = " (a zombie: not reaped by tritonserver)" if pid in zombies else ""
            hung = self._hung_reason.pop(pid, "")
            self._suspect(stub, hung or f"stub pid {pid} of instance {stub.instance} died{how}")
        self._known.update(live)
        now = time.monotonic()
        for model, (reason, attempts, due) in list(self._pending.items()):
            if due <= now and not self._stop_event.is_set():
                self._reload(model, reason, attempts)

    def _kill_hung(self, live: dict[int, Stub]) -> None:
        """SIGKILL stubs stopped for hung_after seconds; the next poll sees them dead and reloads their model."""
        now = time.monotonic()
        for pid in [p for p in self._stopped_since if p not in live or not live[p].stopped]:
            del self._stopped_since[pid]
        for pid, stub in live.items():
            if not stub.stopped:
                continue
            since = self._stopped_since.setdefault(pid, now)
            if now - since < self.hung_after or pid in self._hung_reason:
                continue
            reason = f"stub pid {pid} of instance {stub.instance} hung (stopped for {now - since:.1f}s): killed it"
            log.warning("%s", reason)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            self._hung_reason[pid] = reason
            self.hung_kills.append((pid, stub.instance, time.monotonic()))

    def _suspect(self, stub: Stub, reason: str) -> None:
        try:
            state = self.admin.state(stub.model, stub.version)
        except (OSError, RuntimeError, ValueError) as exc:
            if not alive(self.server_pid, self.proc):
                return  # the server itself is gone: nothing to reload
            # A busy server may not answer the index in time: ask again next poll rather than forget a
            # dead stub, which never comes back by itself.
            log.info("%s; %s's state could not be read (%s): asking again", reason, stub.model, exc)
            self._unsure[stub.key] = (stub, reason)
            return
        if state != "READY":
            log.info("%s while %s:%s is %s: left alone", reason, stub.model, stub.version, state)
            return
        if stub.model not in self._pending:
            log.warning("%s; Triton still reports %s ready: reloading it", reason, stub.model)
            self._pending[stub.model] = (reason, 0, 0.0)

    def _reload(self, model: str, reason: str, attempts: int) -> None:
        started = time.monotonic()
        dependents: list[str] = []
        try:
            dependents = self.admin.dependents(model)
            self.admin.unload(model)  # a load of unchanged files would be a no-op
            self.admin.load(model)  # Triton loads the ensembles that use it again too
            missing = [d for d in dependents if not self.admin.ready(d)]
            for ensemble in missing:
                self.admin.load(ensemble)
            not_ready = [m for m in [model, *dependents] if not self.admin.ready(m)]
            if not_ready:
                raise RuntimeError(f"not ready after the reload: {', '.join(not_ready)}")
        except (OSError, RuntimeError, ValueError) as exc:
            finished = time.monotonic()
            attempts += 1
            failed = Reload(model, reason, False, finished - started, started, finished, tuple(dependents), str(exc))
            self.reloads.append(failed)
            if attempts >= MAX_ATTEMPTS:
                log.error("giving up on %s after %d failed reloads: %s", model, attempts, exc)
                del self._pending[model]
                return
            delay = min(MAX_BACKOFF, 2.0**attempts)
            log.error("reloading %s failed (%s); retrying in %.0fs", model, exc, delay)
            self._pending[model] = (reason, attempts, finished + delay)
            return
        finished = time.monotonic()
        del self._pending[model]
        self.reloads.append(Reload(model, reason, True, finished - started, started, finished, tuple(dependents)))
        log.warning(
            "reloaded %s in %.2fs (why: %s); ensembles using it ready again: %s",
            model,
            finished - started,
            reason,
            ", ".join(dependents) or "none",
        )


def main(argv: list[str] | None = None) -> int:
    """Run the supervisor in the foreground next to a tritonserver (e.g. in a container)."""
    parser = argparse.ArgumentParser(prog="supervisor.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="127.0.0.1:8000", help="Triton's HTTP address")
    parser.add_argument("--server-pid", type=int, required=True, help="pid of tritonserver (the stubs' parent)")
    parser.add_argument("--key-file", type=Path, help=f"file holding the admin key (default: ${ENV_KEY})")
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between /proc scans")
    parser.add_argument(
        "--hung-after", type=float, default=HUNG_AFTER, help="seconds a stub may stay stopped before it is killed"
    )
    args = parser.parse_args(argv)
    key = args.key_file.read_text().strip() if args.key_file else os.environ.get(ENV_KEY)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    supervisor = Supervisor(args.server_pid, TritonAdmin(args.url, key), poll=args.poll, hung_after=args.hung_after)
    supervisor.run()  # returns when the server process is gone
    return 0


if __name__ == "__main__":
    sys.exit(main())
