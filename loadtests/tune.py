"""`make tune`: choose the cpu target's per-model threads and instance counts by measuring them.

    python -m loadtests.tune            # about 5 minutes on 2 CPU cores
    python -m loadtests.tune --quick    # every path for a few seconds (one request per client)

Our own sweep (not Model Analyzer: its perf_analyzer drives one model at a time, while what matters here
is how the steps of a pipeline share 2 cores). The vision models are exported once by the builder; each
candidate is a set of builder flags (`--threads`, `--instances`, `--batching`) whose configs the builder's
own code renders over those model.onnx files. Each candidate is served and driven at concurrency 1 and 4
through every entry point, every answer checked against the in-process reference. The score is the
geometric mean of the concurrency-4 throughputs; a candidate whose concurrency-4 throughput falls below
its concurrency-1 throughput on some entry loses 10 % per such entry. The winner's flags go to
loadtests/tuning/cpu.args (one flag per line: `python -m builders all @loadtests/tuning/cpu.args`, and
`make bench` builds with it), every figure to loadtests/tuning/cpu.json (the report's levers table).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

from loadtests import bench_vision as bv
from serving.launcher import TritonServer, free_ports

ROOT = Path(__file__).resolve().parent.parent
TUNING = ROOT / "loadtests" / "tuning"
NETS = "yolov8", "efficientnet_v2"
FRAME_STEPS = "preprocessing", "postprocessing", "preprocessing_u8", "postprocessing_u8"
CANDIDATES = (  # (name, builder flags); the first is the builder's defaults
    ("defaults", []),
    ("1 thread each", ["--cpu-threads", "1"]),
    ("2 threads each", ["--threads", ",".join(f"{s}=2" for s in FRAME_STEPS)]),
    ("1 thread, 2 instances of each net", ["--cpu-threads", "1", "--instances", ",".join(f"{n}=2" for n in NETS)]),
    ("2 decoder instances", ["--instances", "image_decoder=2"]),
    ("nets unbatched", ["--batching", ",".join(f"{n}=off" for n in NETS)]),
)
ENTRIES = ("shm", "http_binary", "jpeg")
CONCURRENCY = (1, 4)
FALL_PENALTY = 0.9


def render(base: Path, dest: Path, flags: list[str]) -> None:
    """`base`'s vision models with the configs `python -m builders vision FLAGS` writes (the builder's code)."""
    from builders import __main__ as cli
    from builders import repository, vision

    cfg = cli.vision_config(flags)
    shutil.rmtree(dest, ignore_errors=True)
    # model.onnx files are shared by hard link (read only); configs and sources are copied and rewritten.
    link = lambda src, dst: os.link(src, dst) if Path(src).name == "model.onnx" else shutil.copy2(src, dst)  # noqa: E731
    for spec in vision.specs(cfg):
        shutil.copytree(base / spec.name, dest / spec.name, copy_function=link)
    for spec in vision.specs(cfg):
        repository.add_model(dest, spec, cfg.target)
        repository.check_config(dest, spec.name)


def measure(repo: Path, ref: bv.Reference, per_worker: int, log: Path) -> dict[str, dict[str, float]]:
    """frames/s per entry point and concurrency; any failed or wrong answer aborts the sweep."""
    figures: dict[str, dict[str, float]] = {}
    with TritonServer(repo, *free_ports(3), log_file=log, ready_timeout=600) as server:
        url = server.http_url
        senders = {
            "shm": lambda: bv.shm_sender(url, ref),
            "http_binary": lambda: bv.http_sender(url, ref, binary=True),
            "jpeg": lambda: bv.jpeg_sender(url, ref),
        }
        for entry in ENTRIES:
            for c in CONCURRENCY:
                run = bv.closed_loop(f"{entry} c={c}", senders[entry], c, requests=per_worker * c)
                if run.errors:
                    raise RuntimeError(f"{repo.name} {entry} c={c}: {run.errors} failed: {run.first_error}")
                figures.setdefault(entry, {})[str(c)] = round(run.throughput, 3)
                sys.stderr.write(f"tune: {repo.name:<36} {entry:<12} c={c} {run.throughput:6.2f} frames/s\n")
    return figures


def score(figures: dict[str, dict[str, float]]) -> float:
    """Geometric mean of the concurrency-4 throughputs, 10 % off per entry that falls from c=1 to c=4."""
    top = str(CONCURRENCY[-1])
    mean = math.exp(sum(math.log(f[top]) for f in figures.values()) / len(figures))
    falls = sum(f[top] < f[str(CONCURRENCY[0])] for f in figures.values())
    return mean * FALL_PENALTY**falls


def run(base: Path | None, per_worker: int, out: Path, work: Path) -> dict:
    from loadtests.bench import reference

    work.mkdir(parents=True, exist_ok=True)
    if base is None:
        base = work / "base"
        subprocess.run([sys.executable, "-m", "builders", "vision", "--out", str(base)], check=True, cwd=ROOT)
    ref, _ = reference(base)
    candidates = []
    for name, flags in CANDIDATES:
        repo = work / name.replace(" ", "-").replace(",", "")
        render(base, repo, flags)
        figures = measure(repo, ref, per_worker, work / f"{repo.name}.log")
        candidates.append({"name": name, "args": flags, "throughput": figures, "score": round(score(figures), 3)})
    chosen = max(candidates, key=lambda c: c["score"])
    result = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "per_worker": per_worker,
        "entries": list(ENTRIES),
        "concurrency": list(CONCURRENCY),
        "candidates": candidates,
        "chosen": {"name": chosen["name"], "args": chosen["args"]},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "cpu.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "cpu.args").write_text("".join(f"{a}\n" for a in chosen["args"]))
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.tune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="one request per client: every path, figures meaningless")
    p.add_argument("--repository", type=Path, help="an already built vision repository to take model.onnx from")
    p.add_argument("--requests", type=int, default=4, help="measured requests per client (default 4)")
    p.add_argument("--out", type=Path, help="where cpu.args and cpu.json go (default loadtests/tuning; quick: build)")
    args = p.parse_args(argv)
    out = args.out or (ROOT / "build" / "tune-quick" if args.quick else TUNING)
    result = run(args.repository, 1 if args.quick else args.requests, out.resolve(), ROOT / "build" / "tune")
    for cand in result["candidates"]:
        sys.stdout.write(f"{cand['score']:6.2f}  {cand['name']:<36} {' '.join(cand['args'])}\n")
    sys.stdout.write(f"chosen: {result['chosen']['name']} -> {out / 'cpu.args'}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
