"""The builder reading a user's GPT-2 checkpoint folder (tests/helpers/gpt2_checkpoint.py), without a server:
the EOS it takes, and tokenizers equal to transformers' from tokenizer.json or from vocab.json + merges.txt.

Slow: the checkpoint is 124M-shaped, and the session builds it (and its repository) once for these tests and
the served ones in tests/integration/test_gpt2_checkpoint.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer

from builders import gpt2, gpt2_load
from builders.triton_config import read_config
from tests.helpers.gpt2_checkpoint import TEXTS, Checkpoint

pytestmark = pytest.mark.slow


def test_gpt2_builder_takes_tokenizer_eos_when_config_names_an_id_beyond_the_vocab(
    gpt2_checkpoint: Checkpoint, gpt2_reference, gpt2_checkpoint_repo: Path
) -> None:
    _, tokenizer = gpt2_reference
    assert tokenizer.eos_token_id == 0 and gpt2_reference[0].config.eos_token_id == 50256
    dims = gpt2.nominal_dims(gpt2.Gpt2Config(model=str(gpt2_checkpoint.path)))
    assert (dims.n_layer, dims.n_head, dims.head_dim, dims.vocab_size) == (12, 12, 64, len(tokenizer))
    assert dims.eos_token_id == 0
    for name in ("gpt2_stream",):  # gpt2 holds no model: it forwards to gpt2_stream
        params = read_config(gpt2_checkpoint_repo / name / "config.pbtxt").parameters
        assert params["eos_token_id"].string_value == "0"
        assert params["vocab_size"].string_value == str(len(tokenizer))


def test_gpt2_tokenizer_json_encodes_like_transformers_when_built_from_tokenizer_json(
    gpt2_checkpoint_repo: Path, gpt2_reference
) -> None:
    _, tokenizer = gpt2_reference
    for name in ("gpt2_stream",):  # the one copy: gpt2_stream tokenizes for both entries
        served = Tokenizer.from_file(str(gpt2_checkpoint_repo / name / "1" / gpt2.TOKENIZER_FILE))
        for text in TEXTS:
            ids = tokenizer(text).input_ids
            assert served.encode(text).ids == ids, (name, text)
            assert served.decode(ids, skip_special_tokens=True) == tokenizer.decode(ids, skip_special_tokens=True)


def test_gpt2_builder_reads_tokenizer_like_transformers_when_only_vocab_json_and_merges_txt_exist(
    gpt2_checkpoint: Checkpoint, gpt2_reference, gpt2_checkpoint_repo: Path, tmp_path: Path
) -> None:
    """The fallback's tokenizer equals transformers' reading of the same files and the tokenizer.json build's.

    The decoder is the same weights, so a build from these files serves the same text as the one above.
    """
    from transformers import GPT2TokenizerFast

    assert not (gpt2_checkpoint.bpe_files / gpt2.TOKENIZER_FILE).exists()
    model, tokenizer, dims = gpt2_load.load(gpt2.Gpt2Config(model=str(gpt2_checkpoint.bpe_files)))
    from_files = GPT2TokenizerFast.from_pretrained(gpt2_checkpoint.bpe_files)
    served = Tokenizer.from_file(str(gpt2_checkpoint_repo / "gpt2_stream" / "1" / gpt2.TOKENIZER_FILE))
    assert dims.eos_token_id == 0 and dims.vocab_size == tokenizer.get_vocab_size() == len(from_files)
    for text in TEXTS:
        ids = from_files(text).input_ids
        assert tokenizer.encode(text).ids == ids == served.encode(text).ids, text
        assert tokenizer.decode(ids, skip_special_tokens=True) == from_files.decode(ids, skip_special_tokens=True)
    assert torch.equal(model.lm_head.weight, gpt2_reference[0].lm_head.weight)
    # What a build of this folder ships to the served models, read back the way they read it.
    tokenizer.save(str(tmp_path / gpt2.TOKENIZER_FILE))
    shipped = Tokenizer.from_file(str(tmp_path / gpt2.TOKENIZER_FILE))
    assert [shipped.encode(t).ids for t in TEXTS] == [served.encode(t).ids for t in TEXTS]
