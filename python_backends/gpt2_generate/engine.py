"""Iteration-level (in-flight) batching over a KV-cache decoder.

One thread owns the decoder. Each iteration it admits waiting sequences (one batched prefill),
then runs a single decode step for every active sequence. Finished and cancelled sequences
leave at once and free their cache; new ones join at the next step. Caches of different lengths
share one batch by left padding, masked out through attention_mask.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from detok import IncrementalDecoder, StopText
from sampling import SamplingParams, choose

from tritonyard_contract.tensors import ATTENTION_MASK, INPUT_IDS, LOGITS, POSITION_IDS, past_names, present_names

Run = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


class Sink:
    """Where a sequence's results go; the Triton glue implements it per request."""

    def piece(self, text: str, completion_tokens: int) -> None: ...
    def finish(self, text: str, reason: str, completion_tokens: int) -> None: ...
    def fail(self, message: str) -> None: ...
    def is_cancelled(self) -> bool:
        return False


@dataclass
class Sequence:
    prompt: list[int]
    max_tokens: int
    sampling: SamplingParams
    rng: np.random.Generator
    decoder: IncrementalDecoder
    stop: StopText
    sink: Sink
    generated: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Shape:
    """Decoder geometry from the config; the cache tensors are named as the contract says."""

    n_layer: int
    n_head: int
    head_dim: int
    eos_token_id: int

    @property
    def past_names(self) -> list[str]:
        return past_names(self.n_layer)

    @property
    def present_names(self) -> list[str]:
        return present_names(self.n_layer)


def left_pad(x: np.ndarray, width: int, axis: int) -> np.ndarray:
    """Pad `x` with zeros on the left of `axis` up to `width`."""
    missing = width - x.shape[axis]
    if missing <= 0:
        return x
    pad = [(0, 0)] * x.ndim
    pad[axis] = (missing, 0)
    return np.pad(x, pad)


class Batch:
    """The running sequences with their stacked caches [B, heads, P, head_dim] and mask [B, P]."""

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        self.seqs: list[Sequence] = []
        self.past: list[np.ndarray] = []
        self.mask = np.zeros((0, 0), np.int64)

    def join(self, seqs: list[Sequence], past: list[np.ndarray], mask: np.ndarray) -> None:
        width = max(self.mask.shape[1], mask.shape[1])
        if not self.seqs:
            self.seqs, self.past, self.mask = list(seqs), past, mask
            return
        self.past = [np.concatenate([left_pad(a, width, 2), left_pad(b, width, 2)]) for a, b in zip(self.past, past)]
        self.mask = np.concatenate([left_pad(self.mask, width, 1), left_pad(mask, width, 1)])
        self.seqs += seqs

    def drop(self, keep: list[int]) -> None:
        """Keep only the rows in `keep`, and trim columns that are padding for every row."""
        self.seqs = [self.seqs[i] for i in keep]
        if not keep:
            self.past, self.mask = [], np.zeros((0, 0), np.int64)
            return
        mask = self.mask[keep]
        start = int(np.argmax(mask.any(axis=0)))
        self.mask = mask[:, start:]
        self.past = [p[keep][:, :, start:] for p in self.past]


