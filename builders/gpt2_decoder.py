"""The GPT-2 KV-cache decoder: its ONNX export, the checks against torch and transformers' generate, and the
optional onnxruntime fusions and dynamic int8 quantization, checked against the fp32 export."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import torch
from tokenizers import Tokenizer

from builders import onnx_export
from builders.errors import BuildError
from builders.nets import gpt2 as nets
from builders.nets.gpt2 import Gpt2Dims

if TYPE_CHECKING:
    from builders.gpt2 import Gpt2Config

log = logging.getLogger("tritonyard.build")

DECODER = "gpt2_stream's decoder"  # in messages: the model.onnx in gpt2_stream's version folder
# Max abs logit diff, ONNX vs torch (fp32), relative to the largest |logit| when that exceeds 1.
TOLERANCE = 1e-3
CHECK_PROMPTS = ("def main():", "The quick brown fox 🦊 jumps over 世界")
CHECK_NEW_TOKENS = 12
# Dynamic int8 changes logits by percents; below this next-token agreement the model is broken, not rounded.
MIN_INT8_AGREEMENT = 0.5
INTRA_OP_THREADS = 2  # onnxruntime threads of the served decoder, and of the latency measured here


# --- export and checks ---


def _example(dims: Gpt2Dims, batch: int, seq: int, past: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Decoder inputs with random past, row 0 left-padded by 2 (the mask path must be traced with padding)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, dims.vocab_size, (batch, seq), generator=gen)
    mask = torch.ones(batch, past + seq, dtype=torch.int64)
    mask[0, :2] = 0
    pos = torch.from_numpy(nets.position_ids(mask.numpy(), seq))
    kv = [torch.randn(batch, dims.n_head, past, dims.head_dim, generator=gen) for _ in dims.past_names]
    return (ids, mask, pos, *kv)


def _names(dims: Gpt2Dims) -> tuple[list[str], list[str]]:
    return ["input_ids", "attention_mask", "position_ids", *dims.past_names], ["logits", *dims.present_names]


def export_decoder(model: nets.GPT2LMHeadModel, dims: Gpt2Dims, path: Path, seed: int = 0) -> None:
    """Legacy-export the KV-cache decoder (opset 17, IR 8) with batch/sequence/past dynamic axes."""
    in_names, out_names = _names(dims)
    total = "past_sequence + sequence"
    axes = {
        "input_ids": {0: "batch", 1: "sequence"},
        "attention_mask": {0: "batch", 1: total},
        "position_ids": {0: "batch", 1: "sequence"},
        "logits": {0: "batch", 1: "sequence"},
        **{n: {0: "batch", 2: "past_sequence"} for n in dims.past_names},
        **{n: {0: "batch", 2: total} for n in dims.present_names},
    }
    # A non-zero past: with past 0 the tracer could fold the cache concatenation away.
    example = _example(dims, batch=2, seq=3, past=4, seed=seed)
    onnx_export.export(nets.KvDecoder(model), example, path, in_names, out_names, dynamic_axes=axes)


def check_logits(model: nets.GPT2LMHeadModel, dims: Gpt2Dims, path: Path, seed: int = 0) -> float:
    """ONNX vs torch on shapes other than the export's, past 0 and past > 0; returns the worst relative diff."""
    in_names, _ = _names(dims)
    sess = nets.session(path)
    decoder = nets.KvDecoder(model).eval()
    worst = 0.0
    for label, batch, seq, past in (("past 0", 3, 6, 0), ("past 5", 3, 2, 5), ("past 9, one token", 1, 1, 9)):
        inputs = _example(dims, batch, seq, past, seed + 1)
        with torch.no_grad():
            expected = [t.numpy() for t in decoder(*inputs)]
        actual = sess.run(None, {n: t.numpy() for n, t in zip(in_names, inputs)})
        scale = max(1.0, float(np.abs(expected[0]).max()))
        diff = onnx_export.check(f"{DECODER} ({label})", actual, expected, TOLERANCE * scale)
        log.info("  %s %s: max abs diff vs torch %.2e (tolerance %.1e)", DECODER, label, diff, TOLERANCE * scale)
        worst = max(worst, diff / scale)
    return worst


def check_prompts(tokenizer: Tokenizer) -> list[list[int]]:
    """The check prompts as token ids (different lengths, so the batch is left-padded)."""
    return [tokenizer.encode(p).ids for p in CHECK_PROMPTS]


def check_greedy(model: nets.GPT2LMHeadModel, tokenizer: Tokenizer, dims: Gpt2Dims, path: Path) -> np.ndarray:
    """The ONNX + KV-cache greedy loop must equal `model.generate(do_sample=False)` token for token."""
    prompts = check_prompts(tokenizer)
    got = nets.greedy_onnx(nets.session(path), dims, prompts, CHECK_NEW_TOKENS)
    expected = nets.greedy_torch(model, dims, prompts, CHECK_NEW_TOKENS)
    if got.shape != expected.shape or not (got == expected).all():
        raise BuildError(f"{DECODER}: ONNX greedy tokens {got.tolist()} differ from generate's {expected.tolist()}")
    for prompt, row in zip(CHECK_PROMPTS, got):
        log.info("  %s greedy == generate: %r -> %r", DECODER, prompt, tokenizer.decode(row.tolist()))
    return got


# --- optimization ---


