"""The GPT-2 text generation builder: a KV-cache ONNX decoder, tokenizer models and the generate models.

`build(cfg, out_dir)` loads GPT-2 (a local checkpoint, or an offline stand-in with random weights and a BPE
trained on Python's stdlib), exports the decoder, checks it against torch and `generate`, and writes
gpt2_decoder, gpt2_tokenizer, gpt2_detokenizer, gpt2 and gpt2_stream. Run it as `python -m builders gpt2`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import onnx
import torch
from tokenizers import Tokenizer

from builders import onnx_export, progress, repository
from builders.errors import BuildError
from builders.nets import gpt2 as nets
from builders.nets.gpt2 import Gpt2Dims
from builders.triton_config import (
    NO_DYNAMIC_BATCHING,
    Device,
    ModelSpec,
    OnnxModel,
    Policy,
    PythonModel,
    QueueLimits,
    Target,
    with_policies,
)
from tritonyard_contract import (
    EOS_TOKEN,
    GENERATE_INPUTS,
    GENERATE_OUTPUTS,
    INPUT_IDS,
    OPTIONAL_GENERATE_INPUTS,
    TEXT_INPUT,
    TEXT_OUTPUT,
    decoder_inputs,
    decoder_outputs,
)

log = logging.getLogger("tritonyard.build")

DECODER = "gpt2_decoder"
MODELS = (DECODER, "gpt2_tokenizer", "gpt2_detokenizer", "gpt2", "gpt2_stream")
TOKENIZER_FILE = "tokenizer.json"  # every model that tokenizes ships its own copy in its version folder
# Max abs logit diff, ONNX vs torch (fp32), relative to the largest |logit| when that exceeds 1.
TOLERANCE = 1e-3
CHECK_PROMPTS = ("def main():", "The quick brown fox 🦊 jumps over 世界")
CHECK_NEW_TOKENS = 12
# Dynamic int8 changes logits by percents; below this next-token agreement the model is broken, not rounded.
MIN_INT8_AGREEMENT = 0.5
INTRA_OP_THREADS = 2
T = TypeVar("T")


@dataclass(frozen=True)
class Gpt2Config:
    """What to build; the defaults are the offline stand-in (random weights, tiny, cpu target)."""

    device: Device = "cpu"
    tensorrt_fp16: bool = False
    dynamic_batching: bool = True
    model: str | None = None  # HF hub name (in the local cache) or a save_pretrained dir; None = offline stand-in
    size: Literal["tiny", "124m"] = "tiny"  # offline stand-in shape; ignored when model is given
    optimize: bool = False  # onnxruntime transformer fusions (model_type gpt2)
    int8: bool = False  # dynamic int8 quantization of the MatMuls
    seed: int = 0
    max_slots: int = 8  # in-flight batch size of the generation loop
    # Requests waiting for a slot; more are refused with UNAVAILABLE. gpt2/gpt2_stream take requests off
    # Triton's queue at once (no dynamic batching: the engine batches), so this bounds them under overload.
    max_pending: int = 32
    # Prompts above this many UTF-8 bytes are refused before tokenizing (GPT-2 averages ~4 bytes a token,
    # so 32 KiB is 8x the 124M context: only abuse hits it, and it costs nothing to refuse).
    max_prompt_bytes: int = 32 * 1024
    queue: QueueLimits = QueueLimits()  # Triton queue bounds of the dynamically batched models
    policies: Mapping[str, Policy] = field(default_factory=dict)  # per-model overrides (--instances, ...)

    def __post_init__(self) -> None:
        if self.size not in nets.STAND_INS:
            raise BuildError(f"unknown GPT-2 stand-in size {self.size!r}: use one of {sorted(nets.STAND_INS)}")
        positive = {"--max-slots": self.max_slots, "--max-pending": self.max_pending}
        positive["--max-prompt-bytes"] = self.max_prompt_bytes
        for flag, value in positive.items():
            if value < 1:
                raise BuildError(f"{flag} must be >= 1, got {value}")

    @property
    def target(self) -> Target:
        return Target(self.device, self.tensorrt_fp16, self.dynamic_batching, self.queue)


# --- specs ---


def nominal_dims(cfg: Gpt2Config) -> Gpt2Dims:
    """Decoder dims without loading weights: the stand-in's shape, or the checkpoint's config.json and tokenizer."""
    if cfg.model is None:
        shape = nets.STAND_INS[cfg.size]
        hf = nets.GPT2Config(
            vocab_size=shape.vocab_size, n_positions=shape.n_positions, n_embd=shape.n_embd,
            n_layer=shape.n_layer, n_head=shape.n_head,
        )  # fmt: skip
        return Gpt2Dims.of(hf, shape.vocab_size - 1)
    hf = _load(nets.GPT2Config.from_pretrained, cfg.model)
    # The tokenizer's EOS, as `load` uses: config.json's can be missing, or GPT2Config's default 50256 of a
    # checkpoint with a smaller vocabulary.
    return Gpt2Dims.of(hf, pretrained_tokenizer(cfg.model)[1])


def specs(cfg: Gpt2Config, dims: Gpt2Dims | None = None) -> list[ModelSpec]:
    """Every GPT-2 model, in build order; `dims` from the loaded model (default: `nominal_dims(cfg)`)."""
    d = dims or nominal_dims(cfg)
    params = {
        "decoder_model": DECODER,
        # cpu: the generate loop runs the ONNX file itself (no per-token BLS hop, ~3 ms each here);
        # gpu: it calls gpt2_decoder through BLS so the onnxruntime backend runs it on the GPU.
        "decoder_mode": "bls" if cfg.device == "gpu" else "in_process",
        "n_layer": str(d.n_layer),
        "n_head": str(d.n_head),
        "head_dim": str(d.head_dim),
        "n_positions": str(d.n_positions),
        "vocab_size": str(d.vocab_size),
        "eos_token_id": str(d.eos_token_id),
        "max_slots": str(cfg.max_slots),
        "max_pending": str(cfg.max_pending),
        "max_prompt_bytes": str(cfg.max_prompt_bytes),
        "intra_op_threads": str(INTRA_OP_THREADS),
    }
    generate = {
        "source": "gpt2_generate",
        "inputs": GENERATE_INPUTS,
        "outputs": GENERATE_OUTPUTS,
        "optional_inputs": OPTIONAL_GENERATE_INPUTS,
        "parameters": params,
        # The in-flight engine batches and execute() returns at once: Triton's dynamic batcher would only add
        # stalls (on 2.51 a burst reached execute() in 0.5 s waves), so none; max_pending bounds the backlog.
        "policy": NO_DYNAMIC_BATCHING,
    }
    models: list[ModelSpec] = [
        OnnxModel(
            DECODER,
            decoder_inputs(d.n_layer, d.n_head, d.head_dim),
            decoder_outputs(d.n_layer, d.n_head, d.head_dim, d.vocab_size),
            cpu_threads=INTRA_OP_THREADS,
            concat_batch=False,  # requests differ in sequence and past lengths: never concatenable
        ),
        PythonModel(
            "gpt2_tokenizer",
            "gpt2_tokenizer",
            (TEXT_INPUT,),
            (INPUT_IDS,),
            parameters={"max_prompt_bytes": str(cfg.max_prompt_bytes)},
        ),
        # The streaming loop's prefix-offset decoder ships beside it: one implementation for both.
        PythonModel(
            "gpt2_detokenizer", "gpt2_detokenizer", (INPUT_IDS,), (TEXT_OUTPUT,), shared=("gpt2_generate/detok.py",)
        ),
        PythonModel("gpt2", **generate),
        PythonModel("gpt2_stream", **generate, decoupled=True),
    ]
    return with_policies(models, cfg.policies, cfg.target)


# --- loading ---


def _local(model: str) -> str:
    """`~` expanded: transformers and the file lookups below do not expand it themselves."""
    return str(Path(model).expanduser()) if model.startswith("~") else model


def _load(loader: Callable[..., T], model: str, **kwargs: object) -> T:
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
    except ValueError:  # not a valid hub name either: _load says so
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

    hf = _load(AutoTokenizer.from_pretrained, model)
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
            named, eos, eos, eos,
        )  # fmt: skip


def load(cfg: Gpt2Config) -> tuple[nets.GPT2LMHeadModel, Tokenizer, Gpt2Dims]:
    """The model (eval, eager attention), its tokenizer and dims; the stand-in when `cfg.model` is None."""
    if cfg.model is None:
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
        model = _load(nets.GPT2LMHeadModel.from_pretrained, cfg.model, attn_implementation="eager").eval()
        if model.config.model_type != "gpt2":
            raise BuildError(f"{cfg.model} is a {model.config.model_type!r} model, not gpt2")
        tokenizer, eos = pretrained_tokenizer(cfg.model)
        _check_vocab(model, tokenizer, eos, cfg.model)
    dims = Gpt2Dims.of(model.config, eos)
    log.info(
        "  gpt2: %d layers, %d heads x %d, %d positions, vocab %d, eos %d, %.1fM parameters",
        dims.n_layer, dims.n_head, dims.head_dim, dims.n_positions, dims.vocab_size, dims.eos_token_id,
        sum(p.numel() for p in model.parameters()) / 1e6,
    )  # fmt: skip
    return model, tokenizer, dims


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
            str(src), model_type="gpt2", num_heads=dims.n_head, hidden_size=dims.n_head * dims.head_dim,
            opt_level=0, use_gpu=False,
        )  # fmt: skip
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
            "tokens equal %.0f%%", DECODER, agree * 100, greedy_pct,
        )  # fmt: skip
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
        DECODER, fp32.stat().st_size / 2**20, served.stat().st_size / 2**20, before, after, INTRA_OP_THREADS,
    )  # fmt: skip


# --- build ---


def write_tokenizer(repo: Path, tokenizer: Tokenizer) -> None:
    """`<model>/1/tokenizer.json` for every model that (de)tokenizes: each ships on its own."""
    for name in MODELS[1:]:
        tokenizer.save(str(repository.version_dir(repo, name) / TOKENIZER_FILE))


def build(cfg: Gpt2Config, out_dir: Path) -> list[str]:
    """Build the GPT-2 models into `out_dir` (a Triton model repository); returns their names."""
    target = cfg.target
    decoder_batch = target.resolve(cfg.policies.get(DECODER, Policy())).max_batch_size
    if cfg.device == "gpu" and cfg.max_slots > decoder_batch:
        raise BuildError(
            f"--max-slots {cfg.max_slots} exceeds {DECODER}'s max_batch_size {decoder_batch} on gpu "
            "(the generate loop sends all slots to it in one BLS request)"
        )
    optimizing = cfg.optimize or cfg.int8
    source = cfg.model or f"offline stand-in ({cfg.size})"
    steps = progress.Progress(f"gpt2 ({source}), {cfg.device} target -> {out_dir}", 6 if optimizing else 5)
    with repository.staged(out_dir, list(MODELS)) as repo:
        served = repository.version_dir(repo, DECODER) / "model.onnx"
        fp32 = repo / "work" / "decoder_fp32.onnx" if optimizing else served  # `work/` goes with the staging dir
        with steps.step("load GPT-2 and its tokenizer" if cfg.model else "build the stand-in GPT-2 and train its BPE"):
            model, tokenizer, dims = load(cfg)
        with steps.step("export gpt2_decoder (KV cache) and compare logits with torch"):
            export_decoder(model, dims, fp32, cfg.seed)
            check_logits(model, dims, fp32, cfg.seed)
        with steps.step(f"greedy ONNX loop vs transformers generate ({CHECK_NEW_TOKENS} tokens)"):
            check_greedy(model, tokenizer, dims, fp32)
        if optimizing:
            what = " + ".join(w for w, on in (("fuse", cfg.optimize), ("int8", cfg.int8)) if on)
            with steps.step(f"optimize gpt2_decoder ({what}) and check it against fp32"):
                optimize(cfg, fp32, served, tokenizer, dims)
        with steps.step("write configs, tokenizer.json and Python-backend sources"):
            write_tokenizer(repo, tokenizer)
            served_by = [(s.name, repository.add_model(repo, s, target)) for s in specs(cfg, dims)]
        with steps.step("parse configs back"):
            for name in MODELS:
                repository.check_config(repo, name)
    progress.summary(out_dir, served_by)
    return list(MODELS)
