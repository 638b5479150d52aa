"""The admin key that guards Triton's model-repository API: where it comes from, and the flags that set it.

Order: the TRITON_ADMIN_KEY environment variable, else the key file, else a new random key written
to the key file (mode 0600). The key itself is never logged; callers print the file's path instead.
"""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from tritonyard_contract import protocol

ENV_KEY = protocol.ADMIN_KEY_ENV
ENV_KEY_FILE = protocol.ADMIN_KEY_FILE_ENV
DEFAULT_KEY_FILE = Path(__file__).resolve().parent.parent / ".triton-admin-key"  # gitignored
MIN_LENGTH = protocol.ADMIN_MIN_LENGTH
HTTP_HEADER = protocol.ADMIN_HTTP_HEADER
GRPC_HEADER = protocol.ADMIN_GRPC_HEADER
# Only the repository API is restricted: loading a model runs its model.py, i.e. arbitrary code. Shared-memory
# registration stays open because local clients use it (clients.clo --shm).
RESTRICTED = protocol.RESTRICTED_API


class AdminKeyError(ValueError):
    """The key given is unusable: too short, or its file is readable by others."""


@dataclass(frozen=True)
class AdminKey:
    """A key and where it came from ("env", "file" or "generated"); repr never shows the key."""

    value: str
    source: str
    path: Path | None = None

    def __repr__(self) -> str:
        return f"AdminKey(source={self.source!r}, path={self.path!r})"

    def describe(self, http_url: str = "HOST:PORT") -> str:
        """Lines for the operator: where the key is and how to send it, without the key."""
        where = f"the key in {self.path}" if self.path else f"${ENV_KEY}"
        read = f"$(cat {self.path})" if self.path else f"${ENV_KEY}"
        return (
            f"model-repository API restricted ({self.source} key): send {where} as header '{HTTP_HEADER}' "
            f"(gRPC metadata '{GRPC_HEADER}'), e.g.\n"
            f'  curl -X POST -H "{HTTP_HEADER}: {read}" http://{http_url}/v2/repository/index'
        )


def new_key() -> str:
    """A random key for one run: 64 hex characters."""
    return secrets.token_hex(32)


def check(key: str, origin: str) -> str:
    """Refuse a short or multi-line key; returns it stripped."""
    key = key.strip()
    if len(key) < MIN_LENGTH or any(c.isspace() for c in key):
        raise AdminKeyError(f"{origin}: the admin key must be at least {MIN_LENGTH} characters, without spaces")
    return key


def _read_private(path: Path) -> str:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AdminKeyError(f"{path} is readable by others (mode {stat.S_IMODE(mode):o}): chmod 600 it")
    return check(path.read_text(), str(path))


def _write_private(path: Path, key: str) -> None:
    """Create the file 0600 from the start (never world-readable, not even briefly), replacing an old one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    tmp.replace(path)


def resolve(key_file: Path | None = None, environ: dict[str, str] | None = None) -> AdminKey:
    """The key from the environment, else from `key_file` (default .triton-admin-key), else a new one saved there."""
    environ = os.environ if environ is None else environ
    if environ.get(ENV_KEY):
        return AdminKey(check(environ[ENV_KEY], f"${ENV_KEY}"), "env")
    path = Path(key_file or environ.get(ENV_KEY_FILE) or DEFAULT_KEY_FILE)
    if path.is_file():
        return AdminKey(_read_private(path), "file", path)
    key = new_key()
    _write_private(path, key)
    return AdminKey(key, "generated", path)


def resolve_existing(key_file: Path | None = None, environ: dict[str, str] | None = None) -> str:
    """The key a client uses: from the environment or an existing key file; never makes a new one."""
    environ = os.environ if environ is None else environ
    if environ.get(ENV_KEY):
        return check(environ[ENV_KEY], f"${ENV_KEY}")
    path = Path(key_file or environ.get(ENV_KEY_FILE) or DEFAULT_KEY_FILE)
    if not path.is_file():
        raise AdminKeyError(f"no ${ENV_KEY} and no key file {path}: start the server with `make serve` first")
    return _read_private(path)


def restricted_args(key: str) -> list[str]:
    """tritonserver flags that put the repository API behind `key` on HTTP and gRPC."""
    return [
        f"--http-restricted-api={RESTRICTED}:{HTTP_HEADER}={key}",
        f"--grpc-restricted-protocol={RESTRICTED}:{HTTP_HEADER}={key}",
    ]
