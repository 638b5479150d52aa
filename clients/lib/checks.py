"""What a correct answer looks like: the checks every client, load generator and probe applies.

Standard library, numpy and the contract only (the readiness probe runs them inside the KServe image).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from tritonyard_contract.geometry import SCORE_COLUMN
from tritonyard_contract.protocol import is_capacity_refusal
from tritonyard_contract.tensors import DETECTIONS, OUTPUT_RANGES, PIPELINE_OUTPUTS, SCORE_RANGE


class ResponseError(Exception):
    """The server answered, but not with a correct response: a failure, never a success."""


class Busy(ResponseError):
    """The server refused the request for lack of capacity (a full queue, or the GPT-2 engine's backlog)."""


def check_vision_outputs(outputs: Mapping[str, np.ndarray | None], batch: int = 1) -> None:
    """Raise ResponseError unless every pipeline output is present, shaped [batch, *dims], finite and in range.

    Ranges: crop pixels in 0..1, the oil level in 0..100 %, detection scores in 0..1.
    """
    for spec in PIPELINE_OUTPUTS:
        array = outputs.get(spec.name)
        if array is None:
            raise ResponseError(f"output {spec.name} is missing")
        want = (batch, *spec.dims)
        if tuple(array.shape) != want:
            raise ResponseError(f"output {spec.name} has shape {list(array.shape)}, expected {list(want)}")
        if not np.isfinite(array).all():
            raise ResponseError(f"output {spec.name} holds NaN or Inf")
        values = array[..., SCORE_COLUMN] if spec.name == DETECTIONS.name else array
        low, high = SCORE_RANGE if spec.name == DETECTIONS.name else OUTPUT_RANGES.get(spec.name, (None, None))
        if low is not None and values.size and not (values.min() >= low and values.max() <= high):
            what = "scores" if spec.name == DETECTIONS.name else "values"
            raise ResponseError(
                f"output {spec.name} has {what} outside {low:g}..{high:g}: {values.min():g}..{values.max():g}"
            )


def check_generation(answer: Mapping, max_tokens: int | None = None, where: str = "gpt2") -> str:
    """Check one generation's final fields (as `/generate` returns them); return "N token(s) (reason)".

    An `error` is raised as Busy when it is a capacity refusal, else ResponseError. With `max_tokens`
    the token count must fit it: `length` means exactly max_tokens, `stop` at most that many.
    """
    if "error" in answer:
        raise (Busy if is_capacity_refusal(str(answer["error"])) else ResponseError)(f"{where}: {answer['error']}")
    finish, completion = answer.get("finish_reason"), answer.get("completion_tokens")
    if not isinstance(answer.get("text_output"), str) or not isinstance(answer.get("prompt_tokens"), int):
        raise ResponseError(f"{where}: no text_output/prompt_tokens in {sorted(answer)}")
    fits = isinstance(completion, int) and (
        max_tokens is None
        or (finish == "length" and completion == max_tokens)
        or (finish == "stop" and 0 <= completion <= max_tokens)
    )
    if answer["prompt_tokens"] < 1 or finish not in ("length", "stop") or not fits:
        raise ResponseError(
            f"{where}: finish_reason {finish!r} with {completion!r} token(s) for max_tokens {max_tokens}"
        )
    return f"{completion} token{'' if completion == 1 else 's'} ({finish})"
