"""Typed config `parameters` for model.py files: one helper every `initialize` uses.

    @dataclass(frozen=True)
    class Params(ModelParams):
        max_bytes: int = param(32 << 20, minimum=1)
        decoder_mode: str = param("in_process", choices=("in_process", "bls"))

    params = Params.from_config(json.loads(args["model_config"]))

Each field is read from the parameter of the same name (a string in config.pbtxt) and converted by its
annotation (int, float, bool, str) or by `parse`; a field without a default is required. Any problem
raises ValueError naming the parameter, so the model refuses to load with a readable reason.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

P = TypeVar("P", bound="ModelParams")
_TYPES: dict[Any, Callable[[str], Any]] = {int: int, float: float, str: str, "int": int, "float": float, "str": str}


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value not in ("true", "false"):
        raise ValueError(f"expected true or false, got {text!r}")
    return value == "true"


def param(
    default: Any = dataclasses.MISSING,
    *,
    minimum: float | None = None,
    choices: Sequence[str] | None = None,
    parse: Callable[[str], Any] | None = None,
) -> Any:
    """A parameter field: its default (none: required), the smallest value allowed, the allowed values, or a parser."""
    meta = {"minimum": minimum, "choices": tuple(choices) if choices else None, "parse": parse}
    return dataclasses.field(default=default, metadata=meta)


def raw_parameters(config: dict) -> dict[str, str]:
    """config.pbtxt `parameters` as name -> string (the JSON form Triton hands `initialize`)."""
    return {k: v["string_value"] for k, v in config.get("parameters", {}).items()}


def _convert(field: dataclasses.Field, text: str) -> Any:
    parse = field.metadata.get("parse")
    if parse is None:
        parse = _bool if field.type in (bool, "bool") else _TYPES.get(field.type)
    if parse is None:
        raise TypeError(f"parameter {field.name}: no parser for {field.type!r}; give param(parse=...)")
    try:
        return parse(text)
    except ValueError as exc:
        raise ValueError(f"parameter {field.name}: cannot read {text!r} ({exc})") from None


def _check(field: dataclasses.Field, value: Any) -> None:
    minimum, choices = field.metadata.get("minimum"), field.metadata.get("choices")
    if minimum is not None and not value >= minimum:
        bound = "positive" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"parameter {field.name} must be {bound}, got {value}")
    if choices is not None and value not in choices:
        raise ValueError(f"parameter {field.name} must be one of {', '.join(choices)}, got {value!r}")


class ModelParams:
    """Base of a frozen dataclass of parameters; `from_config` reads, converts and checks every field."""

    @classmethod
    def from_config(cls: type[P], config: dict) -> P:
        raw = raw_parameters(config)
        values = {}
        for field in dataclasses.fields(cls):
            if field.name in raw:
                values[field.name] = _convert(field, raw[field.name])
            elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise ValueError(f"parameter {field.name} is required in config.pbtxt")
        params = cls(**values)
        for field in dataclasses.fields(cls):
            _check(field, getattr(params, field.name))
        return params
