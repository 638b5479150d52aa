"""Publish a new version of a model into a live repository, load it, and roll it back.

    python -m serving.rollout publish --model efficientnet_v2 --version-dir build/effnet_v2/
    python -m serving.rollout rollback --model efficientnet_v2 --version 2

`publish` copies the folder (model.py, model.onnx...) into `<repository>/<model>/<next version>/`
through a hidden staging folder and a rename, so Triton never sees half a version; then it loads
the model through the repository API with the admin key and checks that the new version is ready
(if it does not load, Triton keeps serving the old one and the new folder is removed again).
Triton loads the new version next to the old one, switches traffic, then unloads the old one, and
reloads the ensembles that use the model: no request fails. `rollback` deletes a version folder
and loads the model again, which brings the highest remaining version back the same way.
docs/rollout.md has the whole procedure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from serving import adminkey
from serving.supervisor import TritonAdmin

DEFAULT_REPO = Path(__file__).resolve().parent.parent / "model_repository"


class RolloutError(RuntimeError):
    """The version could not be published, loaded or rolled back; the message says what to do."""


def versions(repository: Path, model: str) -> list[int]:
    """The model's version folders, ascending."""
    folder = repository / model
    if not (folder / "config.pbtxt").is_file():
        raise RolloutError(f"{folder} is not a model of the repository (no config.pbtxt)")
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())


def publish(repository: Path, model: str, source: Path) -> int:
    """Copy `source` in as the model's next version; returns that version number. Does not load it."""
    if not source.is_dir() or not any(source.iterdir()):
        raise RolloutError(f"{source}: not a folder with the version's files")
    version = max(versions(repository, model), default=0) + 1
    staging = repository / model / f".staging-{version}-{os.getpid()}"  # not a number: Triton ignores it
    shutil.rmtree(staging, ignore_errors=True)
    try:
        shutil.copytree(source, staging, ignore=shutil.ignore_patterns("__pycache__"))
        staging.rename(repository / model / str(version))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return version


def load(admin: TritonAdmin, model: str, version: int) -> None:
    """Load (or reload) the model; fail unless `version` is ready afterwards."""
    admin.load(model)
    if admin.state(model, str(version)) != "READY":
        raise RolloutError(f"{model} version {version} is not READY after the load: see the server log")


def roll_out(repository: Path, admin: TritonAdmin, model: str, source: Path) -> int:
    """Publish `source` as the next version and load it; if it does not load, remove it again and raise.

    Triton keeps serving the loaded version when a reload fails, so a failed rollout changes nothing.
    """
    version = publish(repository, model, source)
    try:
        load(admin, model, version)
    except (RolloutError, RuntimeError, OSError) as exc:
        shutil.rmtree(repository / model / str(version), ignore_errors=True)
        raise RolloutError(f"{model} version {version} did not load, removed it again: {exc}") from exc
    return version


def rollback(repository: Path, admin: TritonAdmin, model: str, version: int) -> int:
    """Delete version `version` and load the model again; returns the version now served."""
    remaining = [v for v in versions(repository, model) if v != version]
    if not remaining:
        raise RolloutError(f"{model} has no version besides {version} to roll back to")
    folder = repository / model / str(version)
    if not folder.is_dir():
        raise RolloutError(f"{folder} does not exist")
    shutil.rmtree(folder)
    load(admin, model, remaining[-1])
    return remaining[-1]


def main(argv: list[str] | None = None) -> int:
    """CLI: publish or rollback; exit 0 on success, 1 with a one-line reason otherwise."""
    parser = argparse.ArgumentParser(prog="python -m serving.rollout", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("publish", "rollback"))
    parser.add_argument("--model", required=True)
    parser.add_argument("--version-dir", type=Path, help="publish: the folder with the new version's files")
    parser.add_argument("--version", type=int, help="rollback: the version to remove")
    parser.add_argument("--repository", type=Path, default=Path(os.environ.get("MODEL_REPOSITORY", DEFAULT_REPO)))
    parser.add_argument("--url", default=f"127.0.0.1:{os.environ.get('HTTP_PORT', '8000')}")
    parser.add_argument("--admin-key-file", type=Path, help=f"default: ${adminkey.ENV_KEY}, else the serve key file")
    args = parser.parse_args(argv)
    try:
        key = adminkey.resolve_existing(args.admin_key_file)
        admin = TritonAdmin(args.url, key)
        if args.action == "publish":
            if args.version_dir is None:
                parser.error("publish needs --version-dir")
            version = roll_out(args.repository, admin, args.model, args.version_dir)
            sys.stdout.write(f"{args.model}: version {version} published and serving\n")
        else:
            if args.version is None:
                parser.error("rollback needs --version")
            now = rollback(args.repository, admin, args.model, args.version)
            sys.stdout.write(f"{args.model}: version {args.version} removed; version {now} serving\n")
    except (RolloutError, adminkey.AdminKeyError, OSError, RuntimeError) as exc:
        sys.stderr.write(f"rollout failed: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
