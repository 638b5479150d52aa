"""Loading GPT-2 for the builder: a local checkpoint (offline, through transformers) and the tokenizer it was
trained with. Without --model that checkpoint is the trained stand-in `make train-gpt2` saved in weights/gpt2 (read
like any user's folder); --random-weights gives the random-weight stand-in (a BPE trained on Python's stdlib)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import torch
from tokenizers import Tokenizer

from builders import progress
from builders.errors import BuildError
from builders.nets import gpt2 as nets
from builders.nets.gpt2 import Gpt2Dims
from tritonyard_contract import EOS_TOKEN

if TYPE_CHECKING:
    from builders.gpt2 import Gpt2Config

log = logging.getLogger("tritonyard.build")

TOKENIZER_FILE = "tokenizer.json"  # every model that tokenizes ships its own copy in its version folder
# The trained stand-in (committed): a save_pretrained folder, loaded like --model DIR unless --random-weights.
TRAINED_STAND_IN = Path(__file__).resolve().parent.parent / "weights" / "gpt2"
TRAINED_NOTE = "trained on Shakespeare by `make train-gpt2` (training/gpt2.py), not a production model"
T = TypeVar("T")


def _local(model: str) -> str:
    """`~` expanded: transformers and the file lookups below do not expand it themselves."""
    return str(Path(model).expanduser()) if model.startswith("~") else model


def load_offline(loader: Callable[..., T], model: str, **kwargs: object) -> T:
    """Call a `from_pretrained` without network; say what to do when the checkpoint is not local."""
    if model.startswith((".", "/", "~")) and not Path(model).expanduser().is_dir():
        raise BuildError(f"--model {model}: no such directory (a save_pretrained folder, or a cached hub name)")
    model = _local(model)
    try:
        return loader(model, local_files_only=True, **kwargs)
    except (OSError, ValueError) as exc:
        raise BuildError(
            f"GPT-2 model {model!r} is neither a local directory nor in the local Hugging Face cache "
            f"(builds run with HF_HUB_OFFLINE=1, model hubs are unreachable). Pass --model a directory written "
            f"by save_pretrained (config.json, weights, tokenizer.json or vocab.json+merges.txt): {exc}"
        ) from exc


def _checkpoint_file(model: str, filename: str) -> Path | None:
    model = _local(model)
    if Path(model).is_dir():
        path = Path(model) / filename
        return path if path.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(model, filename)
    except ValueError:  # not a valid hub name either: load_offline says so
        return None
    return Path(found) if isinstance(found, str) else None


def pretrained_tokenizer(model: str) -> tuple[Tokenizer, int]:
    """The tokenizer transformers loads for the checkpoint, as the `tokenizers` object the served models run,
    and its EOS id.

    transformers reads tokenizer.json, else vocab.json + merges.txt, and applies tokenizer_config.json on top
    (add_prefix_space, add_bos_token, eos/pad tokens it adds): taking its backend tokenizer makes the served
    models tokenize exactly like `AutoTokenizer.from_pretrained(model)`, whichever files the checkpoint has.
    """
    has_json = _checkpoint_file(model, TOKENIZER_FILE) is not None
    if not has_json and None in (_checkpoint_file(model, "vocab.json"), _checkpoint_file(model, "merges.txt")):
        # Checked first: given only config.json, transformers makes an empty GPT-2 tokenizer without complaint.
        raise BuildError(f"{model}: no tokenizer.json, nor vocab.json + merges.txt, next to the weights")
    from transformers import AutoTokenizer

    hf = load_offline(AutoTokenizer.from_pretrained, model)
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is None:
        raise BuildError(
            f"{model}: transformers loaded a {type(hf).__name__}, which has no `tokenizers` backend; "
            "the served models need a byte-level BPE like GPT-2's (tokenizer.json, or vocab.json + merges.txt)"
        )
    tokenizer = Tokenizer.from_str(backend.to_str())  # a copy: the settings below must not touch transformers'
    tokenizer.no_truncation()  # the served models check lengths themselves and never pad
    tokenizer.no_padding()
    eos = hf.eos_token_id
    if hf.eos_token is None or eos is None or tokenizer.token_to_id(str(hf.eos_token)) != eos:
        raise BuildError(
            f"{model}: the tokenizer has no end-of-text token (eos_token in tokenizer_config.json is "
            f"{hf.eos_token!r}); GPT-2's is {EOS_TOKEN}, and generation needs one to stop"
        )
    if getattr(hf, "clean_up_tokenization_spaces", False):
        log.warning(
            "  gpt2: tokenizer_config.json sets clean_up_tokenization_spaces; the served models decode without "
            "that clean-up, so their text can differ from transformers' decode in spaces before punctuation"
        )
    return tokenizer, int(eos)


def _ids(value: object) -> list[int]:
    """A config's eos_token_id (None, an id or a list of ids) as a list."""
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def _check_vocab(model: nets.GPT2LMHeadModel, tokenizer: Tokenizer, eos: int, name: str) -> None:
    """Every token id must have a logit; warn when the checkpoint's configs name another EOS than the tokenizer."""
    logits = model.config.vocab_size
    if tokenizer.get_vocab_size() > logits:
        beyond = sorted((i, t) for t, i in tokenizer.get_vocab().items() if i >= logits)
        shown = ", ".join(f"{t!r} ({i})" for i, t in beyond[:5]) + (" ..." if len(beyond) > 5 else "")
        raise BuildError(
            f"{name}: the tokenizer has {tokenizer.get_vocab_size()} tokens, the model only {logits} logits "
            f"(no logit for {shown}). After adding tokens, call model.resize_token_embeddings(len(tokenizer)) "
            "before model.save_pretrained, or save the tokenizer without them"
        )
    configs = (("config.json", model.config), ("generation_config.json", getattr(model, "generation_config", None)))
    others = {f: ids for f, c in configs if (ids := _ids(getattr(c, "eos_token_id", None))) and eos not in ids}
    if others:
        named = "; ".join(f"{f}: {ids[0] if len(ids) == 1 else ids}" for f, ids in others.items())
        log.warning(
            "  gpt2: the checkpoint's eos_token_id (%s) is not the tokenizer's end-of-text id %d. The served models "
            "stop at %d; transformers' generate stops there only when given eos_token_id=%d",
            named,
            eos,
            eos,
            eos,
        )


