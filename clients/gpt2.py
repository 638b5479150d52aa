"""GPT-2 client: server-side generation (streamed from gpt2_stream over gRPC, or whole from gpt2 over HTTP), or
a client-side greedy loop without a cache (`--baseline`: one gpt2 call per token) for comparison.

    python -m clients.gpt2 "The oil level is" --max-tokens 32 --stream
    python -m clients.gpt2 "The oil level is" --baseline
"""

from __future__ import annotations

import argparse
import queue
import sys
import time
from collections.abc import Callable
from pathlib import Path

from clients.lib import cli, payloads, retry
from clients.lib.timing import Generation
from tritonyard_contract import COMPLETION_TOKENS, FINISH_REASON, PROMPT_TOKENS, TEXT_OUTPUT

# gpt2_stream tokenizes for both entries; its version folder holds the one tokenizer.json.
DEFAULT_TOKENIZER = Path(__file__).resolve().parent.parent / "model_repository" / "gpt2_stream" / "1" / "tokenizer.json"
STREAM_ERROR_WAIT_S = 5.0  # how long a broken stream's callback gets to report why
__all__ = ["Generation", "baseline", "generate", "main", "stream"]


def _generation(result, total_s: float, text: str | None = None, times: list[float] | None = None) -> Generation:
    f = payloads.first
    return Generation(
        f(result, TEXT_OUTPUT.name) if text is None else text,
        f(result, FINISH_REASON.name),
        f(result, PROMPT_TOKENS.name),
        f(result, COMPLETION_TOKENS.name),
        total_s,
        times or [],
    )


def generate(
    url: str,
    prompt: str,
    protocol: str = "http",
    headers: dict | None = None,
    retry_policy: retry.RetryPolicy = retry.DEFAULT,
    timeout_s: float | None = None,
    **options,
) -> Generation:
    """Call `gpt2` (not decoupled) and wait for the whole text; UNAVAILABLE is retried per `retry_policy`."""
    api = payloads.api_for(protocol)
    if protocol == "http" and timeout_s:
        client = api.InferenceServerClient(url, connection_timeout=timeout_s, network_timeout=timeout_s)
    else:
        client = api.InferenceServerClient(url)
    kw = {"client_timeout": timeout_s} if protocol == "grpc" and timeout_s else {}
    try:
        start = time.perf_counter()
        inputs = payloads.generate_inputs(api, prompt, options)
        result = retry.call(lambda: client.infer("gpt2", inputs, headers=headers, **kw), retry_policy, what="gpt2")
        total = time.perf_counter() - start
    finally:
        client.close()
    return _generation(result, total)


def stream(
    url: str,
    prompt: str,
    on_piece=None,
    headers: dict | None = None,
    retry_policy: retry.RetryPolicy = retry.DEFAULT,
    timeout_s: float | None = None,
    **options,
) -> Generation:
    """Call `gpt2_stream` over gRPC streaming; `on_piece(text)` sees each piece as it arrives.

    A refusal (UNAVAILABLE) before the first piece is retried per `retry_policy`; once text has been
    handed to `on_piece`, a retry would repeat it, so later errors are raised as they are. `timeout_s`
    bounds the wait for each piece (default 300 s); running out raises TimeoutError.
    """
    delivered: list[str] = []
    start = time.perf_counter()  # timings include refused attempts: what the caller waited
    return retry.call(
        lambda: _stream_once(url, prompt, on_piece, headers, options, delivered, start, timeout_s or 300.0),
        retry_policy,
        what="gpt2_stream",
        retryable=lambda exc: not delivered and retry.is_unavailable(exc),
    )


