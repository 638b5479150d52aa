"""`python -m openai_frontend`: serve the OpenAI API for Triton's gpt2_stream with uvicorn.

    python -m openai_frontend --triton-url 127.0.0.1:8001 --port 9000

The API key (optional): $TRITONYARD_OPENAI_API_KEY, else the file --api-key-file names (its first
line). With a key, every /v1 request needs `Authorization: Bearer <key>`; /health and /health/ready
stay open for probes. KServe starts a transformer with `--model_name NAME --predictor_host HOST
--http_port PORT`; those work too (the predictor host gets Triton's gRPC port 8001 unless it has one).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

API_KEY_ENV = "TRITONYARD_OPENAI_API_KEY"
TRITON_GRPC_PORT = 8001


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="python -m openai_frontend", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--host", default=env("OPENAI_HOST", "127.0.0.1"), help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", "--http_port", type=int, default=int(env("OPENAI_PORT", 9000)))
    p.add_argument(
        "--triton-url",
        "--predictor_host",
        default=env("TRITON_GRPC_URL", f"127.0.0.1:{TRITON_GRPC_PORT}"),
        help="Triton's gRPC address host:port",
    )
    p.add_argument("--triton-model", default="gpt2_stream", help="the decoupled generation model")
    p.add_argument("--served-model-name", "--model_name", default=env("OPENAI_MODEL_NAME", "gpt2"))
    p.add_argument("--api-key-file", type=Path, default=env("TRITONYARD_OPENAI_API_KEY_FILE"))
    p.add_argument("--chat-template", type=Path, help="a Jinja chat template file (default: chat_template.py's)")
    p.add_argument("--chat-stop", action="append", default=[], help="stop string of chat requests (repeatable)")
    p.add_argument("--log-level", default="info")
    return p


def _api_key(path: Path | None) -> str | None:
    key = os.environ.get(API_KEY_ENV)
    if not key and path:
        key = path.read_text().splitlines()[0] if path.read_text().strip() else None
    return key.strip() if key else None


def main(argv: list[str] | None = None) -> int:
    args, unknown = _parser().parse_known_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    if unknown:  # KServe may add flags of its own (--predictor_protocol, ...)
        logging.getLogger("openai_frontend").info("ignoring arguments %s", unknown)
    import uvicorn

    from openai_frontend.app import Settings, create_app
    from openai_frontend.chat_template import ChatTemplate, TemplateError

    try:
        template = ChatTemplate.from_file(args.chat_template, tuple(args.chat_stop))
        key = _api_key(args.api_key_file)
    except (OSError, TemplateError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    url = args.triton_url if ":" in args.triton_url else f"{args.triton_url}:{TRITON_GRPC_PORT}"
    settings = Settings(url, args.triton_model, args.served_model_name, key, template)
    sys.stderr.write(
        f"OpenAI API for {url} ({args.triton_model}) at http://{args.host}:{args.port}/v1, "
        f"model {args.served_model_name!r}, API key {'required' if key else 'off'}\n"
    )
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
