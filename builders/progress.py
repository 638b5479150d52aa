"""Step progress and the end-of-build summary, logged to stderr."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("tritonyard.build")


class Progress:
    """Numbered steps with timings: `[2/9] export yolov8 ... ok (4.1s)`."""

    def __init__(self, title: str, total: int) -> None:
        self.title, self.total, self.done = title, total, 0
        log.info("== %s: %d steps", title, total)

    @contextmanager
    def step(self, label: str) -> Iterator[None]:
        self.done += 1
        tag = f"[{self.done}/{self.total}] {label}"
        log.info("%s ...", tag)
        start = time.perf_counter()
        yield
        log.info("%s ok (%.1fs)", tag, time.perf_counter() - start)


def warn_random_weights(what: str, how: str) -> None:
    """Say loudly that a model is a stand-in, so nobody mistakes its outputs for real ones."""
    bar = "!" * 78
    log.warning(
        "%s\n!! %s uses RANDOM weights (%s).\n!! Outputs are meaningless; pass real weights for real results.\n%s",
        bar,
        what,
        how,
        bar,
    )


def _size(path: Path) -> str:
    size = float(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()))
    for unit in ("B", "KB", "MB"):
        if size < 1024 or unit == "MB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


def _entries(folder: Path) -> list[str]:
    """A model folder's files; a package shipped beside model.py (the contract) shows once as `1/<package>/`."""
    paths = (f.relative_to(folder).parts for f in folder.rglob("*") if f.is_file() and "__pycache__" not in f.parts)
    return sorted({"/".join(p) if len(p) <= 2 else "/".join(p[:2]) + "/" for p in paths})


def summary(repo: Path, rows: list[tuple[str, str]]) -> str:
    """A table of models, how each is served, its files and size on disk."""
    width = max([len("model"), *(len(name) for name, _ in rows)])
    lines = [f"{'model':<{width}} {'served by':<27} {'files':<44} {'size':>9}"]
    for name, served_by in rows:
        folder = repo / name
        files = ", ".join(_entries(folder))
        lines.append(f"{name:<{width}} {served_by:<27} {files:<44} {_size(folder):>9}")
    table = "\n".join(lines)
    log.info("repository %s\n%s", repo, table)
    return table
