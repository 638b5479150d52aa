"""Words on the wire that are not tensors: capacity refusals and the admin key's headers.

Read by the server side (gpt2_generate's refusal, the launcher's flags, the stub supervisor) and the
client side (retries, the readiness probe), so both always agree.
"""

from __future__ import annotations

# --- capacity refusals: the request never ran, so it is safe to retry ---
# tritonclient's `status()` for UNAVAILABLE: HTTP /infer answers 503, gRPC StatusCode.UNAVAILABLE.
UNAVAILABLE_STATUSES = frozenset({"503", "StatusCode.UNAVAILABLE"})
OVERLOADED = "overloaded"  # gpt2_generate's word when its pending limit is reached
# A gRPC stream and `/generate` (HTTP 400) report a refusal only in words, so match the server's:
# Triton's queue full / queue timeout, and gpt2_generate's pending limit.
CAPACITY_MESSAGES = ("Exceeds maximum queue size", "Request timeout expired", OVERLOADED)


def is_capacity_refusal(message: str) -> bool:
    """Whether an error message is a refusal for lack of capacity (as opposed to a broken model or request)."""
    return any(m in (message or "") for m in CAPACITY_MESSAGES)


def overloaded_message(model: str, max_pending: int) -> str:
    """gpt2_generate's UNAVAILABLE text when `max_pending` requests already wait."""
    return f"{model}: {OVERLOADED}, {max_pending} requests already wait for a generation slot; retry later"


# --- gpt2 -> gpt2_stream over BLS ---
ENTRY_PARAMETER = "entry_model"  # request parameter naming the model a BLS request came through (gpt2)
FORWARD_PARAMETER = "forward_id"  # gpt2's id for one forward, unique per request
# A request carrying this parameter (a forward's id) is no generation: it cancels that forward. Triton 2.51's BLS
# cannot cancel a request it sent (its response iterator has no cancel()), so gpt2 sends one when its client goes away.
CANCEL_PARAMETER = "cancel_forward_id"
# Triton 2.51 gives every error a BLS caller receives the code INTERNAL, whatever the callee sent
# (triton-inference-server/server#7804). So gpt2_stream puts the code's name in front of a refusal it sends to
# a BLS caller, and gpt2 takes it off and answers with that code: a bad input stays 400 through gpt2.
_CODE_TAG = "[code "


def tag_error_code(code_name: str, message: str) -> str:
    """`message` carrying `code_name` (pb_utils.TritonError's attribute name, e.g. INVALID_ARG) for a BLS caller."""
    return f"{_CODE_TAG}{code_name}] {message}"


def untag_error_code(message: str) -> tuple[str | None, str]:
    """(code name or None, the message without the tag): the inverse of `tag_error_code`."""
    if not message.startswith(_CODE_TAG) or "] " not in message:
        return None, message
    head, rest = message[len(_CODE_TAG) :].split("] ", 1)
    return (head, rest) if head.isidentifier() else (None, message)


# --- the admin key that guards Triton's model-repository API ---
ADMIN_KEY_ENV = "TRITON_ADMIN_KEY"
ADMIN_KEY_FILE_ENV = "TRITON_ADMIN_KEY_FILE"
ADMIN_HTTP_HEADER = "admin-key"
ADMIN_GRPC_HEADER = "triton-grpc-protocol-admin-key"  # gRPC metadata as Triton names it for the same key
ADMIN_MIN_LENGTH = 32  # the KServe image's entrypoint refuses shorter keys too
# Only the repository API (load, unload, index): loading a model runs its model.py, i.e. arbitrary code.
RESTRICTED_API = "model-repository"
