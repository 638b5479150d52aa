"""What a batch run reports: counts, throughput, latency percentiles, errors, the oil-level histogram;
and the optional annotated images (the first K, or those under a level).

Beside the results table `results.csv` it writes `results.summary.json` and `results.oil_levels.png`
(the histogram needs matplotlib; without it the summary says so and goes on).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clients.batch_table import Row
from clients.lib import images

SHOWN_ERRORS = 10  # error rows printed in the summary; the table holds them all


def artifacts(out: Path) -> dict[str, Path]:
    """The files a run writes beside its results table."""
    stem = out.with_suffix("")
    return {"summary": Path(f"{stem}.summary.json"), "histogram": Path(f"{stem}.oil_levels.png")}


def _ms(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


@dataclass
class Summary:
    """Counts and timings of one run (this run's rows) and of the whole table (earlier runs included)."""

    source: Path
    out: Path
    entry: str
    found: int
    skipped: int
    todo: int = 0
    concurrency: int = 0
    concurrency_source: str = ""
    start: float | None = None
    end: float | None = None
    scored: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    failures: list[Row] = field(default_factory=list)
    rows_total: int = 0
    errors_total: int = 0
    oil_levels: list[float] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.scored += 1
        self.end = time.perf_counter()
        if row.ok:
            self.latencies_ms.append(row.latency_ms)
        else:
            self.errors += 1
            self.failures.append(row)

    @property
    def wall_s(self) -> float:
        return (self.end - self.start) if self.start is not None and self.end is not None else 0.0

    @property
    def images_per_s(self) -> float:
        return self.scored / self.wall_s if self.wall_s > 0 else 0.0

    def as_dict(self, files: dict[str, Path]) -> dict:
        return {
            "source": str(self.source),
            "results": str(self.out),
            "entry": self.entry,
            "concurrency": self.concurrency,
            "concurrency_source": self.concurrency_source,
            "found": self.found,
            "skipped": self.skipped,
            "todo": self.todo,
            "scored": self.scored,
            "errors": self.errors,
            "wall_s": round(self.wall_s, 3),
            "images_per_s": round(self.images_per_s, 3),
            "p50_ms": _ms(self.latencies_ms, 50),
            "p99_ms": _ms(self.latencies_ms, 99),
            "rows_total": self.rows_total,
            "errors_total": self.errors_total,
            "oil_pct_median": _ms(self.oil_levels, 50),
            "histogram": str(files["histogram"]) if files["histogram"].exists() else None,
        }

    def finish(self, rows: list[Row], files: dict[str, Path]) -> dict:
        """Totals over the whole table, the histogram and the JSON summary written, the text printed."""
        self.rows_total = len(rows)
        self.errors_total = sum(not r.ok for r in rows)
        self.oil_levels = [r.oil_pct for r in rows if r.ok and r.oil_pct is not None]
        note = histogram(self.oil_levels, files["histogram"]) if self.oil_levels else "no histogram: no scored rows"
        result = self.as_dict(files)
        files["summary"].parent.mkdir(parents=True, exist_ok=True)
        files["summary"].write_text(json.dumps(result, indent=2) + "\n")
        sys.stdout.write("\n".join([*self.lines(result), note, f"summary: {files['summary']}"]) + "\n")
        sys.stdout.flush()
        return result

    def lines(self, s: dict) -> list[str]:
        why = f": {self.concurrency_source}" if self.concurrency_source else ""
        how = f" ({s['entry']}, {s['concurrency']} in flight{why})" if s["todo"] else ""
        lines = [
            f"batch: {s['found']} file(s) in {s['source']}, {s['skipped']} already in {s['results']}, "
            f"{s['todo']} to score{how}"
        ]
        if s["scored"]:
            answered = len(self.latencies_ms)
            latency = f"latency p50 {s['p50_ms']:.0f} ms, p99 {s['p99_ms']:.0f} ms" if answered else "no answers"
            lines.append(
                f"scored {s['scored']} in {s['wall_s']:.1f} s: {s['images_per_s']:.2f} images/s; {latency} "
                f"({answered} answered)"
            )
        if s["scored"] < s["todo"]:
            lines.append(f"stopped early: {s['todo'] - s['scored']} not scored; run the same command to resume")
        lines.append(f"errors: {s['errors']}" + (" (rows with an error in the table)" if s["errors"] else ""))
        for row in self.failures[:SHOWN_ERRORS]:
            lines.append(f"  {row.path}: {row.error}")
        if len(self.failures) > SHOWN_ERRORS:
            lines.append(f"  ... and {len(self.failures) - SHOWN_ERRORS} more")
        median = "" if s["oil_pct_median"] is None else f"; oil level median {s['oil_pct_median']:.1f} %"
        lines.append(
            f"{s['results']}: {s['rows_total']} row(s), {s['rows_total'] - s['errors_total']} scored, "
            f"{s['errors_total']} with an error{median}"
        )
        return lines


def histogram(levels: list[float], path: Path) -> str:
    """Save a histogram of the oil levels to `path`; the line the summary prints about it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no histogram: matplotlib is not installed (pip install matplotlib)"
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.hist(levels, bins=np.arange(0, 105, 5), color="#3b7dd8", edgecolor="white")
    ax.set_xlabel("estimated oil level (%)")
    ax.set_ylabel("images")
    ax.set_title(f"oil levels of {len(levels)} scored image(s)")
    ax.set_xlim(0, 100)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return f"histogram of oil levels: {path}"


class Annotator:
    """Saves the source image with its boxes and crop (clients.clo.save_visual) for the first `first` scored
    images, and for every one whose oil level is below `below`."""

    def __init__(self, folder: Path, first: int, below: float | None) -> None:
        self.folder, self.first, self.below = Path(folder), first, below
        self.saved = 0
        self.lock = threading.Lock()
        self.folder.mkdir(parents=True, exist_ok=True)

    def wanted(self, row: Row) -> bool:
        with self.lock:
            if self.saved < self.first or (self.below is not None and row.oil_pct < self.below):
                self.saved += 1
                return True
            return False

    def maybe_save(self, row: Row, result, data: bytes) -> None:
        if not self.wanted(row):
            return
        from clients.clo import save_visual

        name = row.path.lstrip("/").replace("..", "_").replace("/", "__") + ".png"
        try:
            save_visual(self.folder / name, images.decode(data), result)
        except (OSError, images.ImageError) as exc:
            sys.stderr.write(f"warning: could not annotate {row.path}: {exc}\n")
