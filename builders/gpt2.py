"""The GPT-2 text generation builder: gpt2_stream (the generation model, with its KV-cache ONNX decoder and
tokenizer in its own version folder) and gpt2 (the unary entry, forwarding to it).

`build(cfg, out_dir)` loads GPT-2 (builders.gpt2_load: a local checkpoint; by default the trained stand-in in
weights/gpt2; with `random_weights` an offline stand-in with random weights and a BPE trained on Python's stdlib),
exports the decoder, checks it against torch and `generate` (builders.gpt2_decoder), and writes gpt2_stream and
gpt2. docs/gpt2-serving.md explains the layout. Run it as `python -m builders gpt2`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from builders import gpt2_decoder, gpt2_load, progress, repository
from builders.errors import BuildError
from builders.gpt2_decoder import CHECK_NEW_TOKENS, INTRA_OP_THREADS
from builders.gpt2_load import TOKENIZER_FILE
from builders.nets import gpt2 as nets
from builders.nets.gpt2 import Gpt2Dims
from builders.triton_config import (
    NO_DYNAMIC_BATCHING,
    Device,
    ModelSpec,
    Policy,
    PythonModel,
    QueueLimits,
    Target,
    with_policies,
)
from builders.warmup import Warmup
from tritonyard_contract import GENERATE_INPUTS, GENERATE_OUTPUTS, MAX_TOKENS, OPTIONAL_GENERATE_INPUTS

GENERATOR = "gpt2_stream"  # owns the decoder, the tokenizer and the engine
ENTRY = "gpt2"  # non-decoupled entry, forwards to GENERATOR
MODELS = (GENERATOR, ENTRY)


@dataclass(frozen=True)
class Gpt2Config:
    """What to build; the defaults are the trained stand-in (weights/gpt2) on the cpu target."""

    device: Device = "cpu"
    tensorrt_fp16: bool = False
    dynamic_batching: bool = True
    model: str | None = None  # HF hub name (in the local cache) or a save_pretrained dir; None = a stand-in
    random_weights: bool = False  # no model: the random-weight stand-in of `size` instead of the trained one
    size: Literal["tiny", "124m"] = "tiny"  # random-weight stand-in shape; only used with random_weights
    optimize: bool = False  # onnxruntime transformer fusions (model_type gpt2)
    int8: bool = False  # dynamic int8 quantization of the MatMuls
    seed: int = 0
    max_slots: int = 8  # in-flight batch size of the generation loop
    # Requests waiting for a slot; more are refused with UNAVAILABLE. gpt2_stream (and gpt2, forwarding to it) take
    # requests off Triton's queue at once (no dynamic batching: the engine batches), so this bounds them.
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

    @property
    def checkpoint(self) -> str | None:
        """The folder (or cached hub name) to load: `model`, else the trained stand-in; None: the random stand-in."""
        if self.model is not None:
            return self.model
        if self.random_weights:
            return None
        if not (gpt2_load.TRAINED_STAND_IN / "config.json").is_file():
            raise BuildError(
                f"the trained GPT-2 stand-in {gpt2_load.TRAINED_STAND_IN} is missing: run `make train-gpt2` to make "
                "it, pass --model DIR, or build with --random-weights (plumbing only)"
            )
        return str(gpt2_load.TRAINED_STAND_IN)

    @property
    def source(self) -> str:
        """What the build serves, in words."""
        if self.model is not None:
            return self.model
        return f"random-weight stand-in ({self.size})" if self.random_weights else "trained stand-in"


# --- specs ---


def nominal_dims(cfg: Gpt2Config) -> Gpt2Dims:
    """Decoder dims without loading weights: the random stand-in's shape, or the checkpoint's config.json and
    tokenizer (the trained stand-in's by default)."""
    checkpoint = cfg.checkpoint
    if checkpoint is None:
        shape = nets.STAND_INS[cfg.size]
        hf = nets.GPT2Config(
            vocab_size=shape.vocab_size,
            n_positions=shape.n_positions,
            n_embd=shape.n_embd,
            n_layer=shape.n_layer,
            n_head=shape.n_head,
        )
        return Gpt2Dims.of(hf, shape.vocab_size - 1)
    hf = gpt2_load.load_offline(nets.GPT2Config.from_pretrained, checkpoint)
    # The tokenizer's EOS, as `load` uses: config.json's can be missing, or GPT2Config's default 50256 of a
    # checkpoint with a smaller vocabulary.
    return Gpt2Dims.of(hf, gpt2_load.pretrained_tokenizer(checkpoint)[1])


def specs(cfg: Gpt2Config, dims: Gpt2Dims | None = None) -> list[ModelSpec]:
    """Every GPT-2 model, in build order; `dims` from the loaded model (default: `nominal_dims(cfg)`)."""
    d = dims or nominal_dims(cfg)
    gpu = cfg.device == "gpu"
    params = {
        # gpu: onnxruntime's CUDA provider in the model's own process, the cache kept on the GPU as torch tensors
        # (KIND_GPU instances); cpu: the CPU provider with the cache in numpy arrays (no torch in the server).
        "execution_provider": "cuda" if gpu else "cpu",
        "cache_arrays": "torch" if gpu else "numpy",
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
    interface = {"inputs": GENERATE_INPUTS, "outputs": GENERATE_OUTPUTS, "optional_inputs": OPTIONAL_GENERATE_INPUTS}
    models: list[ModelSpec] = [
        PythonModel(
            GENERATOR,
            "gpt2_generate",
            **interface,
            parameters=params,
            decoupled=True,
            gpu=True,
            # A prompt and max_tokens: each instance runs a prefill and decode steps before it is ready. A sample's
            # requests all arrive waiting for a slot, so no more than max_pending of them, or the engine refuses some.
            warmup=Warmup(optional=(MAX_TOKENS,), max_batch=cfg.max_pending),
            # The in-flight engine batches and execute() returns at once: Triton's dynamic batcher would only add
            # stalls (on 2.51 a burst reached execute() in 0.5 s waves), so none; max_pending bounds the backlog.
            policy=NO_DYNAMIC_BATCHING,
        ),
        PythonModel(
            ENTRY,
            "gpt2_forward",
            **interface,
            # Forwarding threads: twice what the engine holds, so gpt2_stream's limit is the one clients meet.
            parameters={"generation_model": GENERATOR, "max_in_flight": str(2 * (cfg.max_slots + cfg.max_pending))},
            # No model_warmup: forwarding warmup requests to gpt2_stream over BLS aborted Triton 2.51
            # (boost::interprocess::lock_exception; docs/warmup.md). gpt2_stream, where the work is, is warmed.
            warmup=None,
            policy=NO_DYNAMIC_BATCHING,
        ),
    ]
    return with_policies(models, cfg.policies, cfg.target)


# --- build ---


def build(cfg: Gpt2Config, out_dir: Path) -> list[str]:
    """Build the GPT-2 models into `out_dir` (a Triton model repository); returns their names."""
    target = cfg.target
    optimizing = cfg.optimize or cfg.int8
    loading = "build the stand-in GPT-2 and train its BPE" if cfg.checkpoint is None else "load GPT-2 and its tokenizer"
    steps = progress.Progress(f"gpt2 ({cfg.source}), {cfg.device} target -> {out_dir}", 6 if optimizing else 5)
    with repository.staged(out_dir, list(MODELS)) as repo:
        version = repository.version_dir(repo, GENERATOR)
        served = version / "model.onnx"
        fp32 = repo / "work" / "decoder_fp32.onnx" if optimizing else served  # `work/` goes with the staging dir
        with steps.step(loading):
            model, tokenizer, dims = gpt2_load.load(cfg)
        with steps.step(f"export {GENERATOR}'s decoder (KV cache) and compare logits with torch"):
            gpt2_decoder.export_decoder(model, dims, fp32, cfg.seed)
            gpt2_decoder.check_logits(model, dims, fp32, cfg.seed)
        with steps.step(f"greedy ONNX loop vs transformers generate ({CHECK_NEW_TOKENS} tokens)"):
            gpt2_decoder.check_greedy(model, tokenizer, dims, fp32)
        if optimizing:
            what = " + ".join(w for w, on in (("fuse", cfg.optimize), ("int8", cfg.int8)) if on)
            with steps.step(f"optimize {GENERATOR}'s decoder ({what}) and check it against fp32"):
                gpt2_decoder.optimize(cfg, fp32, served, tokenizer, dims)
        with steps.step("write configs, tokenizer.json and Python-backend sources"):
            tokenizer.save(str(version / TOKENIZER_FILE))  # the one copy: gpt2_stream tokenizes for both entries
            served_by = [(s.name, repository.add_model(repo, s, target)) for s in specs(cfg, dims)]
        with steps.step("parse configs back"):
            for name in MODELS:
                repository.check_config(repo, name)
    progress.summary(out_dir, served_by)
    return list(MODELS)
