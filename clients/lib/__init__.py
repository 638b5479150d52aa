"""The one client library: every program that talks to the served models builds on it.

- `payloads`: request tensors for tritonclient (frames, image bytes, generation inputs, requested outputs);
- `images`: the contract's image decoding (the server's, without its caps) and the FP32 frame for `ensemble`;
- `shm`: a system shared-memory region whose every failure path unregisters and frees it;
- `checks`: output checks of a pipeline answer (shapes, finiteness, ranges) and of a generation;
- `timing`: one definition of TTFT, inter-token latency and tokens/s;
- `sse`: reading `/generate_stream` server-sent events;
- `retry`: retrying capacity refusals (UNAVAILABLE) with jittered backoff;
- `errors`: failures a person can act on, one line each (no server, no model, refused, timed out);
- `cli`: what the command-line clients share (headers, addresses, the error line and exit code).

Imports go one way: clients -> clients.lib -> tritonyard_contract; never builders or python_backends.
`checks`, `timing`, `sse` and `errors` need only the standard library and numpy (the readiness probe uses
them inside the KServe image); tritonclient is imported where a request is built or sent.
"""
