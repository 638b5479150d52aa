"""One generation request's inputs, read and checked: TensorRT-LLM's names, with our defaults.

`read(get, limits)` takes a lookup `get(name) -> ndarray | None` (the request's input, None when absent) and
raises BadRequest naming the input for anything it cannot serve. docs/gpt2-serving.md is the table of what each
input does here; the two must agree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tritonyard_contract.tensors import BAD_WORDS, STOP, STOP_WORDS

DEFAULT_MAX_TOKENS = 16  # TensorRT-LLM requires max_tokens; we keep a default
MAX_STOP_STRINGS = 16
MAX_STOP_CHARS = 256
# Inputs TensorRT-LLM declares that make no sense here: accepted at their no-op value, refused otherwise.
ONLY_DEFAULT = {
    "beam_width": (1, "beam search is not implemented here (greedy or sampling only)"),
    "num_return_sequences": (1, "each request returns one sequence"),
    "length_penalty": (1.0, "it applies to beam search, which is not implemented here"),
    "repetition_penalty": (1.0, "penalties are not implemented here"),
    "presence_penalty": (0.0, "penalties are not implemented here"),
    "frequency_penalty": (0.0, "penalties are not implemented here"),
    "return_log_probs": (False, "log probabilities are not returned here"),
    "return_context_logits": (False, "logits are not returned here"),
    "return_generation_logits": (False, "logits are not returned here"),
    "return_perf_metrics": (False, "perf metrics are not returned here; use Triton's metrics endpoint"),
}
# Accepted and ignored: token counts are always returned, and outputs are never padded.
IGNORED = ("pad_id", "return_num_input_tokens", "return_num_output_tokens")

Get = Callable[[str], "np.ndarray | None"]


class BadRequest(ValueError):
    """The client's fault; becomes INVALID_ARG with a message naming the input."""


@dataclass(frozen=True)
class Limits:
    """What the served model allows, from its config parameters."""

    n_positions: int
    vocab_size: int
    eos_token_id: int
    max_prompt_bytes: int


@dataclass(frozen=True)
class Options:
    """A request's generation settings, every default filled in."""

    text: str
    max_tokens: int = DEFAULT_MAX_TOKENS
    stream: bool = True
    exclude_input: bool = True
    min_tokens: int = 0
    end_id: int = 0
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    stops: tuple[str, ...] = ()


def scalar(get: Get, name: str, default):
    """The one value of input `name` as a Python scalar (bytes stay bytes), or `default` when absent."""
    array = get(name)
    if array is None:
        return default
    values = array.reshape(-1)
    if values.size != 1:
        raise BadRequest(f"{name}: expected one value, got {values.size}")
    value = values[0]
    return value.item() if isinstance(value, np.generic) else value


def strings(get: Get, name: str) -> list[str]:
    """Input `name` as a list of UTF-8 strings ([] when absent)."""
    array = get(name)
    if array is None:
        return []
    try:
        return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in array.reshape(-1)]
    except UnicodeDecodeError:
        raise BadRequest(f"{name}: is not valid UTF-8") from None


def prompt_text(get: Get, max_bytes: int) -> str:
    raw = scalar(get, "text_input", None)
    if raw is None:  # optional inputs exist, so Triton does not enforce the required one itself
        raise BadRequest("text_input: is required")
    if len(raw) > max_bytes:  # before decoding and tokenizing: a huge prompt costs nothing
        raise BadRequest(f"text_input: {len(raw)} bytes, above the limit of {max_bytes}")
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
    except UnicodeDecodeError:
        raise BadRequest("text_input: is not valid UTF-8") from None
    if not text.strip():
        raise BadRequest("text_input: is empty")
    return text


def refuse_unsupported(get: Get) -> None:
    """INVALID_ARG for inputs set to something this model cannot do."""
    for name, (off, why) in ONLY_DEFAULT.items():
        value = scalar(get, name, off)
        if value != off:
            raise BadRequest(f"{name}: only {off} is supported, got {value}: {why}")
    if any(strings(get, BAD_WORDS.name)):
        raise BadRequest(f"{BAD_WORDS.name}: not supported here (stop_words and stop are)")
    for name in IGNORED:
        scalar(get, name, None)  # still one value each


def stop_strings(get: Get) -> tuple[str, ...]:
    stops = strings(get, STOP.name) + strings(get, STOP_WORDS.name)
    if len(stops) > MAX_STOP_STRINGS:
        raise BadRequest(f"stop_words: at most {MAX_STOP_STRINGS} stop strings (stop and stop_words together)")
    if any(len(s) > MAX_STOP_CHARS for s in stops):
        raise BadRequest(f"stop_words: each stop string must be at most {MAX_STOP_CHARS} characters")
    return tuple(s for s in stops if s)


def one_of(get: Get, names: tuple[str, str], default):
    """The value of whichever of two synonymous inputs is set; both set to different values is an error."""
    values = {n: scalar(get, n, None) for n in names}
    given = {v for v in values.values() if v is not None}
    if len(given) > 1:
        a, b = names
        raise BadRequest(f"{a}: {b} is the same setting and differs ({a} {values[a]}, {b} {values[b]}); send one")
    return given.pop() if given else default


def sampling(get: Get) -> dict:
    temperature = float(scalar(get, "temperature", 0.0))
    if not temperature >= 0.0:
        raise BadRequest(f"temperature: must be >= 0 (0 = greedy), got {temperature}")
    top_k = int(scalar(get, "top_k", 0))
    if top_k < 0:
        raise BadRequest(f"top_k: must be >= 0 (0 = off), got {top_k}")
    top_p = float(scalar(get, "top_p", 1.0))
    if not 0.0 < top_p <= 1.0:
        raise BadRequest(f"top_p: must be in (0, 1], got {top_p}")
    seed = one_of(get, ("seed", "random_seed"), None)
    return {"temperature": temperature, "top_k": top_k, "top_p": top_p, "seed": None if seed is None else int(seed)}


def lengths(get: Get, limits: Limits) -> dict:
    max_tokens = int(scalar(get, "max_tokens", DEFAULT_MAX_TOKENS))
    if not 1 <= max_tokens < limits.n_positions:
        raise BadRequest(f"max_tokens: must be between 1 and {limits.n_positions - 1}, got {max_tokens}")
    min_tokens = int(one_of(get, ("min_tokens", "min_length"), 0))
    if not 0 <= min_tokens <= max_tokens:
        name = "min_tokens" if get("min_tokens") is not None else "min_length"
        raise BadRequest(f"{name}: must be between 0 and max_tokens ({max_tokens}), got {min_tokens}")
    if bool(scalar(get, "ignore_eos", False)):
        min_tokens = max_tokens  # the end token never ends generation: always max_tokens (or a stop string)
    end_id = int(scalar(get, "end_id", limits.eos_token_id))
    if not 0 <= end_id < limits.vocab_size:
        raise BadRequest(f"end_id: must be a token id in [0, {limits.vocab_size}), got {end_id}")
    return {"max_tokens": max_tokens, "min_tokens": min_tokens, "end_id": end_id}


def read(get: Get, limits: Limits, stream_default: bool = True) -> Options:
    """Every input of one request, checked; the prompt is checked first (cheapest to refuse)."""
    text = prompt_text(get, limits.max_prompt_bytes)
    refuse_unsupported(get)
    return Options(
        text,
        stream=bool(scalar(get, "stream", stream_default)),
        exclude_input=bool(scalar(get, "exclude_input_in_output", True)),
        stops=stop_strings(get),
        **lengths(get, limits),
        **sampling(get),
    )
