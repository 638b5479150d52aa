"""openai_frontend without a server: request parsing and refusals, the chat template, error mapping, bodies."""

from __future__ import annotations

import pytest

from openai_frontend.chat_template import CHAT_STOPS, ChatTemplate, TemplateError
from openai_frontend.errors import OpenAIError, from_triton
from openai_frontend.protocol import ChatCompletionRequest, CompletionRequest, Generation, Responder, parse

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": 1}, "logprobs"),
        ({"echo": True}, "echo"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"tools": [{"type": "function"}]}, "tools"),
        ({"top_p": 0}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
    ],
)
def test_parse_refuses_with_400_when_a_value_is_unsupported(extra: dict, param: str) -> None:
    with pytest.raises(OpenAIError) as info:
        parse(CompletionRequest, {"model": "gpt2", "prompt": "hi", **extra})
    assert info.value.status == 400 and info.value.body()["error"]["param"] == param


def test_parse_accepts_neutral_values_when_clients_send_the_defaults() -> None:
    body = {"model": "gpt2", "prompt": "hi", "n": 1, "logprobs": None, "presence_penalty": 0, "tool_choice": "none"}
    assert parse(CompletionRequest, body).prompt_text() == "hi"


def test_generation_uses_openai_defaults_when_fields_are_absent() -> None:
    gen = Generation.of(parse(CompletionRequest, {"model": "gpt2", "prompt": "hi"}), "hi", "completion")
    assert (gen.max_tokens, gen.temperature, gen.top_p, gen.seed, gen.stop) == (16, 1.0, 1.0, None, ())


def test_generation_folds_seed_and_merges_stops_when_chatting() -> None:
    body = {"model": "gpt2", "messages": [{"role": "user", "content": "x"}], "seed": -1, "stop": "\n\n"}
    body["max_completion_tokens"] = 9
    req = parse(ChatCompletionRequest, body)
    gen = Generation.of(req, "p", "chat", CHAT_STOPS)
    assert gen.seed == 2**64 - 1 and gen.stop == ("\n\n", *CHAT_STOPS) and gen.max_tokens == 9


def test_stops_refused_when_more_than_four() -> None:
    req = parse(CompletionRequest, {"model": "gpt2", "prompt": "x", "stop": list("abcde")})
    with pytest.raises(OpenAIError, match="at most 4"):
        req.stops()


def test_chat_template_renders_role_lines_when_default() -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert ChatTemplate().render(messages) == "System: Be brief.\nUser: Hi\nAssistant:"


def test_chat_template_is_replaced_when_a_file_is_given(tmp_path) -> None:
    path = tmp_path / "t.jinja"
    path.write_text("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>")
    template = ChatTemplate.from_file(path, ("<user>",))
    assert template.render([{"role": "user", "content": "yo"}]) == "<user>yo<assistant>" and template.stops == (
        "<user>",
    )


def test_chat_template_refused_when_it_does_not_parse(tmp_path) -> None:
    path = tmp_path / "bad.jinja"
    path.write_text("{% for m in messages %}")
    with pytest.raises(TemplateError):
        ChatTemplate.from_file(path)


@pytest.mark.parametrize(
    ("message", "status", "param"),
    [
        ("gpt2_stream: overloaded, 8 requests already wait for a generation slot; retry later", 503, None),
        ("[request id: openai-3] max_tokens: must be between 1 and 255, got 999", 400, "max_tokens"),
        ("text_input: the prompt is 300 tokens; with max_tokens 16 it exceeds the context", 400, "prompt"),
        ("decoder step failed: boom", 500, None),
    ],
)
def test_from_triton_maps_status_when_gpt2_stream_fails(message: str, status: int, param: str | None) -> None:
    error = from_triton(message)
    assert error.status == status and error.param == param and "request id" not in error.message


def test_responder_builds_chunks_when_chat_streams() -> None:
    r = Responder("chat", "gpt2")
    first, last = r.chunk("", role=True), r.chunk(None, "stop")
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""} and "usage" not in first
    assert last["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert r.usage_chunk({"total_tokens": 3})["choices"] == [] and first["id"] == last["id"]
