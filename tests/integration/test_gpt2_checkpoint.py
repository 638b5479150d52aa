"""`--model DIR` with files made by the real tools, served by a real tritonserver, against transformers.

The checkpoint is what a user brings: a GPT2LMHeadModel of GPT-2 124M's shape (12 layers, 768 wide, 12 heads;
random weights) saved with `save_pretrained`, and a byte-level BPE trained with `tokenizers`, wrapped in
`GPT2TokenizerFast` and saved with `save_pretrained`. Its config keeps GPT2Config's default eos_token_id
(50256, beyond this vocabulary), as a checkpoint made that way does; the builder must take the tokenizer's.
A second folder holds the same checkpoint with vocab.json + merges.txt instead of tokenizer.json.
The served text must equal `generate(do_sample=False)` decoded by the same tokenizer, token for token.
"""

from __future__ import annotations

import os
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from builders import gpt2
from builders.contract import EOS_TOKEN
from builders.nets.gpt2 import GPT2Config, GPT2LMHeadModel  # transformers, with the broken torchvision hidden
from builders.triton_config import read_config
from clients import gpt2 as client
from serving.launcher import TritonServer, free_ports

pytestmark = pytest.mark.integration

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


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Checkpoint:
    from transformers import GPT2TokenizerFast

    path = tmp_path_factory.mktemp("gpt2_checkpoint")
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
    bpe_files = tmp_path_factory.mktemp("gpt2_checkpoint_bpe_files")
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer_config.json"):
        os.link(path / name, bpe_files / name)
    Tokenizer.from_file(str(path / "tokenizer.json")).model.save(str(bpe_files))
    assert (bpe_files / "vocab.json").is_file() and (bpe_files / "merges.txt").is_file()
    return Checkpoint(path, bpe_files)


@pytest.fixture(scope="module")
def reference(checkpoint: Checkpoint):
    """What a user compares with: transformers' own loading of the checkpoint folder."""
    from transformers import GPT2TokenizerFast

    model = GPT2LMHeadModel.from_pretrained(checkpoint.path).eval()
    return model, GPT2TokenizerFast.from_pretrained(checkpoint.path)


