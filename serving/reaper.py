"""Leave nothing behind: end a tritonserver's Python stubs and remove its shared-memory regions.

Triton 2.51 does not clean up after itself when things go wrong: a stub whose tritonserver was
killed keeps running with parent pid 1 (and ignores SIGTERM), and the Python backend's regions stay
in /dev/shm whenever an instance is not unloaded cleanly (a killed stub, a killed server). The
launcher gives each server a unique region prefix (`--backend-config=python,shm-region-prefix-name=`);
that prefix is on the server's command line and on every stub's (the stub gets its region's name),
and every region's name starts with it. So "this server's processes and regions" is exact: the
processes whose command line holds the prefix, and the /dev/shm files whose name starts with it.

Run as a file, this is the launcher's watchdog: it waits for its standard input to close (the
launcher exited, however it died, SIGKILL included), then kills what holds the prefix and removes
the regions. It ignores SIGINT, SIGTERM and SIGHUP, so Ctrl-C on the terminal or a signal to the
launcher's process group does not stop it before the cleanup. It is given the prefix's tag only
(the part after Triton's default), so its own command line never matches the prefix:

    python3 reaper.py --tag ty0123456789ab_ < pipe

Standard library only.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import time
from pathlib import Path

PREFIX_ROOT = "triton_python_backend_shm_region_"  # Triton's default prefix, kept so the files stay recognisable
SHM = Path("/dev/shm")


def new_prefix() -> str:
    """A region prefix no other server on this host uses: Triton's default, then a random tag."""
    return f"{PREFIX_ROOT}ty{secrets.token_hex(6)}_"


def tag(prefix: str) -> str:
    """The part of a prefix from new_prefix() after Triton's default (what the watchdog is given)."""
    if not prefix.startswith(PREFIX_ROOT) or len(prefix) <= len(PREFIX_ROOT):
        raise ValueError(f"{prefix!r} is not {PREFIX_ROOT}<tag>")
    return prefix[len(PREFIX_ROOT) :]


def backend_arg(prefix: str) -> str:
    """The tritonserver flag that makes the Python backend name its regions (and tell its stubs) `prefix...`."""
    return f"--backend-config=python,shm-region-prefix-name={prefix}"


def _state(pid: int, proc: Path) -> str | None:
    try:
        return (proc / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def holders(prefix: str, proc: Path = Path("/proc")) -> list[int]:
    """Pids of live processes (zombies excluded) whose command line holds `prefix`, this process excluded."""
    needle = prefix.encode()
    found = []
    for entry in os.listdir(proc):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = (proc / entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline and _state(int(entry), proc) not in (None, "Z", "X"):
            found.append(int(entry))
    return found


def regions(prefix: str, shm: Path = SHM) -> list[Path]:
    """The shared-memory files of the server that used `prefix`."""
    try:
        return sorted(p for p in shm.iterdir() if p.name.startswith(prefix))
    except OSError:
        return []


def kill_holders(prefix: str, timeout: float = 10.0, proc: Path = Path("/proc")) -> list[int]:
    """SIGKILL every process holding `prefix` until none is left (or `timeout`); returns the pids signalled.

    SIGKILL because a stub whose server is gone ignores SIGTERM; call this after the server had its
    chance to stop cleanly.
    """
    signalled: list[int] = []
    deadline = time.monotonic() + timeout
    while True:
        pids = holders(prefix, proc)
        if not pids or time.monotonic() > deadline:
            return signalled
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            if pid not in signalled:
                signalled.append(pid)
        time.sleep(0.05)


def remove_regions(prefix: str, shm: Path = SHM) -> list[str]:
    """Unlink the server's regions (only once no process of it is left); returns their names."""
    removed = []
    for path in regions(prefix, shm):
        try:
            path.unlink()
            removed.append(path.name)
        except FileNotFoundError:
            continue
    return removed


def reap(prefix: str, timeout: float = 10.0) -> tuple[list[int], list[str]]:
    """Kill what is left of the server that used `prefix`, then remove its regions."""
    killed = kill_holders(prefix, timeout)
    left = holders(prefix)
    return killed, ([] if left else remove_regions(prefix))


def watch(prefix: str) -> int:
    """The watchdog: block until stdin closes, then reap. Returns 0, or 1 if a process survived."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    while sys.stdin.buffer.read(4096):  # the launcher never writes; EOF is the signal
        pass
    killed, removed = reap(prefix)
    if killed or removed:
        sys.stderr.write(
            f"reaper: the launcher is gone; killed {len(killed)} process(es) and removed "
            f"{len(removed)} region(s) of tritonserver {prefix}\n"
        )
    return 1 if holders(prefix) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reaper.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tag", required=True, help=f"the server's region prefix after {PREFIX_ROOT}")
    args = parser.parse_args(argv)
    if len(args.tag) < 8 or "/" in args.tag:  # a short tag could match other servers' regions
        parser.error(f"refusing the tag {args.tag!r}: give the one of the launcher's prefix")
    return watch(PREFIX_ROOT + args.tag)


if __name__ == "__main__":
    sys.exit(main())
