"""`make bench`'s batch run: a folder of synthetic 4K frames scored by `python -m clients.clo --batch`,
set against the closed-loop figures of the same entry point (ensemble_jpeg).

The folder holds N JPEG frames: the benchmark's reference frame first (its oil level is known from the
in-process chain, so a wrong answer is caught), then frames the CLO generator renders. The command runs
as a user runs it, at its default concurrency (what the server's configs take), on a server of its own
that answered one request first. Any error row, missing row or wrong reference answer fails the run.
`bench.py` calls `measure` and appends `markdown` to the report.

    python -m loadtests.bench_batch --repository model_repository [--quick]   # on its own
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from clients.batch_table import ResultsTable
from clients.clo import CloClient
from clients.synthetic import synthetic_frame
from loadtests.vision_reference import OIL_ATOL
from serving.launcher import TritonServer, free_ports

ROOT = Path(__file__).resolve().parent.parent
TARGET = 0.9  # batch / best closed-loop throughput: "reaches it within noise"


@dataclass(frozen=True)
class Settings:
    frames: int = 48

    @classmethod
    def quick(cls) -> Settings:
        return cls(frames=4)


def write_frames(folder: Path, count: int, reference_jpeg: bytes) -> list[Path]:
    """`count` JPEG frames in `folder`: the reference first, then synthetic scenes (JPEG quality 90)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "frame_0000.jpg"]
    paths[0].write_bytes(reference_jpeg)
    for i in range(1, count):
        buf = io.BytesIO()
        synthetic_frame(seed=1000 + i).save(buf, "JPEG", quality=90)
        paths.append(folder / f"frame_{i:04d}.jpg")
        paths[-1].write_bytes(buf.getvalue())
    return paths


def measure_with(url: str, settings: Settings, out: Path, reference_jpeg: bytes, reference_oil: float) -> dict:
    """Run the batch command over fresh frames against the server at `url`; its summary and what went wrong."""
    frames = write_frames(out / "frames", settings.frames, reference_jpeg)
    table = out / "results.csv"
    for stale in (table, out / "results.summary.json", out / "results.oil_levels.png"):
        stale.unlink(missing_ok=True)  # a fresh run, not a resumed one
    cmd = [sys.executable, "-m", "clients.clo", "--batch", str(out / "frames"), "--out", str(table), "--url", url]
    with (out / "batch.log").open("w") as log:
        done = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=3600)
    summary = json.loads((out / "results.summary.json").read_text())
    rows = {r.path: r for r in ResultsTable(table).load()}
    problems = [f"{p}: {r.error}" for p, r in rows.items() if not r.ok]
    if len(rows) != len(frames) or set(rows) != {str(p) for p in frames}:
        problems.append(f"{len(rows)} rows for {len(frames)} frames")
    first = rows.get(str(frames[0]))
    if first is not None and first.ok and abs(first.oil_pct - reference_oil) > OIL_ATOL:
        problems.append(f"reference frame: oil {first.oil_pct:.4f} % differs from {reference_oil:.4f} %")
    if done.returncode != 0:
        problems.append(f"the batch command exited {done.returncode} (see {out / 'batch.log'})")
    return {"settings": settings.__dict__, "summary": summary, "errors": len(problems), "problems": problems[:10]}


def measure(repo: Path, settings: Settings, out: Path, reference_jpeg: bytes, reference_oil: float) -> dict:
    """A server of its own on `repo`, one warm-up request, then `measure_with`."""
    out.mkdir(parents=True, exist_ok=True)
    with TritonServer(repo, *free_ports(3), log_file=out / "tritonserver.log", ready_timeout=600) as triton:
        client = CloClient(triton.http_url)
        try:
            client.infer_encoded(reference_jpeg, (3840, 2160))
        finally:
            client.close()
        result = measure_with(triton.http_url, settings, out, reference_jpeg, reference_oil)
    (out / "batch.json").write_text(json.dumps(result, indent=2))
    return result


def bench_step(repo: Path, ref, closed_loop: list[dict], out: Path, quick: bool) -> dict:
    """What `make bench` runs: `measure` with the bench's reference frame (a vision_reference.Reference: its JPEG
    and the in-process `_u8` chain's answer), compared with its closed-loop ensemble_jpeg rows."""
    settings = Settings.quick() if quick else Settings()
    return compare(measure(repo, settings, out, ref.jpeg, float(ref.from_jpeg.oil[0, 0])), closed_loop)


def compare(result: dict, closed_loop: list[dict]) -> dict:
    """Add the best closed-loop throughput of the same entry point (bench's `served["jpeg"]` rows) and the ratio."""
    best = max(closed_loop, key=lambda r: r["throughput_per_s"], default=None)
    result["closed_loop_best"] = best and {k: best[k] for k in ("concurrency", "throughput_per_s", "p50_ms")}
    rate = result["summary"]["images_per_s"]
    result["ratio"] = rate / best["throughput_per_s"] if best and best["throughput_per_s"] else None
    return result


def markdown(result: dict) -> str:
    s, best = result["summary"], result.get("closed_loop_best")
    rows = [
        "## Batch scoring (`python -m clients.clo --batch`, ensemble_jpeg)",
        "",
        f"{s['scored']} JPEG frames (3840x2160) from a folder, {s['concurrency']} requests in flight "
        f"(the command's default: {s['concurrency_source']}), one row each in a CSV table.",
        "",
        "| run | concurrency | images/s | p50 (ms) | p99 (ms) |",
        "|---|---|---|---|---|",
        f"| batch | {s['concurrency']} | {s['images_per_s']:.2f} | {s['p50_ms']:.0f} | {s['p99_ms']:.0f} |",
    ]
    if best:
        rows.append(
            f"| closed loop, best | {best['concurrency']} | {best['throughput_per_s']:.2f} | {best['p50_ms']:.0f} | - |"
        )
    rows += ["", headline(result), f"Error rows or wrong answers: {result['errors']} (expected 0).", ""]
    return "\n".join(rows)


def headline(result: dict) -> str:
    s, ratio = result["summary"], result.get("ratio")
    if ratio is None:
        return f"batch: {s['images_per_s']:.2f} images/s at concurrency {s['concurrency']}"
    verdict = "met" if ratio >= TARGET else "**missed**"
    best = result["closed_loop_best"]
    return (
        f"batch / best closed loop (ensemble_jpeg): {s['images_per_s']:.2f} vs {best['throughput_per_s']:.2f} "
        f"images/s: {ratio:.2f}x (target >= {TARGET:g}x {verdict})"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench_batch", description=__doc__.split("\n\n")[0])
    p.add_argument("--repository", type=Path, required=True, help="a built repository with ensemble_jpeg")
    p.add_argument("--out", type=Path, default=ROOT / "build" / "bench-batch")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    buf = io.BytesIO()
    synthetic_frame(seed=3).save(buf, "JPEG", quality=90)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    settings = Settings.quick() if args.quick else Settings()
    # On its own there is no in-process reference: the reference frame's first served answer stands in.
    with TritonServer(args.repository, *free_ports(3), log_file=out / "tritonserver.log", ready_timeout=600) as t:
        client = CloClient(t.http_url)
        try:
            oil = client.infer_encoded(buf.getvalue(), (3840, 2160)).oil_pct
        finally:
            client.close()
        result = measure_with(t.http_url, settings, out, buf.getvalue(), oil)
    sys.stdout.write(markdown(result))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
