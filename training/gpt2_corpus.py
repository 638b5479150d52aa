"""The GPT-2 stand-in's corpus: Shakespeare's complete works as genai-perf ships them, and the held-out split.

genai-perf (NVIDIA's LLM benchmark client) draws its synthetic prompts from a copy of the complete works it ships
as genai_perf/inputs/retrievers/shakespeare.txt (5.0 MB, letters, digits, spaces and newlines only: punctuation and
apostrophes are stripped). The works are in the public domain; the wheel carries no note on where the copy comes
from, only genai-perf's own BSD-3-Clause license. `shakespeare()` downloads the 0.0.16 wheel with pip, reads the
file out of it and checks its sha256.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import zipfile
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "data" / "gpt2"  # gitignored: the wheel and the text
GENAI_PERF = "genai-perf==0.0.16"
WHEEL_GLOB = "genai_perf-0.0.16-*.whl"
MEMBER = "genai_perf/inputs/retrievers/shakespeare.txt"
CORPUS_SHA256 = "e0e13a826912a4a81bb3a582aa73c4af0675bdeee6ddf6d505efb63d562d496f"

log = logging.getLogger("tritonyard.train")


class CorpusError(RuntimeError):
    """The corpus could not be fetched or is not the expected file."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _download_wheel(wheels: Path) -> Path:
    """genai-perf's wheel in `wheels`, downloaded with pip from PyPI unless already there."""
    found = sorted(wheels.glob(WHEEL_GLOB))
    if found:
        return found[0]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        GENAI_PERF,
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(wheels),
    ]
    log.info("== fetching the corpus: %s", " ".join(cmd[2:]))
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        tail = (run.stderr or run.stdout).strip()[-800:]
    except (OSError, subprocess.TimeoutExpired) as exc:
        tail = str(exc)
    found = sorted(wheels.glob(WHEEL_GLOB))
    if not found:
        raise CorpusError(
            f"could not download {GENAI_PERF} with pip (is PyPI reachable, and pip in this Python?): {tail or '?'}\n"
            f"Put its wheel into {wheels} yourself, or pass --corpus FILE (any English UTF-8 text)"
        )
    return found[0]


def shakespeare(data: Path = DATA) -> Path:
    """data/gpt2/shakespeare.txt, read out of genai-perf 0.0.16's wheel (fetched once) and checked by sha256."""
    target = data / "shakespeare.txt"
    if target.is_file() and sha256(target.read_bytes()) == CORPUS_SHA256:
        return target
    wheels = data / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    wheel = _download_wheel(wheels)
    try:
        with zipfile.ZipFile(wheel) as z:
            text = z.read(MEMBER)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise CorpusError(f"{wheel}: no {MEMBER} in it ({exc}); delete it to download it again") from exc
    if sha256(text) != CORPUS_SHA256:
        raise CorpusError(f"{wheel}: {MEMBER} has sha256 {sha256(text)}, not {CORPUS_SHA256}")
    target.write_bytes(text)
    return target


def split(text: str, segment_chars: int, val_every: int) -> tuple[list[str], list[str]]:
    """(train, validation) stretches of about `segment_chars`, cut after a newline; every `val_every`th is held out."""
    stretches: list[str] = []
    start = 0
    while start < len(text):
        end = text.find("\n", start + segment_chars)
        end = len(text) if end < 0 else end + 1
        stretches.append(text[start:end])
        start = end
    held_out = {i for i in range(len(stretches)) if i % val_every == val_every - 1}
    train = [t for i, t in enumerate(stretches) if i not in held_out]
    return train, [stretches[i] for i in sorted(held_out)]
