"""One definition of the timings users compare: time to first token, inter-token latency, tokens/s.

ITL is genai-perf's: the mean gap per token after the first, (last piece - first piece) / (tokens - 1),
so a piece that carries several tokens (a held-back stop prefix, a multi-byte character) counts each.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Generation:
    """One generation and its timings; times are seconds since the request was sent (retries included)."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    total_s: float
    piece_times: list[float] = field(default_factory=list)  # arrival of each streamed piece; empty when unary

    @property
    def ttft_s(self) -> float:
        """Time to the first piece; a unary answer arrives whole, so its first token is its total time."""
        return self.piece_times[0] if self.piece_times else self.total_s

    @property
    def itl_s(self) -> float | None:
        """Mean gap per token after the first; None when it is not defined (unary, or fewer than 2 tokens)."""
        if not self.piece_times or self.completion_tokens < 2:
            return None
        return (self.piece_times[-1] - self.piece_times[0]) / (self.completion_tokens - 1)

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.total_s if self.total_s > 0 else 0.0
