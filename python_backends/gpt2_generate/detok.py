"""Streaming detokenization and stop strings for byte-level BPE (GPT-2) tokenizers.

Decoding one token at a time splits multi-byte characters (emoji, CJK) across tokens. The
prefix-offset decoder re-decodes a short window and holds text back while it ends in U+FFFD.
Shipped beside the generation loop's and the detokenizer's model.py.
"""

from __future__ import annotations

REPLACEMENT = "\ufffd"


class IncrementalDecoder:
    """Turns generated token ids into text pieces that never split a character."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix_offset = 0  # start of the window re-decoded for context
        self.read_offset = 0  # ids before this were already turned into text

    def push(self, token_id: int) -> str:
        """Add one token; return the text it completes (possibly empty)."""
        self.ids.append(token_id)
        decode = self.tokenizer.decode
        prefix = decode(self.ids[self.prefix_offset : self.read_offset], skip_special_tokens=True)
        full = decode(self.ids[self.prefix_offset :], skip_special_tokens=True)
        if full.endswith(REPLACEMENT) or len(full) <= len(prefix):
            return ""  # an incomplete UTF-8 sequence: wait for the next token
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        return full[len(prefix) :]


class StopText:
    """Cuts generated text at the first stop string, never emitting part of one."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.text = ""
        self.sent = 0

    def feed(self, piece: str) -> tuple[str, bool]:
        """Add decoded text; return (text safe to emit now, whether a stop string was hit)."""
        self.text += piece
        if not self.stops:
            return self._emit(len(self.text)), False
        longest = max(len(s) for s in self.stops)
        window_start = max(0, self.sent - longest)
        hits = [i for i in (self.text.find(s, window_start) for s in self.stops) if i >= 0]
        if hits:
            return self._emit(min(hits)), True
        hold = 0  # the longest tail that could still become a stop string
        for s in self.stops:
            for n in range(min(len(s) - 1, len(self.text) - self.sent), hold, -1):
                if self.text.endswith(s[:n]):
                    hold = n
                    break
        return self._emit(len(self.text) - hold), False

    def flush(self) -> str:
        """Everything not yet emitted (generation ended without a stop string)."""
        return self._emit(len(self.text))

    def _emit(self, end: int) -> str:
        out = self.text[self.sent : end]
        self.sent = max(self.sent, end)
        return out