@pytest.fixture(scope="module")
def repo(checkpoint: Checkpoint, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gpt2_checkpoint_repo")
    gpt2.build(gpt2.Gpt2Config(model=str(checkpoint.path)), out)
    return out


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    log = tmp_path_factory.mktemp("gpt2_checkpoint_triton") / "tritonserver.log"
    with TritonServer(repo, *free_ports(3), log_file=log, ready_timeout=600) as triton:
        yield triton


def hf_greedy(reference, prompt: str, new_tokens: int) -> tuple[list[int], str]:
    """`generate(do_sample=False)`'s new tokens up to EOS, and their text as the user's tokenizer decodes it.

    eos_token_id is given: the config keeps GPT2Config's default 50256, which this vocabulary does not have.
    """
    model, tokenizer = reference
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(
            **inputs, do_sample=False, max_new_tokens=new_tokens,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
        )  # fmt: skip
    ids = out[0, inputs.input_ids.shape[1] :].tolist()
    if tokenizer.eos_token_id in ids:
        ids = ids[: ids.index(tokenizer.eos_token_id)]
    return ids, tokenizer.decode(ids, skip_special_tokens=True)


@pytest.fixture(scope="module")
def expected(reference) -> dict[str, tuple[list[int], str]]:
    return {prompt: hf_greedy(reference, prompt, NEW_TOKENS) for prompt in PROMPTS}


def served_text_of(hf_text: str) -> str:
    """The server holds back a trailing incomplete UTF-8 character (random weights emit lone bytes)."""
    return hf_text.rstrip("\ufffd")


def test_gpt2_builder_takes_tokenizer_eos_when_config_names_an_id_beyond_the_vocab(
    checkpoint: Checkpoint, reference, repo: Path
) -> None:
    _, tokenizer = reference
    assert tokenizer.eos_token_id == 0 and reference[0].config.eos_token_id == 50256
    dims = gpt2.nominal_dims(gpt2.Gpt2Config(model=str(checkpoint.path)))
    assert (dims.n_layer, dims.n_head, dims.head_dim, dims.vocab_size) == (12, 12, 64, len(tokenizer))
    assert dims.eos_token_id == 0
    for name in ("gpt2", "gpt2_stream"):
        params = read_config(repo / name / "config.pbtxt").parameters
        assert params["eos_token_id"].string_value == "0"
        assert params["vocab_size"].string_value == str(len(tokenizer))


def test_gpt2_equals_transformers_generate_when_checkpoint_is_a_user_save_pretrained_folder(
    server: TritonServer, reference, expected: dict[str, tuple[list[int], str]]
) -> None:
    _, tokenizer = reference
    for prompt in PROMPTS:
        ids, text = expected[prompt]
        got = client.generate(server.http_url, prompt, max_tokens=NEW_TOKENS, temperature=0.0)
        assert len(set(ids)) > 3, f"greedy collapsed onto few tokens: {ids}"
        assert got.text == served_text_of(text), f"{prompt!r}: served {got.text!r}, generate {text!r}"
        assert got.completion_tokens == len(ids)
        assert got.prompt_tokens == len(tokenizer(prompt).input_ids)
        assert got.finish_reason == ("length" if len(ids) == NEW_TOKENS else "stop")


def test_gpt2_stream_equals_transformers_generate_when_streamed_over_grpc(
    server: TritonServer, expected: dict[str, tuple[list[int], str]]
) -> None:
    prompt = PROMPTS[0]
    ids, text = expected[prompt]
    pieces: list[str] = []
    got = client.stream(server.grpc_url, prompt, on_piece=pieces.append, max_tokens=NEW_TOKENS, temperature=0.0)
    assert "".join(pieces) == got.text == served_text_of(text)
    assert len(pieces) > 1 and got.completion_tokens == len(ids)


def test_gpt2_tokenizer_json_encodes_like_transformers_when_built_from_tokenizer_json(repo: Path, reference) -> None:
    _, tokenizer = reference
    for name in ("gpt2", "gpt2_stream", "gpt2_tokenizer", "gpt2_detokenizer"):
        served = Tokenizer.from_file(str(repo / name / "1" / gpt2.TOKENIZER_FILE))
        for text in TEXTS:
            ids = tokenizer(text).input_ids
            assert served.encode(text).ids == ids, (name, text)
            assert served.decode(ids, skip_special_tokens=True) == tokenizer.decode(ids, skip_special_tokens=True)


def test_gpt2_builder_reads_tokenizer_like_transformers_when_only_vocab_json_and_merges_txt_exist(
    checkpoint: Checkpoint, reference, repo: Path, tmp_path: Path
) -> None:
    """The fallback's tokenizer equals transformers' reading of the same files and the tokenizer.json build's.

    The decoder is the same weights, so a build from these files serves the same text as the one above.
    """
    from transformers import GPT2TokenizerFast

    assert not (checkpoint.bpe_files / gpt2.TOKENIZER_FILE).exists()
    model, tokenizer, dims = gpt2.load(gpt2.Gpt2Config(model=str(checkpoint.bpe_files)))
    from_files = GPT2TokenizerFast.from_pretrained(checkpoint.bpe_files)
    served = Tokenizer.from_file(str(repo / "gpt2" / "1" / gpt2.TOKENIZER_FILE))
    assert dims.eos_token_id == 0 and dims.vocab_size == tokenizer.get_vocab_size() == len(from_files)
    for text in TEXTS:
        ids = from_files(text).input_ids
        assert tokenizer.encode(text).ids == ids == served.encode(text).ids, text
        assert tokenizer.decode(ids, skip_special_tokens=True) == from_files.decode(ids, skip_special_tokens=True)
    assert torch.equal(model.lm_head.weight, reference[0].lm_head.weight)
    # What a build of this folder ships to the served models, read back the way they read it.
    tokenizer.save(str(tmp_path / gpt2.TOKENIZER_FILE))
    shipped = Tokenizer.from_file(str(tmp_path / gpt2.TOKENIZER_FILE))
    assert [shipped.encode(t).ids for t in TEXTS] == [served.encode(t).ids for t in TEXTS]
