"""An OpenAI-compatible API for the served GPT-2, in front of Triton's decoupled `gpt2_stream`.

    python -m openai_frontend --triton-url 127.0.0.1:8001 --port 9000   # base URL http://localhost:9000/v1

Endpoints: `GET /v1/models`, `POST /v1/completions`, `POST /v1/chat/completions` (SSE streaming with
`stream: true`), plus `GET /health` and `GET /health/ready` (Triton's gpt2_stream is ready) for probes.

Built on FastAPI and uvicorn. KServe's own OpenAI data plane (`kserve.protocol.rest.openai`) was the
first choice, but kserve 0.21 imports its request and response types from vLLM, and vLLM 0.24 pins
torch==2.11.0 while this project pins the torch==2.13.0 CPU wheel (constraints.txt): pip cannot
resolve both. This server takes the same arguments KServe hands a transformer (`--model_name`,
`--predictor_host`, `--http_port`), so it runs as the InferenceService's transformer all the same.

Modules: `protocol` (request models, refusals, response bodies), `errors` (OpenAI's error object),
`chat_template` (the replaceable chat template), `triton` (the gRPC streaming bridge; it imports only
tritonclient, the project's client library and the contract), `app` (the routes), `__main__` (the CLI).
"""
