"""GPT-2 pieces: the offline stand-in (model + byte-level BPE), the KV-cache decoder wrapper, greedy loops.

The greedy loops are the reference the builder checks exports with; tests of the serving side can reuse
`greedy_onnx` / `greedy_torch` on the files a build wrote.
"""

from __future__ import annotations

import sys
import sysconfig
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from tritonyard_contract import EOS_TOKEN, past_names, present_names
from tritonyard_contract.onnx_session import cpu_session


def _hide_unimportable_torchvision() -> None:
    """Make transformers see no torchvision when it cannot be imported.

    The venv has torchvision only for ultralytics' version metadata: its wheel is a CUDA build that fails
    to import with CPU torch. transformers sees the package, imports it from modeling_utils, and every model
    import fails; a None entry in sys.modules makes find_spec report it absent instead.
    """
    if "torchvision" in sys.modules:
        return
    try:
        import torchvision  # noqa: F401
    except (ImportError, RuntimeError, OSError):
        for name in [m for m in sys.modules if m.startswith("torchvision.")]:
            del sys.modules[name]
        sys.modules["torchvision"] = None  # type: ignore[assignment]


_hide_unimportable_torchvision()
from transformers import DynamicCache, GenerationConfig, GPT2Config, GPT2LMHeadModel  # noqa: E402

Size = Literal["tiny", "124m"]


@dataclass(frozen=True)
class StandInShape:
    """Architecture and tokenizer budget of one offline stand-in size."""

    n_layer: int
    n_embd: int
    n_head: int
    n_positions: int
    vocab_size: int  # BPE vocabulary including EOS, the last id (as in GPT-2: 50256 of 50257)
    corpus_chars: int  # how much stdlib source the BPE trainer reads


STAND_INS: dict[str, StandInShape] = {
    "tiny": StandInShape(2, 128, 4, 256, 4096, 2_000_000),
    # 50256 merges need about all of the stdlib's non-test sources (13 MB on 3.11); training takes ~5 s.
    "124m": StandInShape(12, 768, 12, 1024, 50257, 16_000_000),
}
# 0.02 (GPT-2's own) makes random weights collapse onto one token under greedy decoding.
STAND_IN_INIT_RANGE = 0.1


@dataclass(frozen=True)
class Gpt2Dims:
    """What the serving side and the configs need to know about a decoder."""

    n_layer: int
    n_head: int
    head_dim: int
    n_positions: int
    vocab_size: int
    eos_token_id: int

    @classmethod
    def of(cls, config: GPT2Config, eos_token_id: int) -> Gpt2Dims:
        return cls(
            config.n_layer,
            config.n_head,
            config.n_embd // config.n_head,
            config.n_positions,
            config.vocab_size,
            eos_token_id,
        )

    @property
    def past_names(self) -> list[str]:
        return past_names(self.n_layer)

    @property
    def present_names(self) -> list[str]:
        return present_names(self.n_layer)


# --- tokenizer ---


def stdlib_corpus(max_chars: int) -> Iterator[str]:
    """Python's stdlib sources (tests excluded), in sorted path order so training is deterministic."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if not {"site-packages", "test", "tests"} & set(p.parts))
    used = 0
    for path in files:
        if used >= max_chars:
            return
        text = path.read_text(encoding="utf-8", errors="replace")[: max_chars - used]
        used += len(text)
        yield text


def _byte_level(tokenizer: Tokenizer) -> Tokenizer:
    # GPT-2's pre-tokenizer (its regex, no prefix space) and decoder; EOS is special so decode can skip it.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([EOS_TOKEN])
    return tokenizer


def train_tokenizer(vocab_size: int, corpus_chars: int) -> Tokenizer:
    """Byte-level BPE trained on local text; EOS is added last, so it gets the highest id as in GPT-2."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodes: nothing is ever <unk>
        show_progress=False,
    )
    tokenizer.train_from_iterator(stdlib_corpus(corpus_chars), trainer)
    return _byte_level(tokenizer)


# --- model ---


