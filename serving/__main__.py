"""`python -m serving`: run tritonserver in the foreground, or around one command.

python -m serving                          # serve until Ctrl-C / SIGTERM
python -m serving -- python -m clients.clo # start, wait ready, run the command, stop

Locked down: every model of the repository is loaded at start (explicit model control) and the
model-repository API needs the admin key: $TRITON_ADMIN_KEY, else the key file (--admin-key-file,
$TRITON_ADMIN_KEY_FILE, default .triton-admin-key in the project root), else a new random key
written there with mode 0600. The key is never printed; its file is. A supervisor thread reloads any
model whose Python stub dies (--no-supervisor turns it off).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from openai_frontend.process import Frontend, FrontendError
from serving import adminkey
from serving.launcher import ServerError, TritonServer, otlp_trace_args

DEFAULT_REPO = Path(__file__).resolve().parent.parent / "model_repository"


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="python -m serving", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model-repository", type=Path, default=Path(env("MODEL_REPOSITORY", DEFAULT_REPO)))
    p.add_argument("--http-port", type=int, default=int(env("HTTP_PORT", 8000)))
    p.add_argument("--grpc-port", type=int, default=int(env("GRPC_PORT", 8001)))
    p.add_argument("--metrics-port", type=int, default=int(env("METRICS_PORT", 8002)))
    p.add_argument(
        "--host", default=env("TRITON_HOST", "127.0.0.1"), help="address to bind (default 127.0.0.1: local only)"
    )
    p.add_argument("--ready-timeout", type=float, default=300.0, help="seconds to wait for /v2/health/ready")
    p.add_argument("--log-file", type=Path, help="also write the server log here")
    p.add_argument("--quiet", action="store_true", help="do not echo the server log")
    p.add_argument(
        "--admin-key-file",
        type=Path,
        default=env(adminkey.ENV_KEY_FILE),
        help=f"the repository API key's file when ${adminkey.ENV_KEY} is unset (default {adminkey.DEFAULT_KEY_FILE})",
    )
    p.add_argument("--no-supervisor", action="store_true", help="do not reload models whose Python stub dies")
    p.add_argument(
        "--openai-port",
        type=int,
        help="also serve the OpenAI API (python -m openai_frontend) for gpt2_stream on this port (make serve: 9000)",
    )
    p.add_argument("command", nargs=argparse.REMAINDER, help="after --: a command to run once the server is ready")
    return p


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        key = adminkey.resolve(args.admin_key_file)
    except (adminkey.AdminKeyError, OSError) as exc:
        sys.stderr.write(f"error: admin key: {exc}\n")
        return 1
    try:  # $OTLP_ENDPOINT (make serve OTLP_ENDPOINT=...): trace every request to that OTLP/HTTP collector
        tracing = tuple(otlp_trace_args(os.environ.get("OTLP_ENDPOINT", "")))
    except ValueError as exc:
        sys.stderr.write(f"error: OTLP_ENDPOINT: {exc}\n")
        return 1
    server = TritonServer(
        args.model_repository,
        args.http_port,
        args.grpc_port,
        args.metrics_port,
        host=args.host,
        ready_timeout=args.ready_timeout,
        echo=not args.quiet and not command,
        log_file=args.log_file,
        admin_key=key.value,
        supervise=not args.no_supervisor,
        extra_args=tracing,
        other_ports={"OpenAI": args.openai_port},  # checked with Triton's, before it starts
    )
    for signum in (signal.SIGTERM, signal.SIGHUP):  # stop in order, like Ctrl-C
        signal.signal(signum, _terminate)
    try:
        started = time.perf_counter()
        with server, contextlib.ExitStack() as stack:
            sys.stderr.write(
                f"tritonserver ready in {time.perf_counter() - started:.1f}s: "
                f"http {server.http_url}, grpc {server.grpc_url}, metrics :{args.metrics_port}\n"
                f"{key.describe(server.http_url)}\n"
            )
            if args.openai_port:  # stopped before the server (ExitStack unwinds first)
                frontend = stack.enter_context(Frontend(server.grpc_url, args.openai_port, host=args.host))
                sys.stderr.write(f"OpenAI API ready: base URL {frontend.base_url} (model gpt2 -> gpt2_stream)\n")
            if command:
                env = {**os.environ, "TRITON_HTTP_URL": server.http_url, "TRITON_GRPC_URL": server.grpc_url}
                if key.path:  # where the command finds the key; the key itself stays out of the environment
                    env[adminkey.ENV_KEY_FILE] = str(key.path)
                return subprocess.call(command, env=env)
            while server.process.poll() is None:
                time.sleep(0.5)
            raise ServerError(f"tritonserver exited with code {server.process.returncode}:\n{server.log_tail()}")
    except (ServerError, FrontendError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("stopping tritonserver\n")
        return 0


if __name__ == "__main__":
    sys.exit(main())