def _stream_once(
    url: str, prompt: str, on_piece, headers: dict | None, options: dict, delivered: list, start: float, wait: float
) -> Generation:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    events: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(url)
    client.start_stream(callback=lambda result=None, error=None: events.put((result, error)), headers=headers)
    parts, times = delivered, []
    try:
        try:
            client.async_stream_infer(
                "gpt2_stream", payloads.generate_inputs(grpcclient, prompt, options), enable_empty_final_response=False
            )
        except InferenceServerException as exc:
            # "The stream is no longer in valid state": the reason (no server, ...) arrives through the callback.
            try:
                _, error = events.get(timeout=STREAM_ERROR_WAIT_S)
            except queue.Empty:
                raise exc from None
            reason = error if isinstance(error, InferenceServerException) else InferenceServerException(str(error))
            raise reason from None
        while True:
            try:
                result, error = events.get(timeout=wait)
            except queue.Empty:
                raise TimeoutError(f"no piece from gpt2_stream within {wait:g} s") from None
            if error is not None:
                raise error if isinstance(error, InferenceServerException) else InferenceServerException(str(error))
            piece = payloads.first(result, TEXT_OUTPUT.name)
            times.append(time.perf_counter() - start)
            parts.append(piece)
            if on_piece:
                on_piece(piece)
            if payloads.first(result, FINISH_REASON.name):
                return _generation(result, times[-1], "".join(parts), times)
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
    timeout_s: float | None = None,
) -> tuple[Generation, list[int]]:
    """A client-side greedy loop without a cache: one `gpt2` call per token (max_tokens 1), each resending the
    prompt and the text so far, so the server prefills the whole sequence at every step. Returns the generation
    and its token ids (by the tokenizer at `tokenizer_path`, which also counts the prompt)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    text, reason, steps = "", "length", 0
    start = time.perf_counter()
    for _ in range(max_tokens):
        step = generate(url, prompt + text, "http", headers, retry_policy, timeout_s, max_tokens=1)
        if step.completion_tokens == 0:  # the end token came first
            reason = "stop"
            break
        text, steps = text + step.text, steps + 1
    total = time.perf_counter() - start
    return Generation(text, reason, len(tokenizer.encode(prompt).ids), steps, total), tokenizer.encode(text).ids


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
    p.add_argument("--baseline", action="store_true", help="client-side greedy loop, one gpt2 call per token, no cache")
    p.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER, help="tokenizer.json for --baseline")
    cli.add_server_options(p)
    return p


def _tokenizer_problem(path: Path) -> str | None:
    """Why `path` is no tokenizer.json the baseline loop can load; None when it is one."""
    if not path.is_file():
        return f"{path} not found: run `make build` or pass --tokenizer"
    from tokenizers import Tokenizer

    try:
        Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception for a bad file
        return f"{path} is not a tokenizer.json ({exc}): pass --tokenizer"
    return None


def _usage_problem(args: argparse.Namespace) -> str | None:
    """What argparse does not check: a positive --timeout, and for --baseline a readable tokenizer."""
    if not args.timeout > 0:
        return "--timeout must be positive"
    if args.baseline:
        return _tokenizer_problem(args.tokenizer)
    return None


def _mode(args: argparse.Namespace) -> tuple[str, str, str]:
    """(protocol, model, label of the summary line) for the flags: --baseline, --stream, or one whole request."""
    if args.baseline:
        return "http", "gpt2", "baseline (client loop, no cache)"
    if args.stream:
        return "grpc", "gpt2_stream", "gpt2_stream (gRPC)"
    return args.protocol, "gpt2", "gpt2"


def _one_generation(
    args: argparse.Namespace,
    url: str,
    show: Callable[[str], None],
    headers: dict,
    policy: retry.RetryPolicy,
    options: dict,
) -> Generation:
    """One generation the way the flags ask; streamed pieces go to `show` as they arrive."""
    if args.baseline:
        gen, _ = baseline(url, args.prompt, args.tokenizer, args.max_tokens, headers, policy, args.timeout)
        return gen
    if args.stream:
        return stream(url, args.prompt, show, headers, policy, args.timeout, **options)
    return generate(url, args.prompt, args.protocol, headers, policy, args.timeout, **options)


def _summary_line(mode: str, gen: Generation) -> str:
    itl = gen.itl_s or 0.0
    return (
        f"[{mode}] finish={gen.finish_reason} prompt={gen.prompt_tokens} completion={gen.completion_tokens} "
        f"ttft={gen.ttft_s * 1000:.0f} ms itl={itl * 1000:.1f} ms {gen.tokens_per_s:.1f} tok/s\n"
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    options = {
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "seed": args.seed,
        "stop": args.stop,
    }
    out = sys.stdout
    try:
        headers = cli.parse_headers(args.header)
        policy = retry.RetryPolicy(retries=args.retries)
    except ValueError as exc:
        return cli.usage_error(str(exc))
    problem = _usage_problem(args)
    if problem:
        return cli.usage_error(problem)
    protocol, model, mode = _mode(args)
    target = cli.Target(cli.default_url(protocol, args.url), model, args.retries, args.timeout)
    result: list[Generation] = []
    started = [False]

    def show(piece: str) -> None:
        if not started[0]:  # the prompt only once the server answers, so a failure prints nothing here
            started[0] = True
            out.write(args.prompt)
        out.write(piece)
        out.flush()

    def call(target: cli.Target) -> int:
        result.append(_one_generation(args, target.url, show, headers, policy, options))
        return 0

    code = cli.run(call, target)
    if started[0]:
        out.write("\n")
    if code:
        return code
    gen = result[0]
    if not args.stream:
        out.write(f"{args.prompt}{gen.text}\n")
    out.write(_summary_line(mode, gen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
