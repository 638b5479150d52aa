"""GPT-2 has no chat template, so this is ours: plain "Role: text" lines, then "Assistant:".

    System: You are terse.
    User: Where is the oil gauge?
    Assistant:

The model continues after "Assistant:". A chat request also stops at "\\nUser:" (`CHAT_STOPS`), so
the model's continuation of the dialogue (it would write the user's next line too) is cut there and
`finish_reason` is "stop"; the stop string is not part of the reply. Leading whitespace of the reply
is kept as generated.

Replace it with `--chat-template FILE` (a Jinja template like Hugging Face's `chat_template`: it sees
`messages` (each with `role` and `content`), `add_generation_prompt`, `bos_token` and `eos_token`) and
`--chat-stop TEXT` (repeatable; none given keeps `CHAT_STOPS`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tritonyard_contract import EOS_TOKEN

DEFAULT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message.role | capitalize }}: {{ message.content }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
CHAT_STOPS = ("\nUser:",)


class TemplateError(ValueError):
    """The template does not parse, or rendering these messages failed."""


@functools.lru_cache(maxsize=8)
def _compile(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(keep_trailing_newline=True)
    try:
        return env.from_string(source)
    except jinja2.TemplateError as exc:
        raise TemplateError(f"chat template: {exc}") from None


@dataclass(frozen=True)
class ChatTemplate:
    """A Jinja chat template (sandboxed: a template file cannot reach Python) and the stops it implies."""

    source: str = DEFAULT_TEMPLATE
    stops: tuple[str, ...] = CHAT_STOPS

    @classmethod
    def from_file(cls, path: Path | None, stops: tuple[str, ...] = ()) -> ChatTemplate:
        source = path.read_text() if path else DEFAULT_TEMPLATE
        template = cls(source, tuple(stops) or CHAT_STOPS)
        template.compiled()  # refuse a broken file at start, not on the first request
        return template

    def compiled(self) -> jinja2.Template:
        return _compile(self.source)

    def render(self, messages: list[dict[str, str]]) -> str:
        try:
            return self.compiled().render(
                messages=messages, add_generation_prompt=True, bos_token="", eos_token=EOS_TOKEN
            )
        except jinja2.TemplateError as exc:
            raise TemplateError(f"chat template: {exc}") from None
