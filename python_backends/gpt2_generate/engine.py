"""Iteration-level (in-flight) batching over a KV-cache decoder.

One thread owns the decoder. Each iteration it admits waiting sequences (one batched prefill),
then runs a single decode step for every active sequence. Finished and cancelled sequences
leave at once and free their cache; new ones join at the next step. Caches of different lengths
share one batch by left padding, masked out through attention_mask. The cache arrays are the
decoder's (`decoder.Decoder.ops`): on the gpu target they stay on the device between steps.
"""

from __future__ import annotations

import queue
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from decoder import Decoder, NumpyOps
from detok import IncrementalDecoder, StopText
from sampling import SamplingParams, choose


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
    end_id: int  # the token that ends generation (the tokenizer's EOS unless the request sets end_id)
    min_tokens: int = 0  # end_id cannot end generation before this many tokens
    origin: str = ""  # the entry model the request came through (gpt2 or gpt2_stream), for the batch log
    generated: list[int] = field(default_factory=list)


HOST = NumpyOps()  # the attention mask and token ids always live on the host: they are small


class Batch:
    """The running sequences with their stacked caches [B, heads, P, head_dim] (arrays of `ops`) and mask [B, P]."""

    def __init__(self, ops: NumpyOps) -> None:
        self.ops = ops
        self.seqs: list[Sequence] = []
        self.past: list = []
        self.mask = np.zeros((0, 0), np.int64)

    def join(self, seqs: list[Sequence], past: list, mask: np.ndarray) -> None:
        width = max(self.mask.shape[1], mask.shape[1])
        if not self.seqs:
            self.seqs, self.past, self.mask = list(seqs), past, mask
            return
        pad, cat = self.ops.left_pad, self.ops.cat
        self.past = [cat([pad(a, width, 2), pad(b, width, 2)]) for a, b in zip(self.past, past)]
        self.mask = np.concatenate([HOST.left_pad(self.mask, width, 1), HOST.left_pad(mask, width, 1)])
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
        self.past = [self.ops.rows(p, keep)[:, :, start:] for p in self.past]

    def origins(self) -> str:
        """Who the running sequences came through, e.g. "gpt2 2, gpt2_stream 3"."""
        counts = Counter(s.origin or "?" for s in self.seqs)
        return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


class Engine:
    """Owns the decoder loop thread; `submit` is safe to call from Triton's execute()."""

    def __init__(
        self,
        decoder: Decoder,
        max_slots: int,
        log: Callable[[str], None],
        max_pending: int = 1 << 30,
        info: Callable[[str], None] | None = None,
    ) -> None:
        self.decoder, self.max_slots, self.log = decoder, max_slots, log
        self.info = info or (lambda _: None)
        self.max_pending = max_pending
        self.waiting: queue.Queue[Sequence | None] = queue.Queue()
        self.batch = Batch(decoder.ops)
        self.thread = threading.Thread(target=self._loop, name="gpt2-engine", daemon=True)
        self.stopping = self.aborting = False
        self.thread.start()

    def submit(self, seq: Sequence) -> bool:
        """Queue `seq` for a slot; False (nothing queued) when `max_pending` sequences already wait."""
        # execute() is the only producer, so no other put can slip in between the check and the put.
        if self.waiting.qsize() >= self.max_pending:
            return False
        self.waiting.put(seq)
        return True

    def close(self, drain_s: float = 60.0) -> None:
        """Admit nothing new, let the running and waiting sequences finish (up to `drain_s`), then fail what is
        left, so every request gets its final response before the model goes."""
        self.stopping = True
        self.waiting.put(None)  # wakes an idle loop
        self.thread.join(timeout=drain_s)
        self.aborting = True
        self.thread.join(timeout=30)
        leftover = list(self.batch.seqs)
        while not self.waiting.empty():
            seq = self.waiting.get_nowait()
            if seq is not None:
                leftover.append(seq)
        for seq in leftover:
            seq.sink.fail("generation stopped: the model is being unloaded")
        self.batch = Batch(self.decoder.ops)

    def _admit(self) -> list[Sequence]:
        new: list[Sequence] = []
        block = not self.batch.seqs and not self.stopping  # idle: sleep until work arrives
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
        while not self.aborting:
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
                self.batch = Batch(self.decoder.ops)
            if self.stopping and not self.batch.seqs and self.waiting.empty():
                return  # drained

    def _prefill(self, seqs: list[Sequence]) -> None:
        """One decoder run over every new prompt, left-padded to the longest."""
        width = max(len(s.prompt) for s in seqs)
        ids = np.stack([HOST.left_pad(np.array(s.prompt, np.int64), width, 0) for s in seqs])
        mask = np.stack([HOST.left_pad(np.ones(len(s.prompt), np.int64), width, 0) for s in seqs])
        positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
        try:
            logits, past = self.decoder.run(ids, mask, positions, self.decoder.empty_cache(len(seqs)))
        except Exception as exc:  # noqa: BLE001 - these never joined the batch, so the loop's handler misses them
            self.log(f"prefill failed: {exc}")
            for seq in seqs:
                seq.sink.fail(f"generation failed: {exc}")
            return
        keep = self._advance(seqs, logits)
        if keep:
            ops = self.decoder.ops
            self.batch.join([seqs[i] for i in keep], [ops.rows(p, keep) for p in past], mask[keep])
        self.info(f"batch of {len(self.batch.seqs)} after admitting {len(seqs)}: {self.batch.origins() or 'empty'}")

    def _step(self) -> None:
        batch = self.batch
        last = np.array([[s.generated[-1]] for s in batch.seqs], np.int64)
        positions = batch.mask.sum(axis=1, keepdims=True)
        mask = np.concatenate([batch.mask, np.ones((len(batch.seqs), 1), np.int64)], axis=1)
        logits, batch.past = self.decoder.run(last, mask, positions, batch.past)
        batch.mask = mask
        keep = self._advance(batch.seqs, logits)
        if len(keep) < len(batch.seqs):
            batch.drop(keep)

    def _advance(self, seqs: list[Sequence], logits: np.ndarray) -> list[int]:
        """Sample one token per sequence and report it; return the rows still generating."""
        keep = []
        for row, seq in enumerate(seqs):
            if seq.sink.is_cancelled():
                seq.sink.fail(f"cancelled after {len(seq.generated)} tokens; its cache is freed")
                continue
            scores = logits[row]
            if len(seq.generated) < seq.min_tokens:  # min_tokens / ignore_eos: the end token cannot win yet
                scores = scores.copy()
                scores[seq.end_id] = -np.inf
            token = choose(scores, seq.sampling, seq.rng)
            if token == seq.end_id:
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