def decode_latency_ms(path: Path, dims: Gpt2Dims, prompt_len: int = 16, steps: int = 32) -> float:
    """Median ms per generated token, batch 1, after a `prompt_len` prefill (2 threads, like the served model)."""
    sess = nets.session(path, INTRA_OP_THREADS)
    ids = (np.arange(prompt_len, dtype=np.int64) % (dims.vocab_size - 1))[None]
    mask = np.ones((1, prompt_len), np.int64)
    feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": nets.position_ids(mask, prompt_len)}
    _, *present = sess.run(None, {**feeds, **nets.empty_past(dims, 1)})
    times = []
    for _ in range(steps):
        mask = np.ones((1, mask.shape[1] + 1), np.int64)
        feeds = {"input_ids": ids[:, :1], "attention_mask": mask, "position_ids": nets.position_ids(mask, 1)}
        start = time.perf_counter()
        _, *present = sess.run(None, {**feeds, **dict(zip(dims.past_names, present))})
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


@contextmanager
def _quiet(level: int) -> Iterator[None]:
    """Silence log records at `level` and below: onnxruntime's tools log every fusion and type guess."""
    logging.disable(level)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _fuse(src: Path, dst: Path, dims: Gpt2Dims) -> str:
    """onnxruntime's GPT-2 fusions of `src` into `dst`; returns which ops were fused."""
    from onnxruntime.transformers.optimizer import optimize_model

    with _quiet(logging.INFO):
        # opt_level 0: only the transformer fusions; onnxruntime's own graph passes run at session load anyway.
        opt = optimize_model(
            str(src),
            model_type="gpt2",
            num_heads=dims.n_head,
            hidden_size=dims.n_head * dims.head_dim,
            opt_level=0,
            use_gpu=False,
        )
        fused = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
    model = opt.model
    # The fused ops live in com.microsoft; the optimizer does not always declare that opset.
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    onnx_export.finalize_model(model, dst)
    return ", ".join(f"{k} x{v}" for k, v in sorted(fused.items())) or "nothing fused"


def _quantize(src: Path, dst: Path) -> None:
    """Dynamic int8 (weights QInt8, activations quantized per call) of `src` into `dst`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet(logging.WARNING):  # "please run pre-processing", "failed to infer type": expected, harmless
        quantize_dynamic(
            str(src),
            str(dst),
            weight_type=QuantType.QInt8,
            # The fused com.microsoft ops have no type inference; FLOAT is what flows between them.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    onnx_export.finalize_model(onnx.load(str(dst)), dst)


def next_token_agreement(
    reference: Path, candidate: Path, dims: Gpt2Dims, sequences: np.ndarray, prompt_len: int
) -> float:
    """Share of positions after the prompt where both models pick the same next token (teacher forcing).

    Free-running greedy runs diverge for good after one flip, so this is the fair per-token measure.
    """
    mask = np.ones_like(sequences)
    feeds = {
        "input_ids": sequences,
        "attention_mask": mask,
        "position_ids": nets.position_ids(mask, sequences.shape[1]),
    }
    feeds.update(nets.empty_past(dims, sequences.shape[0]))
    picks = [
        nets.session(p).run(["logits"], feeds)[0][:, prompt_len - 1 : -1].argmax(-1) for p in (reference, candidate)
    ]
    return float((picks[0] == picks[1]).mean())


def optimize(cfg: Gpt2Config, fp32: Path, served: Path, tokenizer: Tokenizer, dims: Gpt2Dims) -> None:
    """Fuse and/or quantize `fp32` into `served`; check greedy tokens against `fp32`, log size and latency."""
    work = fp32
    if cfg.optimize:
        fused = fp32.with_name("fused.onnx") if cfg.int8 else served  # beside fp32: dropped with the staging dir
        log.info("  %s fusions: %s", DECODER, _fuse(fp32, fused, dims))
        work = fused
    if cfg.int8:
        if cfg.device == "gpu":
            log.warning("  %s: dynamic int8 is a CPU optimization; on GPU prefer --tensorrt-fp16", DECODER)
        _quantize(work, served)
    prompts = check_prompts(tokenizer)
    reference = nets.greedy_onnx(nets.session(fp32), dims, prompts, CHECK_NEW_TOKENS)
    got = nets.greedy_onnx(nets.session(served), dims, prompts, CHECK_NEW_TOKENS)
    same = got.shape == reference.shape and bool((got == reference).all())
    if cfg.int8:
        width = min(got.shape[1], reference.shape[1])
        greedy_pct = float((got[:, :width] == reference[:, :width]).mean()) * 100
        # One sequence per prompt: its prompt (unpadded) and the fp32 continuation.
        agree = min(
            next_token_agreement(fp32, served, dims, np.array([p + list(r)], np.int64), len(p))
            for p, r in zip(prompts, reference)
        )
        log.info(
            "  %s int8 vs fp32: next-token agreement %.0f%% (teacher-forced, worst prompt), free-running greedy "
            "tokens equal %.0f%%",
            DECODER,
            agree * 100,
            greedy_pct,
        )
        if agree < MIN_INT8_AGREEMENT:
            raise BuildError(
                f"{DECODER}: int8 picks the fp32 model's next token only {agree:.0%} of the time "
                f"(minimum {MIN_INT8_AGREEMENT:.0%}); quantization broke the model, build without --int8"
            )
    elif not same:
        raise BuildError(
            f"{DECODER}: fused model's greedy tokens {got.tolist()} differ from fp32's {reference.tolist()}"
        )
    else:
        log.info("  %s fused model: greedy tokens identical to fp32", DECODER)
    before, after = decode_latency_ms(fp32, dims), decode_latency_ms(served, dims)
    log.info(
        "  %s: %.1f MB -> %.1f MB, %.2f -> %.2f ms/token (batch 1, %d threads, 16-token prompt)",
        DECODER,
        fp32.stat().st_size / 2**20,
        served.stat().st_size / 2**20,
        before,
        after,
        INTRA_OP_THREADS,
    )
