"""`python -m training.gpt2`: the trained GPT-2 stand-in, a small GPT-2 and its byte-level BPE trained on Shakespeare.

    python -m training.gpt2 --out weights/gpt2          # make train-gpt2: about 10 minutes on 2 CPU cores
    python -m training.gpt2 --quick --out /tmp/gpt2     # smoke mode (the tests): a corpus slice, a few steps

Corpus: Shakespeare's complete works (public domain), as genai-perf ships them for its synthetic prompts:
genai_perf/inputs/retrievers/shakespeare.txt, read out of the genai-perf 0.0.16 wheel that `pip download` fetches
into data/gpt2/ (checked by sha256); or --corpus FILE, any UTF-8 text. Every 20th stretch of ~50k characters is
held out for validation. Steps: train a byte-level BPE on the training text with `tokenizers` (GPT-2's pre-tokenizer,
<|endoftext|> the last id), wrap it in GPT2TokenizerFast and save_pretrained it; train transformers'
GPT2LMHeadModel on random windows (AdamW, warmup + cosine, fixed seeds); score the held-out text; save_pretrained
the model (FP16 safetensors when that keeps greedy decoding equal to FP32, else FP32) and write metrics.json
(recipe, validation loss and perplexity, seconds, machine, greedy samples) and train-log.txt into --out.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

# First of transformers: builders.nets hides the venv's broken torchvision, which transformers would import.
from builders.nets import gpt2 as nets
from builders.offline import stay_offline
from training.gpt2_corpus import CorpusError, sha256, shakespeare, split

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "weights" / "gpt2"
EOS = "<|endoftext|>"  # tritonyard_contract.EOS_TOKEN, GPT-2's
SAMPLE_PROMPTS = ("The oil level in the", "To be or not to be", "KING LEAR\n", "Shall I compare thee")
SAMPLE_TOKENS = 24  # as `make demo` asks for

log = logging.getLogger("tritonyard.train")


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the result (with the corpus)."""

    vocab_size: int = 4096  # BPE tokens including <|endoftext|>, the last id (as in GPT-2)
    # 4 x 192 trains on ~2.5M tokens in 10 minutes here (~2 passes over the training text): by Chinchilla's
    # fit, a better use of that compute than 4 x 256 on 1.8M or 4 x 128 on 3.7M (measured speeds, 2 cores).
    n_layer: int = 4
    n_embd: int = 192
    n_head: int = 4
    n_positions: int = 256  # the context; every training window is this long
    dropout: float = 0.0  # two passes over the text: no need
    batch: int = 8  # windows per step
    steps: int = 1200
    warmup: int = 60
    lr: float = 2e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * this
    weight_decay: float = 0.1  # on matrices and embeddings, not on biases and LayerNorms
    grad_clip: float = 1.0
    segment_chars: int = 50_000  # the corpus is cut into stretches of this many characters, at line ends ...
    val_every: int = 20  # ... and every 20th stretch is held out
    eval_every: int = 200  # steps between loss reports on `eval_windows` held-out windows
    eval_windows: int = 32
    corpus_chars: int | None = None  # only the corpus' first characters (the quick mode)
    seed: int = 0


QUICK = Recipe(
    vocab_size=512,
    n_layer=2,
    n_embd=64,
    n_head=2,
    n_positions=64,
    batch=4,
    steps=30,
    warmup=5,
    eval_every=15,
    eval_windows=4,
    segment_chars=5_000,
    corpus_chars=200_000,
)


# --- tokenizer and model ---


