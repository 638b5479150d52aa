"""A GPT-2 checkpoint made by the real tools, for `--model DIR` (tests/conftest.py builds it once per session).

The checkpoint is what a user brings: a GPT2LMHeadModel of GPT-2 124M's shape (12 layers, 768 wide, 12 heads;
random weights) saved with `save_pretrained`, and a byte-level BPE trained with `tokenizers`, wrapped in
`GPT2TokenizerFast` and saved with `save_pretrained`. Its config keeps GPT2Config's default eos_token_id
(50256, beyond this vocabulary), as a checkpoint made that way does; the builder must take the tokenizer's.
A second folder holds the same checkpoint with vocab.json + merges.txt instead of tokenizer.json.
"""

from __future__ import annotations

import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from builders.nets.gpt2 import GPT2Config, GPT2LMHeadModel  # transformers, with the broken torchvision hidden
from tritonyard_contract import EOS_TOKEN

SHAPE = {"n_layer": 12, "n_embd": 768, "n_head": 12}  # GPT-2 124M
N_POSITIONS = 256  # 1024 in GPT-2: only the position table shrinks, and with it the export
VOCAB = 2000  # BPE merges learned from a few stdlib modules (under a second)
CORPUS = ("argparse.py", "dataclasses.py", "functools.py", "inspect.py", "typing.py")
PROMPTS = ["def main():", "The oil level in the tank is", "import os\nclass Reader:\n    def"]
NEW_TOKENS = 20
# Prompts beyond the builder's own check prompts: special token, prefix spaces, multibyte, whitespace runs.
TEXTS = [*PROMPTS, " leading space", "a<|endoftext|>b", "emoji 🦊 and 世界", "tabs\t\tand  spaces\n\n", "x"]


def train_bpe() -> Tokenizer:
    """GPT-2's recipe with the `tokenizers` library: byte-level BPE, <|endoftext|> as its special token."""
    root = Path(sysconfig.get_paths()["stdlib"])
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=[EOS_TOKEN],  # id 0, unlike GPT-2's 50256: the builder must look it up
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train([str(root / name) for name in CORPUS], trainer)
    return bpe


@dataclass(frozen=True)
class Checkpoint:
    path: Path  # config.json, model.safetensors, tokenizer.json, tokenizer_config.json
    bpe_files: Path  # the same, with vocab.json + merges.txt in place of tokenizer.json


def make_checkpoint(path: Path, bpe_files: Path) -> Checkpoint:
    """The checkpoint in `path` (tokenizer.json) and again in `bpe_files` (vocab.json + merges.txt)."""
    from transformers import GPT2TokenizerFast

    tokenizer = GPT2TokenizerFast(
        tokenizer_object=train_bpe(), eos_token=EOS_TOKEN, bos_token=EOS_TOKEN, unk_token=EOS_TOKEN
    )
    tokenizer.save_pretrained(path)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=N_POSITIONS, initializer_range=0.1, **SHAPE
    )  # 0.1: random weights at GPT-2's 0.02 make greedy decoding repeat one token
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(path)
    assert not (path / "vocab.json").exists(), "transformers 5 saves tokenizer.json only"
    # transformers 5 writes no vocab.json/merges.txt any more; GPT-2's own release has them, in the format
    # the `tokenizers` BPE model saves.
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer_config.json"):
        os.link(path / name, bpe_files / name)
    Tokenizer.from_file(str(path / "tokenizer.json")).model.save(str(bpe_files))
    assert (bpe_files / "vocab.json").is_file() and (bpe_files / "merges.txt").is_file()
    return Checkpoint(path, bpe_files)


def load_reference(checkpoint: Checkpoint) -> tuple[GPT2LMHeadModel, Any]:
    """What a user compares with: transformers' own loading of the checkpoint folder (model, GPT2TokenizerFast)."""
    from transformers import GPT2TokenizerFast

    model = GPT2LMHeadModel.from_pretrained(checkpoint.path).eval()
    return model, GPT2TokenizerFast.from_pretrained(checkpoint.path)


def hf_greedy(reference, prompt: str, new_tokens: int) -> tuple[list[int], str]:
    """`generate(do_sample=False)`'s new tokens up to EOS, and their text as the user's tokenizer decodes it.

    `reference` is (GPT2LMHeadModel, its tokenizer) as transformers loads them. eos_token_id is given: a config can
    keep GPT2Config's default 50256, which a smaller vocabulary does not have.
    """
    model, tokenizer = reference
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(
            **inputs,
            do_sample=False,
            max_new_tokens=new_tokens,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.eos_token_id,
        )
    ids = out[0, inputs.input_ids.shape[1] :].tolist()
    if tokenizer.eos_token_id in ids:
        ids = ids[: ids.index(tokenizer.eos_token_id)]
    return ids, tokenizer.decode(ids, skip_special_tokens=True)
