"""`--model DIR` with files made by the real tools (tests/helpers/gpt2_checkpoint.py), served by a real
tritonserver, against transformers.

The served text must equal `generate(do_sample=False)` decoded by the same tokenizer, token for token. The
builder's reading of the checkpoint without a server: tests/unit/test_gpt2_checkpoint_build.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from clients import gpt2 as client
from serving.launcher import TritonServer, free_ports
from tests.helpers.gpt2_checkpoint import NEW_TOKENS, PROMPTS, hf_greedy

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(gpt2_checkpoint_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    log = tmp_path_factory.mktemp("gpt2_checkpoint_triton") / "tritonserver.log"
    with TritonServer(gpt2_checkpoint_repo, *free_ports(3), log_file=log, ready_timeout=600) as triton:
        yield triton


@pytest.fixture(scope="module")
def expected(gpt2_reference) -> dict[str, tuple[list[int], str]]:
    return {prompt: hf_greedy(gpt2_reference, prompt, NEW_TOKENS) for prompt in PROMPTS}


def served_text_of(hf_text: str) -> str:
    """The server holds back a trailing incomplete UTF-8 character (random weights emit lone bytes)."""
    return hf_text.rstrip("\ufffd")


def test_gpt2_equals_transformers_generate_when_checkpoint_is_a_user_save_pretrained_folder(
    server: TritonServer, gpt2_reference, expected: dict[str, tuple[list[int], str]]
) -> None:
    _, tokenizer = gpt2_reference
    for prompt in PROMPTS:
        ids, text = expected[prompt]
        got = client.generate(server.http_url, prompt, max_tokens=NEW_TOKENS, temperature=0.0)
        assert len(set(ids)) > 3, f"greedy collapsed onto few tokens: {ids}"
        assert got.text == served_text_of(text), f"{prompt!r}: served {got.text!r}, generate {text!r}"
        assert got.completion_tokens == len(ids)
        assert got.prompt_tokens == len(tokenizer(prompt).input_ids)
        assert got.finish_reason == ("length" if len(ids) == NEW_TOKENS else "stop")


def test_gpt2_stream_equals_transformers_generate_when_streamed_over_grpc(
    server: TritonServer, expected: dict[str, tuple[list[int], str]]
) -> None:
    prompt = PROMPTS[0]
    ids, text = expected[prompt]
    pieces: list[str] = []
    got = client.stream(server.grpc_url, prompt, on_piece=pieces.append, max_tokens=NEW_TOKENS, temperature=0.0)
    assert "".join(pieces) == got.text == served_text_of(text)
    assert len(pieces) > 1 and got.completion_tokens == len(ids)