def train_bpe(texts: list[str], vocab_size: int):
    """GPT-2's recipe with `tokenizers`: byte-level BPE (no prefix space), <|endoftext|> added last."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 1, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(texts, trainer)
    bpe.add_special_tokens([EOS])
    return bpe


def new_model(recipe: Recipe, vocab_size: int, eos: int):
    drop = recipe.dropout
    config = nets.GPT2Config(
        vocab_size=vocab_size,
        n_positions=recipe.n_positions,
        n_embd=recipe.n_embd,
        n_layer=recipe.n_layer,
        n_head=recipe.n_head,
        resid_pdrop=drop,
        embd_pdrop=drop,
        attn_pdrop=drop,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    return nets.GPT2LMHeadModel(config)


def lr_at(step: int, recipe: Recipe) -> float:
    """The learning rate factor: linear warmup, then cosine from 1 to min_lr_ratio."""
    if step < recipe.warmup:
        return (step + 1) / recipe.warmup
    progress = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
    return recipe.min_lr_ratio + (1 - recipe.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def val_windows(tokens, block: int):
    """Non-overlapping held-out windows of `block` tokens, [N, block]."""
    n = len(tokens) // block
    return tokens[: n * block].view(n, block)


def val_loss(model, windows, batch: int) -> float:
    """Mean next-token cross-entropy (nats) over every prediction in `windows`."""
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(windows), batch):
            chunk = windows[i : i + batch]
            total += float(model(input_ids=chunk, labels=chunk).loss) * len(chunk)
    model.train()
    return total / len(windows)


def train(model, tokens, windows, recipe: Recipe) -> list[dict[str, float]]:
    """AdamW on random windows of `tokens`; returns the loss curve (train, held-out subset) every eval_every."""
    gen = torch.Generator().manual_seed(recipe.seed)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=recipe.lr, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, recipe))
    block, curve, running, start = recipe.n_positions, [], 0.0, time.perf_counter()
    subset = windows[torch.randperm(len(windows), generator=gen)[: recipe.eval_windows]]
    model.train()
    for step in range(1, recipe.steps + 1):
        starts = torch.randint(0, len(tokens) - block, (recipe.batch,), generator=gen)
        x = torch.stack([tokens[s : s + block] for s in starts.tolist()])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        opt.step()
        sched.step()
        value = float(loss.detach())
        running = value if step == 1 else 0.95 * running + 0.05 * value
        if step % recipe.eval_every == 0 or step == recipe.steps:
            held = val_loss(model, subset, recipe.batch)
            curve.append({"step": step, "train_loss": round(running, 4), "val_subset_loss": round(held, 4)})
            log.info(
                "   step %d/%d: train %.3f, held-out %.3f, lr %.2e, %.0fs",
                step,
                recipe.steps,
                running,
                held,
                sched.get_last_lr()[0],
                time.perf_counter() - start,
            )
    model.eval()
    return curve


# --- saving ---


def greedy(model, tokenizer, prompts: tuple[str, ...], new_tokens: int) -> list[list[int]]:
    """transformers' generate(do_sample=False), one prompt at a time: the new token ids."""
    out = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            got = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=new_tokens,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.eos_token_id,
            )
        out.append(got[0, ids.shape[1] :].tolist())
    return out


def save(model, tokenizer, out: Path) -> dict[str, object]:
    """save_pretrained the model (FP16 when greedy decoding stays the same, else FP32) and the tokenizer."""
    prompts = (*SAMPLE_PROMPTS, "My lord", "What say you", "O Romeo Romeo")
    fp32 = greedy(model, tokenizer, prompts, 48)
    rounded = copy.deepcopy(model).half().float()
    fp16_equal = greedy(rounded, tokenizer, prompts, 48) == fp32
    (model.half() if fp16_equal else model).save_pretrained(out)
    model.float()
    tokenizer.save_pretrained(out)
    log.info("   FP16 greedy == FP32 greedy on %d prompts x 48 tokens: %s", len(prompts), fp16_equal)
    return {"saved_dtype": "float16" if fp16_equal else "float32", "fp16_greedy_equals_fp32": fp16_equal}


