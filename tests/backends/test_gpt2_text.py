"""gpt2_generate's pure pieces (streaming detokenization, stop strings, sampling, the engine's pending
bound) and the input limits of the gpt2 and gpt2_tokenizer models, through the stubbed pb_utils."""

from __future__ import annotations

import importlib.util
import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import json_format
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from builders import gpt2
from builders.triton_config import model_config
from tests.backends import pb_utils_stub
from tests.backends.pb_utils_stub import BACKENDS, Request, TritonError, load_model

sys.path.insert(0, str(BACKENDS / "gpt2_generate"))
from detok import IncrementalDecoder, StopText
from engine import Batch, Engine, Sequence, Shape, Sink, left_pad
from sampling import SamplingParams, choose

TEXTS = ["plain ascii text", "oil 🛢️ level 🙂 ok", "油位正常，请检查。", "mixed 油 and 🛢️ 😀😀"]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    """A small byte-level BPE, so emoji and CJK characters span several tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tok.train_from_iterator(["the oil level is fine and the machine runs"] * 50, trainer)
    return tok


@pytest.mark.parametrize("text", TEXTS)
def test_incremental_decoder_never_splits_characters_when_streaming_multibyte_text(tokenizer, text) -> None:
    ids = tokenizer.encode(text).ids
    assert len(ids) > len(text.split())  # multi-byte characters really span several tokens
    decoder = IncrementalDecoder(tokenizer)
    pieces = [decoder.push(i) for i in ids]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_stop_text_cuts_at_stop_and_holds_back_partial_matches_when_streaming() -> None:
    stop = StopText(["END", "\n\n"])
    assert stop.feed("hello E") == ("hello ", False)  # "E" might start "END": held back
    assert stop.feed("N") == ("", False)
    assert stop.feed("D and more") == ("", True)
    assert stop.text[: stop.sent] == "hello "


def test_stop_text_releases_held_text_when_match_fails_or_generation_ends() -> None:
    stop = StopText(["END"])
    assert stop.feed("a E") == ("a ", False)
    assert stop.feed("X") == ("EX", False)
    assert stop.feed("EN") == ("", False)
    assert stop.flush() == "EN"


def test_sampling_is_repeatable_when_seed_is_fixed() -> None:
    logits = np.random.default_rng(1).normal(size=500).astype(np.float32)
    params = SamplingParams(temperature=0.9, top_k=50, top_p=0.9)

    def draws(seed: int) -> list[int]:
        rng = np.random.default_rng(seed)
        return [choose(logits, params, rng) for _ in range(20)]

    assert draws(7) == draws(7)
    assert len({tuple(draws(s)) for s in range(5)}) > 1  # different seeds differ


def test_sampling_equals_greedy_when_top_k_is_one() -> None:
    logits = np.random.default_rng(2).normal(size=500).astype(np.float32)
    rng = np.random.default_rng(0)
    assert choose(logits, SamplingParams(temperature=1.5, top_k=1), rng) == int(np.argmax(logits))


def test_sampling_stays_in_nucleus_when_top_p_is_small() -> None:
    logits = np.array([5.0, 4.9, 0.0, -1.0, -2.0], np.float32)
    rng = np.random.default_rng(0)
    picks = {choose(logits, SamplingParams(temperature=1.0, top_p=0.5), rng) for _ in range(100)}
    assert picks <= {0, 1}


def test_batch_left_pads_caches_when_sequences_of_different_lengths_join() -> None:
    shape = Shape(n_layer=1, n_head=2, head_dim=3, eos_token_id=0)
    batch = Batch(shape)
    cache = lambda n, length, v: [np.full((n, 2, length, 3), v, np.float32) for _ in range(2)]  # noqa: E731
    batch.join(["a"], cache(1, 4, 1.0), np.ones((1, 4), np.int64))
    batch.join(["b", "c"], cache(2, 2, 2.0), np.ones((2, 2), np.int64))
    assert batch.mask.tolist() == [[1, 1, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1]]
    assert batch.past[0].shape == (3, 2, 4, 3) and batch.past[0][1, 0, :, 0].tolist() == [0, 0, 2, 2]
    batch.drop([1, 2])  # the long sequence leaves: its padding columns go too
    assert batch.mask.tolist() == [[1, 1], [1, 1]] and batch.past[1].shape == (2, 2, 2, 3)
    assert left_pad(np.ones(2), 4, 0).tolist() == [0, 0, 1, 1]


# --- the engine's pending bound ---


class Recorder(Sink):
    def __init__(self) -> None:
        self.finished = threading.Event()

    def finish(self, text: str, reason: str, completion_tokens: int) -> None:
        self.finished.set()


def test_engine_refuses_sequences_when_max_pending_already_wait(tokenizer) -> None:
    shape = Shape(n_layer=1, n_head=1, head_dim=2, eos_token_id=0)
    running, release = threading.Event(), threading.Event()

    def run(feeds: dict) -> dict:  # holds the first prefill until released; logits pick eos (id 0)
        running.set()
        release.wait(10)
        b, s = feeds["input_ids"].shape
        return {"logits": np.zeros((b, s, 5), np.float32), **{n: np.zeros((b, 1, s, 2)) for n in shape.present_names}}

    engine = Engine(run, shape, max_slots=1, log=lambda m: None, max_pending=2)
    seqs = [Sequence([1], 4, SamplingParams(), np.random.default_rng(0), IncrementalDecoder(tokenizer), StopText([]),
                     Recorder()) for _ in range(5)]  # fmt: skip
    try:
        assert engine.submit(seqs[0]) and running.wait(5)  # in the one slot
        assert engine.submit(seqs[1]) and engine.submit(seqs[2])  # waiting: 2 of max_pending 2
        assert not engine.submit(seqs[3]) and not engine.submit(seqs[4])
        release.set()
        assert all(s.sink.finished.wait(5) for s in seqs[:3])
        assert engine.submit(seqs[3])  # room again once the backlog drained
        assert seqs[3].sink.finished.wait(5)
    finally:
        release.set()
        engine.close()


# --- input limits of the gpt2 and gpt2_tokenizer models ---


class SenderRequest(Request):
    """A request as the generate model sees it: answered through its response sender."""

    def __init__(self, **inputs: np.ndarray) -> None:
        super().__init__(**inputs)
        self.sent: list = []

    def get_response_sender(self):
        return self

    def send(self, response=None, flags: int = 0) -> None:
        self.sent.append(response)

    def is_cancelled(self) -> bool:
        return False


def text(value: bytes) -> np.ndarray:
    return np.array([[value]], dtype=np.object_)


def config_of(name: str, cfg: gpt2.Gpt2Config) -> dict:
    """The model's config as the builder writes it, in the dict form the stub hands initialize()."""
    spec = next(s for s in gpt2.specs(cfg) if s.name == name)
    return json_format.MessageToDict(model_config(spec, cfg.target), preserving_proto_field_name=True)


