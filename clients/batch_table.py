"""The results table of a batch run: one row per image, appended as each completes, read back to resume.

Formats by suffix: `.csv` and `.jsonl` are appended row by row and flushed, so a killed run keeps every
row it finished (a torn last line is cut off when the table is read back). `.parquet` cannot be
appended to: rows go to a journal beside it (`<name>.partial.jsonl`) and are merged into the Parquet
file when the run ends; a run that was killed first finds its journal and merges it next time.
Parquet needs polars (a dev dependency of this project); CSV and JSONL need only the standard library.

Columns: path, width, height (the source image; empty when it could not be read), detections (JSON
list of [x1, y1, x2, y2, score, class] in source pixels), n_detections, best_score, oil_pct,
latency_ms, error (empty when the image was scored).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMATS = (".csv", ".jsonl", ".parquet")
COLUMNS = ("path", "width", "height", "detections", "n_detections", "best_score", "oil_pct", "latency_ms", "error")
INTS, FLOATS = ("width", "height", "n_detections"), ("best_score", "oil_pct", "latency_ms")


def f32(value: float) -> float:
    """A float32 output as the shortest decimal that reads back to the same float32 (0.671, not 0.67100000381)."""
    return float(str(np.float32(value)))


@dataclass
class Row:
    """One image's outcome: its answer, or why it has none (`error`)."""

    path: str
    width: int | None = None
    height: int | None = None
    detections: list[list[float]] = field(default_factory=list)  # source pixels: x1, y1, x2, y2, score, class
    oil_pct: float | None = None
    latency_ms: float | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def best_score(self) -> float | None:
        return max((d[4] for d in self.detections), default=None)

    @classmethod
    def scored(cls, path: str, size: tuple[int, int], boxes: np.ndarray, oil_pct: float, latency_s: float) -> Row:
        detections = [[f32(v) for v in box[:5]] + [int(box[5])] for box in boxes]
        return cls(path, *size, detections, f32(oil_pct), round(latency_s * 1000, 1))

    def record(self, detections_as_json: bool = True) -> dict:
        """The row as a flat dict of COLUMNS; `detections` as JSON text (CSV, Parquet) or a list (JSONL)."""
        values = {name: getattr(self, name) for name in ("path", "width", "height", "oil_pct", "latency_ms", "error")}
        values["detections"] = json.dumps(self.detections) if detections_as_json else self.detections
        values["n_detections"] = len(self.detections) if self.ok else None
        values["best_score"] = self.best_score
        return {name: values[name] for name in COLUMNS}

    @classmethod
    def from_record(cls, rec: dict) -> Row:
        """The inverse of `record`, from any format (CSV gives every value as text, empty for None)."""

        def value(name: str, kind: type):
            raw = rec.get(name)
            return None if raw is None or raw == "" else kind(raw)

        dets = rec.get("detections") or []
        if isinstance(dets, str):
            dets = json.loads(dets)
        return cls(
            str(rec["path"]),
            value("width", int),
            value("height", int),
            [list(d) for d in dets],
            value("oil_pct", float),
            value("latency_ms", float),
            str(rec.get("error") or ""),
        )


class TableError(ValueError):
    """The results file cannot be used (unknown suffix, unreadable, not a table of this tool)."""


class ResultsTable:
    """The results file at `path`: `load` what is there, then `append` rows, then `close`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.format = self.path.suffix.lower()
        if self.format not in FORMATS:
            raise TableError(f"--out {path}: the suffix must be one of {', '.join(FORMATS)}")
        if self.format == ".parquet":
            _polars()  # fail before any work is done, not at the end
        self.journal = self.path.with_name(self.path.name + ".partial.jsonl")
        self._file = None
        self._writer = None
        self._kept: list[Row] = []  # parquet: the rows to write back with the new ones

    # --- reading --------------------------------------------------------------------------------------
    def load(self) -> list[Row]:
        """Every row already in the table (parquet: and in its journal), a torn last line dropped."""
        rows: list[Row] = []
        if self.format == ".parquet":
            if self.path.exists():
                rows += [Row.from_record(r) for r in _polars().read_parquet(self.path).to_dicts()]
            rows += _read_jsonl(self.journal)
        elif self.format == ".jsonl":
            rows += _read_jsonl(self.path)
        elif self.path.exists():
            _cut_torn_line(self.path)
            with self.path.open(newline="") as f:
                reader = csv.DictReader(f)
                if reader.fieldnames and tuple(reader.fieldnames) != COLUMNS:
                    raise TableError(f"{self.path} has columns {reader.fieldnames}, not those of a batch run")
                rows += [Row.from_record(r) for r in reader]
        return rows

    # --- writing --------------------------------------------------------------------------------------
    def open(self, keep: list[Row] | None = None) -> None:
        """Start appending. With `keep`, the table is first rewritten to hold exactly those rows."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.format == ".parquet":
            self._kept = list(self.load() if keep is None else keep)
            if keep is not None or self.journal.exists():  # a killed run's journal is merged first
                self._write_parquet(self._kept)
                self.journal.unlink(missing_ok=True)
            self._file = self.journal.open("w")
            return
        if keep is not None:
            self._rewrite(keep)
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        self._file = self.path.open("a", newline="" if self.format == ".csv" else None)
        if self.format == ".csv":
            self._writer = csv.DictWriter(self._file, COLUMNS)
            if fresh:
                self._writer.writeheader()

    def append(self, row: Row) -> None:
        if self._writer is not None:
            self._writer.writerow(_csv_record(row))
        else:
            self._file.write(json.dumps(row.record(detections_as_json=False)) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Flush and close; parquet: merge the journal into the Parquet file."""
        if self._file is None:
            return
        self._file.close()
        self._file = self._writer = None
        if self.format == ".parquet":
            rows = self._kept + _read_jsonl(self.journal)
            self._write_parquet(rows)
            self.journal.unlink(missing_ok=True)
            self._kept = []

    def _rewrite(self, rows: Iterable[Row]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", newline="" if self.format == ".csv" else None) as f:
            if self.format == ".csv":
                writer = csv.DictWriter(f, COLUMNS)
                writer.writeheader()
                writer.writerows(_csv_record(r) for r in rows)
            else:
                f.writelines(json.dumps(r.record(detections_as_json=False)) + "\n" for r in rows)
        os.replace(tmp, self.path)

    def _write_parquet(self, rows: list[Row]) -> None:
        pl = _polars()
        schema = {name: pl.Utf8 for name in ("path", "detections", "error")}
        schema |= {name: pl.Int64 for name in INTS} | {name: pl.Float64 for name in FLOATS}
        frame = pl.DataFrame([r.record() for r in rows], schema={c: schema[c] for c in COLUMNS})
        tmp = self.path.with_name(self.path.name + ".tmp")
        frame.write_parquet(tmp)
        os.replace(tmp, self.path)


def _csv_record(row: Row) -> dict:
    return {k: "" if v is None else v for k, v in row.record().items()}


def _cut_torn_line(path: Path) -> None:
    """Drop a last line that a killed run left half-written (no newline at its end)."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def _read_jsonl(path: Path) -> list[Row]:
    if not path.exists():
        return []
    _cut_torn_line(path)
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(Row.from_record(json.loads(line)))
            except (ValueError, KeyError, TypeError) as exc:
                raise TableError(f"{path}:{number}: not a row of a batch run ({exc})") from None
    return rows


def _polars():
    try:
        import polars
    except ImportError:
        raise TableError("--out *.parquet needs polars (pip install polars); or write .csv or .jsonl") from None
    return polars
