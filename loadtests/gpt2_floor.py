"""The GPT-2 compute floor: the served decoder's model.onnx in an in-process onnxruntime greedy loop with a KV cache.

No server, no tokenizing, no network: one prefill of the prompt, then one decoder call per new token, batch 1,
with the served model's intra-op thread count. Served figures are compared with this (`make bench`).

It also finds what the served repository holds for GPT-2 (the decoder ONNX, the tokenizer.json), by looking
at the files rather than at model names, so the floor follows whatever layout the builder writes.
"""

from __future__ import annotations

import re
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tritonyard_contract import EOS_TOKEN
from tritonyard_contract.onnx_session import cpu_session

PAST_KEY = re.compile(r"^past_key_values\.(\d+)\.key$")
# Where the served tokenizer.json is looked for first; then any model's version folder.
TOKENIZER_OWNERS = ("gpt2_stream",)
DEFAULT_THREADS = 2


def _versions(model_dir: Path) -> list[Path]:
    """A model's numeric version folders, newest first."""
    return sorted((p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: -int(p.name))


def find_tokenizer(repo: Path) -> Path:
    """The served GPT-2 tokenizer.json: the newest version's of gpt2_stream (then gpt2, ...), else any model's."""
    owners = [repo / m for m in TOKENIZER_OWNERS if (repo / m).is_dir()]
    others = sorted(p for p in repo.iterdir() if p.is_dir() and p not in owners) if repo.is_dir() else []
    for model_dir in [*owners, *others]:
        for version in _versions(model_dir):
            if (version / "tokenizer.json").is_file():
                return version / "tokenizer.json"
    raise FileNotFoundError(f"no <model>/<version>/tokenizer.json in {repo}: build GPT-2 into it first")


def _is_decoder(path: Path) -> bool:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return any(PAST_KEY.match(i.name) for i in graph.input)


def find_decoder(repo: Path) -> Path:
    """The served KV-cache decoder: a newest-version model.onnx whose inputs include past_key_values.0.key."""
    for model_dir in sorted(p for p in repo.iterdir() if p.is_dir()):
        versions = _versions(model_dir)
        if versions and (versions[0] / "model.onnx").is_file() and _is_decoder(versions[0] / "model.onnx"):
            return versions[0] / "model.onnx"
    raise FileNotFoundError(f"no KV-cache decoder (an ONNX with past_key_values.* inputs) in {repo}")


def served_threads(decoder: Path) -> int:
    """The intra-op threads the served model gives onnxruntime (its config's intra_op_threads), else 2."""
    config = decoder.parent.parent / "config.pbtxt"
    text = config.read_text() if config.is_file() else ""
    match = re.search(r'key:\s*"intra_op_threads"\s*value:\s*\{\s*string_value:\s*"(\d+)"', text)
    return int(match.group(1)) if match else DEFAULT_THREADS


@dataclass(frozen=True)
class FloorRun:
    """Medians over the rounds: tokens/s of the whole generation, time to the first token, mean step after it."""

    tokens: int
    tok_s: float
    ttft_ms: float
    itl_ms: float
    rounds: int
    threads: int
    decoder: str

    def as_dict(self) -> dict:
        return asdict(self)


class GreedyLoop:
    """Greedy decoding with the KV cache, batch 1, straight on an onnxruntime session."""

    def __init__(self, decoder: Path, eos_token_id: int, threads: int) -> None:
        self.session = cpu_session(decoder, threads, quiet=True)
        self.eos = eos_token_id
        past = [i for i in self.session.get_inputs() if i.name.startswith("past_key_values.")]
        self.past_shapes = {i.name: (1, i.shape[1], 0, i.shape[3]) for i in past}
        self.present_names = [o.name for o in self.session.get_outputs()[1:]]

    def _step(self, ids: np.ndarray, mask: np.ndarray, past: dict) -> tuple[int, dict]:
        n = ids.shape[1]
        positions = np.arange(mask.shape[1] - n, mask.shape[1], dtype=np.int64)[None]
        feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": positions, **past}
        logits, *present = self.session.run(None, feeds)
        names = [n.replace("present.", "past_key_values.", 1) for n in self.present_names]
        return int(logits[0, -1].argmax()), dict(zip(names, present))

    def __call__(self, prompt_ids: list[int], new_tokens: int) -> tuple[list[int], list[float]]:
        """The new tokens (EOS ends early) and each one's time since the start, in seconds."""
        start = time.perf_counter()
        ids = np.asarray([prompt_ids], np.int64)
        mask = np.ones_like(ids)
        past = {k: np.zeros(s, np.float32) for k, s in self.past_shapes.items()}
        tokens: list[int] = []
        times: list[float] = []
        for _ in range(new_tokens):
            token, past = self._step(ids, mask, past)
            tokens.append(token)
            times.append(time.perf_counter() - start)
            if token == self.eos:
                break
            ids, mask = np.asarray([[token]], np.int64), np.ones((1, mask.shape[1] + 1), np.int64)
        return tokens, times


class Floor:
    """The floor for one prompt (tokenized by the served tokenizer), run a generation at a time, so a benchmark
    can interleave it with the served runs and both see the same machine load."""

    def __init__(self, repo: Path, prompt: str) -> None:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(find_tokenizer(repo)))
        self.decoder = find_decoder(repo)
        self.label = str(self.decoder.relative_to(repo))
        self.threads = served_threads(self.decoder)
        self.loop = GreedyLoop(self.decoder, tokenizer.token_to_id(EOS_TOKEN), self.threads)
        self.prompt_ids = tokenizer.encode(prompt).ids
        self.runs: list[tuple[list[int], list[float]]] = []
        self.loop(self.prompt_ids, 2)  # warm-up: first allocations

    def run(self, new_tokens: int) -> None:
        """One timed generation, kept for summary()."""
        self.runs.append(self.loop(self.prompt_ids, new_tokens))

    def summary(self) -> FloorRun:
        tok_s = [len(tokens) / times[-1] for tokens, times in self.runs]
        itl = [(t[-1] - t[0]) / (len(t) - 1) for _, t in self.runs if len(t) > 1]
        return FloorRun(
            tokens=len(self.runs[0][0]),
            tok_s=statistics.median(tok_s),
            ttft_ms=statistics.median(t[0] for _, t in self.runs) * 1000,
            itl_ms=statistics.median(itl) * 1000 if itl else float("nan"),
            rounds=len(self.runs),
            threads=self.threads,
            decoder=self.label,
        )


def measure(repo: Path, prompt: str, new_tokens: int, rounds: int = 3) -> FloorRun:
    """`rounds` timed generations of the floor, one after another, after a warm-up."""
    floor = Floor(repo, prompt)
    for _ in range(max(1, rounds)):
        floor.run(new_tokens)
    return floor.summary()