@pytest.fixture()
def version_dir(tmp_path: Path, tokenizer: Tokenizer) -> Path:
    folder = tmp_path / "1"
    folder.mkdir()
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder


@pytest.fixture()
def generate_module(monkeypatch: pytest.MonkeyPatch):
    """gpt2_generate's model.py imported against the stub, plus the two names only it uses."""
    stub = types.ModuleType("triton_python_backend_utils")
    for name in ("TritonError", "Tensor", "InferenceResponse", "Logger", "get_input_tensor_by_name"):
        setattr(stub, name, getattr(pb_utils_stub, name))
    stub.TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", stub)
    spec = importlib.util.spec_from_file_location("gpt2_generate_model", BACKENDS / "gpt2_generate" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FullEngine:
    """An engine whose pending queue is full."""

    def submit(self, seq) -> bool:
        return False


class NoTokenizer:
    def encode(self, text: str):
        raise AssertionError("an oversized prompt must be refused before tokenizing")


def generate_model(module, cfg: gpt2.Gpt2Config):
    """The model with its parameters from the builder's config, without starting a decoder."""
    model = module.TritonPythonModel()
    model.params = module.Params.from_config(config_of("gpt2", cfg))
    model.name, model.streaming, model.tokenizer, model.engine = "gpt2", False, NoTokenizer(), FullEngine()
    return model


def test_tokenizer_refuses_prompt_when_it_is_above_max_prompt_bytes(version_dir: Path) -> None:
    config = config_of("gpt2_tokenizer", gpt2.Gpt2Config(max_prompt_bytes=64))
    model = load_model("gpt2_tokenizer", config, version_dir)
    ok, big, bad = model.execute(
        [Request(text_input=text(b"x" * 64)), Request(text_input=text(b"x" * 65)), Request(text_input=text(b"\xff"))]
    )
    assert not ok.has_error() and ok.output("input_ids").shape[0] == 1
    assert big.error.code() == TritonError.INVALID_ARG
    assert big.error.message() == "text_input: 65 bytes, above the limit of 64"
    assert bad.error.message() == "text_input: is not valid UTF-8"


def test_tokenizer_refuses_to_start_when_max_prompt_bytes_is_not_positive(version_dir: Path) -> None:
    config = {"input": [], "output": [], "parameters": {"max_prompt_bytes": {"string_value": "0"}}}
    with pytest.raises(ValueError, match="max_prompt_bytes"):
        load_model("gpt2_tokenizer", config, version_dir)


def test_generate_params_read_limits_when_config_has_them_or_not(generate_module) -> None:
    params = generate_module.Params.from_config(config_of("gpt2", gpt2.Gpt2Config(max_pending=3, max_prompt_bytes=9)))
    assert (params.max_pending, params.max_prompt_bytes, params.max_slots) == (3, 9, 8)
    older = config_of("gpt2", gpt2.Gpt2Config())
    for key in ("max_pending", "max_prompt_bytes"):  # a config written before the limits existed
        del older["parameters"][key]
    params = generate_module.Params.from_config(older)
    assert (params.max_pending, params.max_prompt_bytes) == (32, 32 * 1024)
    older["parameters"]["max_pending"] = {"string_value": "0"}
    with pytest.raises(ValueError, match="max_pending"):
        generate_module.Params.from_config(older)


def test_generate_refuses_prompt_before_tokenizing_when_it_is_above_max_prompt_bytes(generate_module) -> None:
    model = generate_model(generate_module, gpt2.Gpt2Config(max_prompt_bytes=100))
    huge, missing = SenderRequest(text_input=text(b"a" * 5_000_000)), SenderRequest(max_tokens=np.array([[4]]))
    model.execute([huge, missing])
    [error] = [r.error for r in huge.sent]
    assert error.code() == TritonError.INVALID_ARG
    assert error.message() == "text_input: 5000000 bytes, above the limit of 100"
    assert missing.sent[0].error.message() == "text_input: is required"


def test_generate_answers_unavailable_when_the_engine_backlog_is_full(generate_module, tokenizer) -> None:
    model = generate_model(generate_module, gpt2.Gpt2Config(max_pending=4))
    model.tokenizer = tokenizer
    request = SenderRequest(text_input=text(b"def main():"))
    model.execute([request])
    [error] = [r.error for r in request.sent]
    assert error.code() == TritonError.UNAVAILABLE
    assert error.message() == "gpt2: overloaded, 4 requests already wait for a generation slot; retry later"