class Engine:
    """Owns the decoder loop thread; `submit` is safe to call from Triton's execute()."""

    def __init__(
        self, run: Run, shape: Shape, max_slots: int, log: Callable[[str], None], max_pending: int = 1 << 30
    ) -> None:
        self.run, self.shape, self.max_slots, self.log = run, shape, max_slots, log
        self.max_pending = max_pending
        self.waiting: queue.Queue[Sequence | None] = queue.Queue()
        self.batch = Batch(shape)
        self.thread = threading.Thread(target=self._loop, name="gpt2-engine", daemon=True)
        self.stopping = False
        self.thread.start()

    def submit(self, seq: Sequence) -> bool:
        """Queue `seq` for a slot; False (nothing queued) when `max_pending` sequences already wait."""
        # execute() is the only producer, so no other put can slip in between the check and the put.
        if self.waiting.qsize() >= self.max_pending:
            return False
        self.waiting.put(seq)
        return True

    def close(self) -> None:
        self.stopping = True
        self.waiting.put(None)
        self.thread.join(timeout=30)

    def _admit(self) -> list[Sequence]:
        new: list[Sequence] = []
        block = not self.batch.seqs  # idle: sleep until work arrives
        while len(self.batch.seqs) + len(new) < self.max_slots:
            try:
                seq = self.waiting.get(block=block and not new, timeout=None)
            except queue.Empty:
                break
            if seq is None:
                break
            if seq.sink.is_cancelled():
                seq.sink.fail("cancelled before it started")
                continue
            new.append(seq)
        return new

    def _loop(self) -> None:
        while not self.stopping:
            try:
                new = self._admit()
                if new:
                    self._prefill(new)
                if self.batch.seqs:
                    self._step()
            except Exception as exc:  # noqa: BLE001 - fail the batch, keep the engine alive
                self.log(f"decoder step failed: {exc}")
                for seq in self.batch.seqs:
                    seq.sink.fail(f"generation failed: {exc}")
                self.batch = Batch(self.shape)

    def _empty_past(self, batch: int) -> dict[str, np.ndarray]:
        s = self.shape
        return {n: np.zeros((batch, s.n_head, 0, s.head_dim), np.float32) for n in s.past_names}

    def _prefill(self, seqs: list[Sequence]) -> None:
        """One decoder run over every new prompt, left-padded to the longest."""
        width = max(len(s.prompt) for s in seqs)
        ids = np.stack([left_pad(np.array(s.prompt, np.int64), width, 0) for s in seqs])
        mask = np.stack([left_pad(np.ones(len(s.prompt), np.int64), width, 0) for s in seqs])
        positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
        feeds = {INPUT_IDS.name: ids, ATTENTION_MASK.name: mask, POSITION_IDS.name: positions}
        try:
            out = self.run({**feeds, **self._empty_past(len(seqs))})
        except Exception as exc:  # noqa: BLE001 - these never joined the batch, so the loop's handler misses them
            self.log(f"prefill failed: {exc}")
            for seq in seqs:
                seq.sink.fail(f"generation failed: {exc}")
            return
        past = [out[n] for n in self.shape.present_names]
        keep = self._advance(seqs, out[LOGITS][:, -1, :])
        self.batch.join([seqs[i] for i in keep], [p[keep] for p in past], mask[keep])

    def _step(self) -> None:
        batch = self.batch
        last = np.array([[s.generated[-1]] for s in batch.seqs], np.int64)
        positions = batch.mask.sum(axis=1, keepdims=True)
        mask = np.concatenate([batch.mask, np.ones((len(batch.seqs), 1), np.int64)], axis=1)
        feeds = {INPUT_IDS.name: last, ATTENTION_MASK.name: mask, POSITION_IDS.name: positions}
        feeds.update(zip(self.shape.past_names, batch.past))
        out = self.run(feeds)
        batch.past, batch.mask = [out[n] for n in self.shape.present_names], mask
        keep = self._advance(batch.seqs, out[LOGITS][:, -1, :])
        if len(keep) < len(batch.seqs):
            batch.drop(keep)

    def _advance(self, seqs: list[Sequence], logits: np.ndarray) -> list[int]:
        """Sample one token per sequence and report it; return the rows still generating."""
        keep = []
        for row, seq in enumerate(seqs):
            if seq.sink.is_cancelled():
                seq.sink.fail(f"cancelled after {len(seq.generated)} tokens; its cache is freed")
                continue
            token = choose(logits[row], seq.sampling, seq.rng)
            if token == self.shape.eos_token_id:
                seq.sink.finish(seq.stop.flush(), "stop", len(seq.generated))
                continue
            seq.generated.append(token)
            text, stopped = seq.stop.feed(seq.decoder.push(token))
            if stopped:
                seq.sink.finish(text, "stop", len(seq.generated))
            elif len(seq.generated) >= seq.max_tokens:
                seq.sink.finish(text + seq.stop.flush(), "length", len(seq.generated))
            else:
                if text:
                    seq.sink.piece(text, len(seq.generated))
                keep.append(row)
        return keep
