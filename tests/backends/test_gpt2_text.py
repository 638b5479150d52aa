"""gpt2_generate's pure pieces: streaming detokenization, stop strings, sampling, batching caches (numpy and
torch arrays), the engine's pending bound and its drain on close. The models themselves (limits, BLS, streaming):
tests/backends/test_gpt2_models.py."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "python_backends" / "gpt2_generate"))  # the pure modules, imported as the model does
from decoder import NumpyOps, TorchOps
from detok import IncrementalDecoder, StopText
from engine import Batch, Engine, Sequence, Sink
from sampling import SamplingParams, choose

TEXTS = ["plain ascii text", "oil 🛢️ level 🙂 ok", "油位正常，请检查。", "mixed 油 and 🛢️ 😀😀"]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    """A small byte-level BPE, so emoji and CJK characters span several tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
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


@pytest.mark.parametrize("ops", [NumpyOps(), TorchOps("cpu")], ids=["numpy", "torch"])
def test_batch_left_pads_caches_when_sequences_of_different_lengths_join(ops) -> None:
    batch = Batch(ops)

    def cache(n: int, length: int, v: float) -> list:
        full = np.full((n, 2, length, 3), v, np.float32)  # not ops.empty: uninitialised memory can hold NaN
        return [ops.torch.from_numpy(full.copy()) if isinstance(ops, TorchOps) else full.copy() for _ in range(2)]

    batch.join(["a"], cache(1, 4, 1.0), np.ones((1, 4), np.int64))
    batch.join(["b", "c"], cache(2, 2, 2.0), np.ones((2, 2), np.int64))
    assert batch.mask.tolist() == [[1, 1, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1]]
    past = ops.host(batch.past[0])
    assert past.shape == (3, 2, 4, 3) and past[1, 0, :, 0].tolist() == [0, 0, 2, 2]
    batch.drop([1, 2])  # the long sequence leaves: its padding columns go too
    assert batch.mask.tolist() == [[1, 1], [1, 1]] and tuple(batch.past[1].shape) == (2, 2, 2, 3)
    assert ops.host(batch.past[1]).tolist() == np.full((2, 2, 2, 3), 2.0).tolist()
    assert NumpyOps().left_pad(np.ones(2), 4, 0).tolist() == [0, 0, 1, 1]


# --- the engine's pending bound ---


class Recorder(Sink):
    def __init__(self) -> None:
        self.finished = threading.Event()

    def finish(self, text: str, reason: str, completion_tokens: int) -> None:
        self.finished.set()


class HeldDecoder:
    """A decoder whose first prefill waits until released; its logits always pick token 0 (the end token)."""

    ops = NumpyOps()

    def __init__(self) -> None:
        self.running, self.release = threading.Event(), threading.Event()

    def empty_cache(self, batch: int) -> list:
        return [np.zeros((batch, 1, 0, 2), np.float32)]

    def run(self, ids, mask, positions, past):
        self.running.set()
        self.release.wait(10)
        logits = np.zeros((ids.shape[0], 5), np.float32)
        logits[:, 0] = 1.0
        return logits, [np.zeros((ids.shape[0], 1, mask.shape[1], 2), np.float32)]


class Failing(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.failures: list[str] = []

    def fail(self, message: str) -> None:
        self.failures.append(message)
        self.finished.set()


def waiting_sequences(n: int, tokenizer) -> list[Sequence]:
    """`n` greedy 4-token sequences of the prompt [1], each with a sink that records failures."""
    return [
        Sequence(
            [1],
            4,
            SamplingParams(),
            np.random.default_rng(0),
            IncrementalDecoder(tokenizer),
            StopText([]),
            Failing(),
            end_id=0,
        )
        for _ in range(n)
    ]


def test_engine_refuses_sequences_when_max_pending_already_wait(tokenizer) -> None:
    decoder = HeldDecoder()
    engine = Engine(decoder, max_slots=1, log=lambda m: None, max_pending=2)
    seqs = waiting_sequences(5, tokenizer)
    try:
        assert engine.submit(seqs[0]) and decoder.running.wait(5)  # in the one slot
        assert engine.submit(seqs[1]) and engine.submit(seqs[2])  # waiting: 2 of max_pending 2
        assert not engine.submit(seqs[3]) and not engine.submit(seqs[4])
        decoder.release.set()
        assert all(s.sink.finished.wait(5) for s in seqs[:3])
        assert engine.submit(seqs[3])  # room again once the backlog drained
        assert seqs[3].sink.finished.wait(5)
    finally:
        decoder.release.set()
        engine.close()


def test_engine_drains_waiting_sequences_when_closed(tokenizer) -> None:
    decoder = HeldDecoder()
    engine = Engine(decoder, max_slots=1, log=lambda m: None)
    seqs = waiting_sequences(3, tokenizer)
    for seq in seqs:
        assert engine.submit(seq)
    assert decoder.running.wait(5)
    decoder.release.set()
    engine.close()  # finishes what runs and waits before it returns
    assert all(s.sink.finished.is_set() and not s.sink.failures for s in seqs)


def test_engine_fails_what_is_left_when_closing_outlasts_the_drain(tokenizer) -> None:
    decoder = HeldDecoder()
    engine = Engine(decoder, max_slots=1, log=lambda m: None)
    seqs = waiting_sequences(2, tokenizer)
    for seq in seqs:
        engine.submit(seq)
    assert decoder.running.wait(5)
    threading.Timer(0.5, decoder.release.set).start()
    engine.close(drain_s=0.1)
    assert all(s.sink.finished.is_set() for s in seqs)
    assert any("being unloaded" in m for s in seqs for m in s.sink.failures)
