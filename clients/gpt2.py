"""GPT-2 client: server-side generation (streamed over gRPC, or whole over HTTP), or the old
client-side greedy loop (`--baseline`) for comparison.

    python -m clients.gpt2 "The oil level is" --max-tokens 32 --stream
    python -m clients.gpt2 "The oil level is" --baseline
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clients import retry
from clients.clo import parse_headers

DEFAULT_TOKENIZER = (
    Path(__file__).resolve().parent.parent / "model_repository" / "gpt2_tokenizer" / "1" / "tokenizer.json"
)


@dataclass
class Generation:
    """What came back, with the timings users compare."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    total_s: float
    piece_times: list[float] = field(default_factory=list)  # seconds since the request, per piece

    @property
    def ttft_s(self) -> float:
        return self.piece_times[0] if self.piece_times else self.total_s

    @property
    def itl_s(self) -> float:
        gaps = np.diff(self.piece_times)
        return float(gaps.mean()) if gaps.size else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.total_s if self.total_s > 0 else 0.0


def _inputs(api, prompt: str, options: dict) -> list:
    """text_input plus whichever optional inputs were given; binary tensors over HTTP."""
    kw = {"binary_data": True} if api.__name__.endswith("http") else {}
    specs = [("text_input", np.array([[prompt.encode()]], dtype=np.object_), "BYTES")]
    kinds = {"max_tokens": (np.int32, "INT32"), "temperature": (np.float32, "FP32"), "top_k": (np.int32, "INT32"),
             "top_p": (np.float32, "FP32"), "seed": (np.uint64, "UINT64")}  # fmt: skip
    for name, (dtype, triton_type) in kinds.items():
        if options.get(name) is not None:
            specs.append((name, np.array([[options[name]]], dtype=dtype), triton_type))
    if options.get("stop"):
        specs.append(("stop", np.array([[s.encode() for s in options["stop"]]], dtype=np.object_), "BYTES"))
    inputs = []
    for name, array, triton_type in specs:
        inp = api.InferInput(name, list(array.shape), triton_type)
        inp.set_data_from_numpy(array, **kw)
        inputs.append(inp)
    return inputs


def _first(result, name: str):
    value = result.as_numpy(name).reshape(-1)[0]
    return value.decode() if isinstance(value, bytes) else int(value)


def generate(
    url: str,
    prompt: str,
    protocol: str = "http",
    headers: dict | None = None,
    retry_policy: retry.RetryPolicy = retry.DEFAULT,
    **options,
) -> Generation:
    """Call `gpt2` (not decoupled) and wait for the whole text; UNAVAILABLE is retried per `retry_policy`."""
    if protocol == "http":
        import tritonclient.http as api
    else:
        import tritonclient.grpc as api
    client = api.InferenceServerClient(url)
    try:
        start = time.perf_counter()
        inputs = _inputs(api, prompt, options)
        result = retry.call(lambda: client.infer("gpt2", inputs, headers=headers), retry_policy, what="gpt2")
        total = time.perf_counter() - start
    finally:
        client.close()
    return Generation(_first(result, "text_output"), _first(result, "finish_reason"),
                      _first(result, "prompt_tokens"), _first(result, "completion_tokens"), total)  # fmt: skip


def stream(
    url: str,
    prompt: str,
    on_piece=None,
    headers: dict | None = None,
    retry_policy: retry.RetryPolicy = retry.DEFAULT,
    **options,
) -> Generation:
    """Call `gpt2_stream` over gRPC streaming; `on_piece(text)` sees each piece as it arrives.

    A refusal (UNAVAILABLE) before the first piece is retried per `retry_policy`; once text has been
    handed to `on_piece`, a retry would repeat it, so later errors are raised as they are.
    """
    delivered: list[str] = []
    start = time.perf_counter()  # timings include refused attempts: what the caller waited
    return retry.call(
        lambda: _stream_once(url, prompt, on_piece, headers, options, delivered, start),
        retry_policy,
        what="gpt2_stream",
        retryable=lambda exc: not delivered and retry.is_unavailable(exc),
    )


def _stream_once(
    url: str, prompt: str, on_piece, headers: dict | None, options: dict, delivered: list, start: float
) -> Generation:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    events: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(url)
    client.start_stream(callback=lambda result=None, error=None: events.put((result, error)), headers=headers)
    parts, times = delivered, []
    try:
        client.async_stream_infer(
            "gpt2_stream", _inputs(grpcclient, prompt, options), enable_empty_final_response=False
        )
        while True:
            result, error = events.get(timeout=300)
            if error is not None:
                raise error if isinstance(error, InferenceServerException) else InferenceServerException(str(error))
            piece = _first(result, "text_output")
            times.append(time.perf_counter() - start)
            parts.append(piece)
            if on_piece:
                on_piece(piece)
            reason = _first(result, "finish_reason")
            if reason:
                return Generation("".join(parts), reason, _first(result, "prompt_tokens"),
                                  _first(result, "completion_tokens"), times[-1], times)  # fmt: skip
    finally:
        client.stop_stream()
        client.close()


