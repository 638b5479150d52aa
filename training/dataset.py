"""Write the synthetic CLO data set in ultralytics' YOLO layout, plus a manifest of boxes and levels.

    DIR/data.yaml                         path, train/val/test, names {0: oiler}
    DIR/images/{train,val,test}/NNNNN.jpg 3840x2160 frames, JPEG at each scene's quality
    DIR/labels/{train,val,test}/NNNNN.txt one "0 cx cy w h" line per oiler, normalised
    DIR/manifest.jsonl                    one line per frame: split, file, oilers (box in pixels, level, kind, tint)

The frames of split S are scenes (seed, offset(S) + i), so a split is the same whatever the other splits' sizes.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from training.scenes import FRAME_H, FRAME_W, Oiler, render

log = logging.getLogger("tritonyard.train")

SPLITS = ("train", "val", "test")
SPLIT_OFFSET = {"train": 0, "val": 100_000, "test": 200_000}  # scene index = offset + i
CLASS_NAMES = {0: "oiler"}
WORKERS = 2


@dataclass(frozen=True)
class Frame:
    """One manifest row."""

    split: str
    file: str  # relative to the data set folder
    oilers: list[Oiler]


def scene_index(split: str, i: int) -> int:
    return SPLIT_OFFSET[split] + i


def _yolo_line(o: Oiler) -> str:
    x1, y1, x2, y2 = o.box
    cx, cy, w, h = (x1 + x2) / 2 / FRAME_W, (y1 + y2) / 2 / FRAME_H, (x2 - x1) / FRAME_W, (y2 - y1) / FRAME_H
    return f"0 {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}"


def _write_one(job: tuple[Path, int, str, int]) -> dict:
    root, seed, split, i = job
    scene = render(seed, scene_index(split, i))
    name = f"{i:05d}"
    (root / "images" / split / f"{name}.jpg").write_bytes(scene.jpeg())
    (root / "labels" / split / f"{name}.txt").write_text("".join(_yolo_line(o) + "\n" for o in scene.oilers))
    return {"split": split, "file": f"images/{split}/{name}.jpg", "oilers": [asdict(o) for o in scene.oilers]}


def write(root: Path, seed: int, sizes: dict[str, int], keep: bool = False) -> Path:
    """Render every split into `root` (2 processes) and return the data.yaml path. Re-running rewrites it all,
    unless `keep` and the folder already holds this seed's data set of these sizes."""
    yaml, stamp = root / "data.yaml", root / "rendered.json"
    wanted = {"seed": seed, "sizes": sizes}
    if keep and yaml.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        log.info("  data set: reusing %s (seed %d, %s)", root, seed, sizes)
        return yaml
    root.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    for split in SPLITS:
        for sub in ("images", "labels"):
            folder = root / sub / split
            folder.mkdir(parents=True, exist_ok=True)
            for old in folder.iterdir():
                old.unlink()
    jobs = [(root, seed, split, i) for split in SPLITS for i in range(sizes[split])]
    start, rows = time.perf_counter(), []
    with ProcessPoolExecutor(WORKERS) as pool:
        for n, row in enumerate(pool.map(_write_one, jobs, chunksize=4), 1):
            rows.append(row)
            if n % 50 == 0 or n == len(jobs):
                log.info("  data set: %d/%d frames (%.0fs)", n, len(jobs), time.perf_counter() - start)
    with (root / "manifest.jsonl").open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    names = "".join(f"  {k}: {v}\n" for k, v in CLASS_NAMES.items())
    yaml.write_text(f"path: {root.resolve()}\ntrain: images/train\nval: images/val\ntest: images/test\nnames:\n{names}")
    stamp.write_text(json.dumps(wanted))
    return yaml


def read_manifest(root: Path, split: str | None = None) -> Iterator[Frame]:
    """Manifest rows, optionally of one split, in file order."""
    for line in (root / "manifest.jsonl").read_text().splitlines():
        row = json.loads(line)
        if split is None or row["split"] == split:
            oilers = [Oiler(tuple(o["box"]), o["level"], o["kind"], o["tint"]) for o in row["oilers"]]
            yield Frame(row["split"], row["file"], oilers)