def samples(out: Path) -> dict[str, str]:
    """Greedy text of the saved folder as a user loads it (FP32, like the served decoder): the demo's text."""
    from transformers import AutoTokenizer

    model = nets.GPT2LMHeadModel.from_pretrained(out, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = greedy(model, tokenizer, SAMPLE_PROMPTS, SAMPLE_TOKENS)
    return {p: tokenizer.decode(i, skip_special_tokens=True) for p, i in zip(SAMPLE_PROMPTS, ids)}


# --- main ---


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.gpt2", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"the save_pretrained folder (default {DEFAULT_OUT})")
    p.add_argument("--corpus", type=Path, help="any UTF-8 text instead of Shakespeare (fetched into data/gpt2/)")
    p.add_argument("--seed", type=int, default=0, help="initialization, windows and split seed (default 0)")
    p.add_argument("--steps", type=int, help="optimizer steps (default: the recipe's)")
    p.add_argument("--quick", action="store_true", help="smoke mode: a corpus slice, a tiny model, a few steps")
    return p


def _machine() -> dict[str, object]:
    import transformers

    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "processor": platform.processor() or None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def run(recipe: Recipe, corpus: Path, out: Path, quick: bool) -> dict[str, object]:
    """Train and save_pretrained into `out`, an empty folder; returns what it wrote into metrics.json."""
    from transformers import GPT2TokenizerFast

    start, seconds = time.perf_counter(), {}
    torch.manual_seed(recipe.seed)
    text = corpus.read_text(encoding="utf-8")[: recipe.corpus_chars]
    train_parts, val_parts = split(text, recipe.segment_chars, recipe.val_every)
    bpe = train_bpe(train_parts, recipe.vocab_size)
    tokenizer = GPT2TokenizerFast(tokenizer_object=bpe, eos_token=EOS, bos_token=EOS, unk_token=EOS)
    tokenizer.model_max_length = recipe.n_positions
    ids = [torch.tensor([i for e in bpe.encode_batch(parts) for i in e.ids]) for parts in (train_parts, val_parts)]
    tokens, windows = ids[0], val_windows(ids[1], recipe.n_positions)
    seconds["corpus and bpe"] = round(time.perf_counter() - start, 1)
    log.info(
        "== BPE of %d tokens; %d training tokens, %d held-out windows of %d",
        bpe.get_vocab_size(),
        len(tokens),
        len(windows),
        recipe.n_positions,
    )
    model = new_model(recipe, bpe.get_vocab_size(), bpe.token_to_id(EOS))
    params = sum(p.numel() for p in model.parameters())
    log.info("== training GPT2LMHeadModel, %.2fM parameters: %s", params / 1e6, recipe)
    t0 = time.perf_counter()
    curve = train(model, tokens, windows, recipe)
    seconds["training"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    loss = val_loss(model, windows, recipe.batch)
    seconds["validation"] = round(time.perf_counter() - t0, 1)
    val_chars = sum(len(t) for t in val_parts) * len(windows) * recipe.n_positions / len(ids[1])
    saved = save(model, tokenizer, out)
    report = {
        "what": "a small GPT-2 trained on Shakespeare, a stand-in for the demo, not a production model",
        "quick": quick,
        "corpus": {"file": corpus.name, "sha256": sha256(corpus.read_bytes()), "chars": len(text)},
        "tokens": {"train": len(tokens), "val": int(windows.numel())},
        "recipe": asdict(recipe),
        "parameters": params,
        "val_loss": round(loss, 4),
        "val_perplexity": round(math.exp(loss), 2),
        "val_bits_per_char": round(loss * windows.numel() / val_chars / math.log(2), 4),
        "curve": curve,
        **saved,
        "samples_greedy": samples(out),
        "seconds": {**seconds, "total": round(time.perf_counter() - start, 1)},
        "machine": _machine(),
    }
    report["bytes"] = {f.name: f.stat().st_size for f in sorted(out.iterdir()) if f.suffix != ".txt"}
    (out / "metrics.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    from transformers.utils import logging as hf_logging  # after builders.nets (see its import above)

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    log.setLevel(logging.INFO)
    stay_offline()
    if args.quick and args.out.resolve() == DEFAULT_OUT:
        log.error("--quick would replace the committed stand-in in %s: give another --out", DEFAULT_OUT)
        return 2
    torch.set_num_threads(os.cpu_count() or 2)
    hf_logging.disable_progress_bar()
    recipe = replace(QUICK if args.quick else Recipe(), seed=args.seed)
    recipe = replace(recipe, steps=args.steps) if args.steps else recipe
    try:
        corpus = args.corpus or shakespeare()
    except CorpusError as exc:
        log.error("corpus: %s", exc)
        return 1
    staging = args.out.with_name(args.out.name + ".partial")  # replaces --out at the end: a failed run keeps it
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    handler = logging.FileHandler(staging / "train-log.txt", mode="w")
    logging.getLogger().addHandler(handler)
    try:
        report = run(recipe, corpus, staging, args.quick)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    shutil.rmtree(args.out, ignore_errors=True)
    staging.rename(args.out)
    log.info(
        "== wrote %s: val loss %.3f (perplexity %.1f) in %.0fs",
        args.out,
        report["val_loss"],
        report["val_perplexity"],
        report["seconds"]["total"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