def baseline(
    url: str,
    prompt: str,
    tokenizer_path: Path,
    max_tokens: int = 16,
    headers: dict | None = None,
    retry_policy: retry.RetryPolicy = retry.DEFAULT,
) -> tuple[Generation, list[int]]:
    """The old client-side loop: tokenize here, resend the whole sequence each step (no KV cache), argmax."""
    import tritonclient.http as httpclient
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    eos = tokenizer.token_to_id("<|endoftext|>")
    client = httpclient.InferenceServerClient(url)
    config = client.get_model_config("gpt2_decoder", headers=headers)
    past = [t for t in config["input"] if t["name"].startswith("past_key_values.")]
    ids = tokenizer.encode(prompt).ids
    prompt_len, reason = len(ids), "length"
    start = time.perf_counter()
    try:
        for _ in range(max_tokens):
            n = len(ids)
            arrays = {"input_ids": np.array([ids], np.int64), "attention_mask": np.ones((1, n), np.int64),
                      "position_ids": np.arange(n, dtype=np.int64)[None]}  # fmt: skip
            for t in past:  # no cache: every past is empty
                heads, _, head_dim = (int(d) for d in t["dims"])
                arrays[t["name"]] = np.zeros((1, heads, 0, head_dim), np.float32)
            inputs = []
            for name, array in arrays.items():
                inp = httpclient.InferInput(name, list(array.shape), "INT64" if array.dtype == np.int64 else "FP32")
                inp.set_data_from_numpy(array, binary_data=True)
                inputs.append(inp)
            logits = [httpclient.InferRequestedOutput("logits", binary_data=True)]
            out = retry.call(
                # Called at once, inside this iteration, so binding the loop's variables late is harmless.
                lambda: client.infer("gpt2_decoder", inputs, outputs=logits, headers=headers),  # noqa: B023
                retry_policy,
                what="gpt2_decoder",
            )
            token = int(np.argmax(out.as_numpy("logits")[0, -1]))
            if token == eos:
                reason = "stop"
                break
            ids.append(token)
    finally:
        client.close()
    total = time.perf_counter() - start
    generated = ids[prompt_len:]
    return Generation(tokenizer.decode(generated), reason, prompt_len, len(generated), total), generated


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m clients.gpt2", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("prompt", help="text to continue")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--temperature", type=float, help="0 = greedy (the server's default)")
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--seed", type=int, help="makes sampling repeatable")
    p.add_argument("--stop", action="append", help="stop string, not included in the output (repeatable)")
    p.add_argument("--stream", action="store_true", help="gpt2_stream over gRPC: print tokens as they arrive")
    p.add_argument("--protocol", choices=("http", "grpc"), default="http", help="for the non-streaming call")
    p.add_argument("--baseline", action="store_true", help="client-side greedy loop against gpt2_decoder, no cache")
    p.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER, help="tokenizer.json for --baseline")
    p.add_argument("--url", help="server address (default $TRITON_HTTP_URL / $TRITON_GRPC_URL or localhost:8000/8001)")
    p.add_argument("--header", action="append", default=[], help='extra request header "Name: value" (repeatable)')
    p.add_argument(
        "--retries", type=int, default=3, help="retries of a request the server refuses as overloaded (default 3)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from tritonclient.utils import InferenceServerException

    grpc_url = args.url or os.environ.get("TRITON_GRPC_URL", "localhost:8001")
    http_url = args.url or os.environ.get("TRITON_HTTP_URL", "localhost:8000")
    options = {"max_tokens": args.max_tokens, "temperature": args.temperature, "top_k": args.top_k,
               "top_p": args.top_p, "seed": args.seed, "stop": args.stop}  # fmt: skip
    out = sys.stdout
    try:
        headers = parse_headers(args.header)
        policy = retry.RetryPolicy(retries=args.retries)
    except ValueError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    try:
        if args.baseline:
            if not args.tokenizer.is_file():
                sys.stderr.write(f"error: {args.tokenizer} not found: run `make build` or pass --tokenizer\n")
                return 2
            gen, _ = baseline(http_url, args.prompt, args.tokenizer, args.max_tokens, headers, policy)
            out.write(f"{args.prompt}{gen.text}\n")
        elif args.stream:
            out.write(args.prompt)
            gen = stream(grpc_url, args.prompt, lambda t: (out.write(t), out.flush()), headers, policy, **options)
            out.write("\n")
        else:
            url = http_url if args.protocol == "http" else grpc_url
            gen = generate(url, args.prompt, args.protocol, headers, policy, **options)
            out.write(f"{args.prompt}{gen.text}\n")
    except InferenceServerException as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    mode = "baseline (client loop, no cache)" if args.baseline else "gpt2_stream (gRPC)" if args.stream else "gpt2"
    out.write(
        f"[{mode}] finish={gen.finish_reason} prompt={gen.prompt_tokens} completion={gen.completion_tokens} "
        f"ttft={gen.ttft_s * 1000:.0f} ms itl={gen.itl_s * 1000:.1f} ms {gen.tokens_per_s:.1f} tok/s\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
