"""First request after a load against steady state, per entry point (part of `make bench`).

    python -m loadtests.bench_warmup --repository build/bench/repository     # about 3 minutes on 2 cores
    python -m loadtests.bench_warmup --repository R --quick                   # every path, a few seconds each

For each entry point a fresh tritonserver loads only what that entry needs (explicit model control: the ensemble,
which loads its steps, or gpt2 with gpt2_stream), so nothing warmed it but the configs' own `model_warmup`. Once
the server is ready, the first request is timed, then `steady` more of the same; the figure is first / median of
the steady ones (target at most 1.2x). With --cold (the full run) the same is measured on a copy of the repository
whose configs have no `model_warmup`, so the table shows what the warmup buys. The client connects before the first
request (a metadata call), so the figure is the server's first request, not the client's. Every response is
checked; a wrong one fails the run. Figures are printed and returned, never asserted.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from google.protobuf import text_format

from builders.triton_config import read_config
from clients.lib import images, payloads
from clients.lib.checks import ResponseError, check_vision_outputs
from clients.lib.shm import SharedRegion
from serving.launcher import TritonServer, free_ports
from tritonyard_contract import GENERATE_OUTPUTS, PIPELINE_OUTPUTS

TARGET_RATIO = 1.2
PROMPT = "Now is the winter of our discontent"
NEW_TOKENS = 16
# Entry point -> the models its server loads (an ensemble loads its own steps).
ENTRIES = {
    "ensemble": ("ensemble",),
    "ensemble_jpeg": ("ensemble_jpeg",),
    "gpt2": ("gpt2_stream", "gpt2"),
    "gpt2_stream": ("gpt2_stream",),
}


@dataclass(frozen=True)
class Settings:
    steady: int = 10  # requests after the first one
    cold: bool = True  # also measure the repository without model_warmup

    @classmethod
    def quick(cls) -> Settings:
        return cls(steady=2, cold=False)


@dataclass(frozen=True)
class Inputs:
    """What every entry point gets: a synthetic 4K camera frame (FP32 for `ensemble`), its JPEG, and a prompt."""

    frame: np.ndarray  # [1, 3, 2160, 3840] FP32
    jpeg: bytes

    @classmethod
    def make(cls) -> Inputs:
        from clients.synthetic import synthetic_frame

        buf = io.BytesIO()
        synthetic_frame(seed=3).save(buf, "JPEG", quality=90)
        frame = images.to_frame(images.decode(buf.getvalue()))[np.newaxis].astype(np.float32)
        return cls(np.ascontiguousarray(frame), buf.getvalue())


Request = Callable[[], None]  # one checked request; raises on a wrong or failed answer


def _vision(result) -> None:
    check_vision_outputs({t.name: result.as_numpy(t.name) for t in PIPELINE_OUTPUTS})


def _generated(answer: dict, where: str) -> None:
    if answer["num_output_tokens"] < 1 or not answer["text_output"]:
        raise ResponseError(f"{where}: no text generated: {answer}")


def _requester(entry: str, server: TritonServer, inputs: Inputs, closing: list) -> Request:
    """A function sending `entry` one checked request; the connection (and any shm region) is set up here."""
    if entry in ("ensemble", "ensemble_jpeg"):
        import tritonclient.http as api

        client = api.InferenceServerClient(server.http_url, network_timeout=300, connection_timeout=300)
        client.get_model_metadata(entry)
        closing.append(client)
        outputs = payloads.outputs(api)
        if entry == "ensemble_jpeg":
            request = [payloads.image_input(api, inputs.jpeg)]
            return lambda: _vision(client.infer(entry, request, outputs=outputs))
        region = SharedRegion(client, inputs.frame.nbytes, prefix="warmup_bench")
        closing.insert(0, region)
        region.write(inputs.frame)
        request = [payloads.shm_frame_input(api, region.name, inputs.frame.nbytes, inputs.frame.shape)]
        return lambda: _vision(client.infer(entry, request, outputs=outputs))
    import tritonclient.grpc as api

    client = api.InferenceServerClient(server.grpc_url)
    client.get_model_metadata(entry)
    closing.append(client)
    if entry == "gpt2":
        request = payloads.generate_inputs(api, PROMPT, {"max_tokens": NEW_TOKENS})
        outputs = payloads.outputs(api, GENERATE_OUTPUTS)
        return lambda: _generated(_fields(client.infer(entry, request, outputs=outputs)), entry)
    return lambda: _stream(client, api, entry)


def _fields(result) -> dict:
    return {name: payloads.first(result, name) for name in ("text_output", "num_output_tokens")}


def _stream(client, api, entry: str) -> None:
    """One streamed generation over gRPC, to its final response."""
    import queue

    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result=None, error=None: answers.put((result, error)))
    try:
        client.async_stream_infer(entry, payloads.generate_inputs(api, PROMPT, {"max_tokens": NEW_TOKENS}))
        text, tokens = [], 0
        while True:
            result, error = answers.get(timeout=300)
            if error is not None:
                raise ResponseError(f"{entry}: {error}")
            text.append(payloads.first(result, "text_output"))
            tokens = payloads.first(result, "num_output_tokens")
            if payloads.first(result, "finish_reason"):
                break
    finally:
        client.stop_stream()
    _generated({"text_output": "".join(text), "num_output_tokens": tokens}, entry)


def _timed(request: Request) -> float:
    started = time.perf_counter()
    request()
    return time.perf_counter() - started


def measure_entry(repo: Path, entry: str, inputs: Inputs, settings: Settings, log: Path) -> dict:
    """Load `entry` on a fresh server, time its first request, then `settings.steady` more."""
    loads = tuple(f"--load-model={m}" for m in ENTRIES[entry])
    args = ("--model-control-mode=explicit", *loads)
    started = time.perf_counter()
    with TritonServer(repo, *free_ports(3), extra_args=args, log_file=log, ready_timeout=600) as server:
        ready_s = time.perf_counter() - started
        closing: list = []
        try:
            request = _requester(entry, server, inputs, closing)
            first = _timed(request) * 1000
            steady = [_timed(request) * 1000 for _ in range(settings.steady)]
        finally:
            for thing in closing:
                thing.close()
    median = statistics.median(steady)
    sys.stderr.write(
        f"bench: first request {entry:<14} {first:8.1f} ms, steady median {median:8.1f} ms "
        f"({first / median:.2f}x), server ready in {ready_s:.1f} s\n"
    )
    return {
        "first_ms": first,
        "steady_ms": median,
        "ratio": first / median,
        "ready_s": ready_s,
        "steady_all_ms": steady,
    }


def without_warmup(repo: Path, dest: Path) -> Path:
    """A copy of `repo` whose configs have no model_warmup (version folders linked, not copied)."""
    shutil.rmtree(dest, ignore_errors=True)
    for config_path in sorted(repo.glob("*/config.pbtxt")):
        model = config_path.parent
        (dest / model.name).mkdir(parents=True)
        for version in (p for p in model.iterdir() if p.is_dir() and p.name.isdigit()):
            (dest / model.name / version.name).symlink_to(version.resolve(), target_is_directory=True)
        config = read_config(config_path)
        del config.model_warmup[:]
        (dest / model.name / "config.pbtxt").write_text(text_format.MessageToString(config))
    return dest


def measure(repo: Path, out: Path, quick: bool = False, settings: Settings | None = None) -> dict:
    """Every entry point the repository serves, warmed, under "entries" (and without warmup under "cold"):
    {entry: {"first_ms", "steady_ms" (the median), "ratio", "ready_s", "steady_all_ms"}}."""
    settings = settings or (Settings.quick() if quick else Settings())
    out.mkdir(parents=True, exist_ok=True)
    inputs = Inputs.make()
    served = [e for e in ENTRIES if all((repo / m / "config.pbtxt").is_file() for m in ENTRIES[e])]
    result: dict = {"target_ratio": TARGET_RATIO, "steady_requests": settings.steady, "entries": {}, "cold": {}}
    for entry in served:
        result["entries"][entry] = measure_entry(repo, entry, inputs, settings, out / f"warm_{entry}.log")
    if settings.cold:
        cold = without_warmup(repo, out / "repository_without_warmup")
        for entry in served:
            result["cold"][entry] = measure_entry(cold, entry, inputs, settings, out / f"cold_{entry}.log")
        shutil.rmtree(cold, ignore_errors=True)
    return result


def markdown(result: dict) -> str:
    """The report section: first request after a load / steady state, per entry point."""
    lines = [
        "## First request after a load (model warmup)",
        "",
        f"A fresh server per entry point; first request vs the median of {result['steady_requests']} more "
        f"(target at most {result['target_ratio']:g}x). `cold`: the same repository without `model_warmup`.",
        "",
        "| entry point | first (ms) | steady median (ms) | first / steady | target | ready after (s) "
        "| cold: first / steady |",
        "|---|---|---|---|---|---|---|",
    ]
    for entry, r in result["entries"].items():
        cold = result["cold"].get(entry)
        verdict = "met" if r["ratio"] <= result["target_ratio"] else "**missed**"
        cold_text = f"{cold['first_ms']:.0f} / {cold['steady_ms']:.0f} ms: {cold['ratio']:.2f}x" if cold else "-"
        lines.append(
            f"| `{entry}` | {r['first_ms']:.0f} | {r['steady_ms']:.0f} | **{r['ratio']:.2f}x** | {verdict} "
            f"| {r['ready_s']:.1f} | {cold_text} |"
        )
    return "\n".join(lines) + "\n"


def headline(result: dict) -> str:
    """One line per entry point for the bench's stdout."""
    parts = [f"{e} {r['first_ms']:.0f}/{r['steady_ms']:.0f} ms {r['ratio']:.2f}x" for e, r in result["entries"].items()]
    return f"first request after a load / steady (target <= {result['target_ratio']:g}x): " + ", ".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.bench_warmup",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--repository", type=Path, required=True, help="a built repository (make build, or bench's)")
    p.add_argument("--out", type=Path, default=Path("build/bench-warmup"), help="server logs and results.json")
    p.add_argument("--quick", action="store_true", help="2 steady requests, no cold comparison")
    args = p.parse_args(argv)
    result = measure(args.repository.resolve(), args.out.resolve(), quick=args.quick)
    (args.out / "results.json").write_text(json.dumps(result, indent=2))
    sys.stdout.write(markdown(result) + "\n" + headline(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