def stand_in_model(shape: StandInShape, vocab_size: int, eos_token_id: int, seed: int) -> GPT2LMHeadModel:
    """A deterministic random-weight GPT2LMHeadModel of `shape`, eager attention (exports as plain ops)."""
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=shape.n_positions,
        n_embd=shape.n_embd,
        n_layer=shape.n_layer,
        n_head=shape.n_head,
        initializer_range=STAND_IN_INIT_RANGE,
        bos_token_id=eos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=eos_token_id,
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config).eval()


class KvDecoder(torch.nn.Module):
    """optimum-style signature: (input_ids, attention_mask, position_ids, *past flat) -> (logits, *present flat)."""

    def __init__(self, model: GPT2LMHeadModel) -> None:
        super().__init__()
        self.model = model
        self.n_layer = model.config.n_layer

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, *past: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        pairs = [(past[2 * i], past[2 * i + 1]) for i in range(self.n_layer)]
        cache = DynamicCache(ddp_cache_data=pairs, config=self.model.config)
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
        )
        present = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
        return (out.logits, *present)


def position_ids(attention_mask: np.ndarray, new_tokens: int) -> np.ndarray:
    """Positions of the last `new_tokens` columns: count of real tokens before each, so left padding works."""
    return np.clip(np.cumsum(attention_mask, axis=1) - 1, 0, None)[:, -new_tokens:].astype(np.int64)


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded int64 ids and their attention mask."""
    width = max(len(p) for p in prompts)
    ids = np.full((len(prompts), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(prompts), width), dtype=np.int64)
    for row, prompt in enumerate(prompts):
        if prompt:
            ids[row, width - len(prompt) :] = prompt
            mask[row, width - len(prompt) :] = 1
    return ids, mask


def empty_past(dims: Gpt2Dims, batch: int) -> dict[str, np.ndarray]:
    """Past length 0: what the first (prompt) step of a generation feeds."""
    return {n: np.zeros((batch, dims.n_head, 0, dims.head_dim), np.float32) for n in dims.past_names}


def session(path: Path | str | bytes, threads: int = 2) -> ort.InferenceSession:
    """A CPU onnxruntime session like the served one (fixed threads, no spinning), logging errors only."""
    return cpu_session(path, threads, quiet=True)


def greedy_onnx(
    sess: ort.InferenceSession, dims: Gpt2Dims, prompts: Sequence[Sequence[int]], max_new_tokens: int
) -> np.ndarray:
    """Greedy decoding with the KV cache, left-padded batch; [B, new] like `generate` (EOS pads finished rows)."""
    ids, mask = left_pad(prompts, dims.eos_token_id)
    past = empty_past(dims, len(prompts))
    finished = np.zeros(len(prompts), dtype=bool)
    new: list[np.ndarray] = []
    for _ in range(max_new_tokens):
        feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": position_ids(mask, ids.shape[1]), **past}
        logits, *present = sess.run(None, feeds)
        token = np.where(finished, dims.eos_token_id, logits[:, -1].argmax(-1)).astype(np.int64)
        new.append(token)
        finished |= token == dims.eos_token_id
        if finished.all():
            break
        ids, mask = token[:, None], np.concatenate([mask, np.ones((len(prompts), 1), np.int64)], axis=1)
        past = dict(zip(dims.past_names, present))
    return np.stack(new, axis=1)


def greedy_torch(
    model: GPT2LMHeadModel, dims: Gpt2Dims, prompts: Sequence[Sequence[int]], max_new_tokens: int
) -> np.ndarray:
    """`model.generate(do_sample=False)` on the same left-padded batch; returns only the new tokens."""
    ids, mask = left_pad(prompts, dims.eos_token_id)
    # An explicit GenerationConfig: a checkpoint's own defaults (sampling, penalties) must not leak in.
    gen = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=dims.eos_token_id,
        pad_token_id=dims.eos_token_id,
    )
    with torch.no_grad():
        out = model.generate(
            input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), generation_config=gen
        )
    return out[:, ids.shape[1] :].numpy()