def announce_trained_stand_in(folder: Path) -> None:
    """Say what the default GPT-2 is, so nobody mistakes the demo's text for a real GPT-2's."""
    bar = "=" * 78
    log.info(
        "%s\n== gpt2: the trained stand-in %s, %s.\n== Pass --model DIR for a real GPT-2 (--random-weights: "
        "random stand-ins).\n%s",
        bar,
        folder,
        TRAINED_NOTE,
        bar,
    )


def load(cfg: Gpt2Config) -> tuple[nets.GPT2LMHeadModel, Tokenizer, Gpt2Dims]:
    """The model (eval, eager attention, FP32), its tokenizer and dims: `cfg.checkpoint` (--model, else the trained
    stand-in), or the random-weight stand-in when that is None."""
    checkpoint = cfg.checkpoint
    if checkpoint is None:
        shape = nets.STAND_INS[cfg.size]
        tokenizer = nets.train_tokenizer(shape.vocab_size, shape.corpus_chars)
        vocab, eos = tokenizer.get_vocab_size(), tokenizer.token_to_id(EOS_TOKEN)
        model = nets.stand_in_model(shape, vocab, eos, cfg.seed)
        how = f"{cfg.size} shape, seed {cfg.seed}, BPE of {vocab} tokens trained on Python's stdlib sources"
        progress.warn_random_weights("gpt2", how)
        if vocab != shape.vocab_size:
            log.warning(
                "  gpt2: the BPE trainer reached %d tokens, not %d; vocab_size is %d", vocab, shape.vocab_size, vocab
            )
    else:
        if cfg.model is None:
            announce_trained_stand_in(Path(checkpoint))
        # FP32 whatever the checkpoint stores (transformers' default dtype "auto" keeps an FP16 file's FP16):
        # the served decoder and the checks against generate run in FP32.
        model = load_offline(
            nets.GPT2LMHeadModel.from_pretrained, checkpoint, attn_implementation="eager", dtype=torch.float32
        ).eval()
        if model.config.model_type != "gpt2":
            raise BuildError(f"{checkpoint} is a {model.config.model_type!r} model, not gpt2")
        tokenizer, eos = pretrained_tokenizer(checkpoint)
        _check_vocab(model, tokenizer, eos, checkpoint)
    dims = Gpt2Dims.of(model.config, eos)
    log.info(
        "  gpt2: %d layers, %d heads x %d, %d positions, vocab %d, eos %d, %.1fM parameters",
        dims.n_layer,
        dims.n_head,
        dims.head_dim,
        dims.n_positions,
        dims.vocab_size,
        dims.eos_token_id,
        sum(p.numel() for p in model.parameters()) / 1e6,
    )
    return model, tokenizer, dims
