"""The OpenAI frontend's rule: the transformer reaches Triton's gRPC port and keeps its key in a Secret.

The frontend (openai_frontend) streams to gpt2_stream over gRPC, which Knative does not route (one port
per revision), so `--predictor_host` must name a Service of this rendering that selects the predictor's
pods and forwards to the `--grpc-port` Triton listens on.
"""

from __future__ import annotations

from deploy_kserve.objects import Rendered, flag_values

API_KEY_ENV = "TRITONYARD_OPENAI_API_KEY"  # what openai_frontend/__main__.py reads
PREDICTOR_LABELS = ("serving.kserve.io/inferenceservice", "component")


def _arg(args: list[str], flag: str) -> str | None:
    """`--flag value` or `--flag=value`, the last one given."""
    found = [args[i + 1] for i, a in enumerate(args[:-1]) if a == flag] + flag_values(args, flag)
    return found[-1] if found else None


def _service_problems(r: Rendered, host: str, port: str) -> list[str]:
    name = host.split(".")[0]
    service = r.named("Service", name)
    if service is None:
        return [f"--predictor_host {host}:{port} names no Service in this rendering"]
    spec = service.get("spec", {})
    problems = []
    want = {PREDICTOR_LABELS[0]: r.isvc["metadata"]["name"], PREDICTOR_LABELS[1]: "predictor"}
    if any(spec.get("selector", {}).get(k) != v for k, v in want.items()):
        problems.append(f"Service {name} must select the predictor's pods: {want}")
    grpc_ports = flag_values(r.container().get("args", []), "--grpc-port") or ["8001"]
    match = [p for p in spec.get("ports", []) if str(p.get("port")) == port]
    if not match or str(match[0].get("targetPort", match[0].get("port"))) != grpc_ports[-1]:
        problems.append(f"Service {name} port {port} must forward to Triton's --grpc-port {grpc_ports[-1]}")
    return problems


def _key_problems(r: Rendered, container: dict) -> list[str]:
    env = next((e for e in container.get("env", []) if e.get("name") == API_KEY_ENV), None)
    if env is None:
        return []  # no key configured: no auth, allowed (the issue makes the key optional)
    ref = env.get("valueFrom", {}).get("secretKeyRef")
    if not ref:
        return [f"{API_KEY_ENV} must come from a Secret (secretKeyRef), never a literal value"]
    secret = r.named("Secret", ref.get("name"))
    if secret is None:
        return [f"{API_KEY_ENV}'s Secret {ref.get('name')!r} is not in this rendering"]
    if secret.get("data") or secret.get("stringData"):
        return [f"Secret {ref.get('name')} must carry no key in git: patch it in the cluster"]
    return []


def rule_openai_transformer(r: Rendered, device: str) -> list[str]:
    """The transformer runs the OpenAI frontend against Triton's gRPC port; its API key is a Secret's."""
    containers = r.isvc.get("spec", {}).get("transformer", {}).get("containers") or []
    if not containers:
        return ["the InferenceService has no transformer (the OpenAI frontend, openai_frontend)"]
    container = containers[0]
    args = [str(a) for a in container.get("args", [])]
    target = _arg(args, "--predictor_host") or ""
    host, _, port = target.rpartition(":")
    problems = [] if host and port.isdigit() else [f"--predictor_host must be <service>:<grpc port>, got {target!r}"]
    if not problems:
        problems += _service_problems(r, host, port)
    probe = container.get("readinessProbe", {}).get("httpGet", {})
    if probe.get("path") != "/health/ready":
        problems.append("the transformer's readinessProbe must GET /health/ready (gpt2_stream ready in Triton)")
    return problems + _key_problems(r, container)
