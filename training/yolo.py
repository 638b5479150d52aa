"""Train YOLOv8n on the synthetic CLO data set with ultralytics' own trainer, offline, and validate it.

The result is a genuine ultralytics checkpoint (`best.pt`), the file a user would bring to `--yolo-weights`.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from builders.offline import stay_offline

log = logging.getLogger("tritonyard.train")


@dataclass(frozen=True)
class YoloRecipe:
    """What `make train` trains with; `quick` is the smoke mode that runs in `make test`."""

    imgsz: int = 320  # most epochs at half the served size: 4x cheaper on 2 CPU cores
    epochs: int = 20
    batch: int = 16
    close_mosaic: int = 4  # last epochs without mosaic: whole frames, as served
    # Random zoom in 1 +- scale. Up to 1.9x at 320 covers the object sizes the served 640 sees (2x): without it the
    # detector is under-confident at 640, and the served pipeline keeps only scores >= 0.25.
    scale: float = 0.9
    finetune_imgsz: int = 640  # then a fine-tune at the served 640 (a second ultralytics run from best.pt)
    finetune_epochs: int = 2
    seed: int = 0


def offline_ultralytics() -> None:
    """ultralytics must not reach a hub, install packages or write plots; torchvision must import (the shim)."""
    stay_offline()
    from training import torchvision_shim

    torchvision_shim.install()
    all_cores()


def all_cores() -> None:
    """Give torch every core again. ultralytics keeps one for data-loader workers: importing it sets
    OMP_NUM_THREADS=1 where unset, and each train/val/predict call sets torch to cpu_count - 1 threads. Training
    here loads data in the main process (workers=0), so on 2 cores that would halve the speed of everything."""
    import torch
    from ultralytics.utils import torch_utils

    cores = os.cpu_count() or 1
    torch_utils.NUM_THREADS = cores  # what select_device() sets
    torch.set_num_threads(cores)


def train(data_yaml: Path, out: Path, recipe: YoloRecipe, base: Path | None = None) -> Path:
    """Train from `yolov8n.yaml` (random init: no pretrained download), fine-tune at 640, copy best.pt to `out`.

    `base`: the first run's best.pt from an earlier run of this recipe; only the fine-tune runs again."""
    offline_ultralytics()
    runs = Path(tempfile.mkdtemp(prefix="yolo-runs-"))
    if base is None:
        best = _run(
            "yolov8n.yaml",
            data_yaml,
            runs / "base",
            recipe.imgsz,
            recipe.epochs,
            recipe.close_mosaic,
            recipe,
            scale=recipe.scale,
        )
    else:
        best = runs / "base.pt"
        shutil.copyfile(base, best)
    if recipe.finetune_epochs:
        # A second run that starts from best.pt's weights (pretrained=True loads them), at the served size. A model
        # trained at 320 loses much at 640 (objects twice the pixels); gentle SGD without warm-up adapts it, with
        # mosaic first (objects at every scale), whole frames last.
        tune = {"optimizer": "SGD", "lr0": 0.002, "lrf": 0.5, "momentum": 0.937, "warmup_epochs": 0, "pretrained": True}
        epochs = recipe.finetune_epochs
        tuned = _run(str(best), data_yaml, runs / "finetune", recipe.finetune_imgsz, epochs, 1, recipe, **tune)
        # Keep whichever scores better at the served size on the val split.
        scores = {path: validate(path, data_yaml, "val", recipe.finetune_imgsz)["map50_95"] for path in (best, tuned)}
        log.info(
            "   val mAP50-95 at %dpx: before fine-tuning %.3f, after %.3f", recipe.finetune_imgsz, *scores.values()
        )
        best = max(scores, key=scores.get)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(best, out)
    shutil.rmtree(runs, ignore_errors=True)
    return out


def _run(
    start: str,
    data_yaml: Path,
    folder: Path,
    imgsz: int,
    epochs: int,
    close_mosaic: int,
    recipe: YoloRecipe,
    **extra: object,
) -> Path:
    """One ultralytics training run; returns its best.pt (best fitness on the val split)."""
    from ultralytics import YOLO

    log.info("   ultralytics: %s at %dpx for %d epoch(s)", start, imgsz, epochs)
    extra.setdefault("pretrained", False)  # the first run starts from random init, nothing to download
    YOLO(start).train(
        data=str(data_yaml),
        imgsz=imgsz,
        epochs=epochs,
        batch=recipe.batch,
        close_mosaic=close_mosaic,
        seed=recipe.seed,
        deterministic=True,
        device="cpu",
        workers=0,
        cache="ram",  # 4K JPEGs are decoded and resized once, not every epoch
        amp=False,
        plots=False,
        project=str(folder.parent),
        name=folder.name,
        exist_ok=True,
        verbose=False,
        **extra,
    )
    best = folder / "weights" / "best.pt"
    if not best.is_file():
        raise RuntimeError(f"ultralytics finished without writing {best}")
    return best


def validate(weights: Path, data_yaml: Path, split: str = "test", imgsz: int = 640) -> dict[str, float]:
    """ultralytics' validator on `split`: mAP50 and mAP50-95 of the checkpoint."""
    offline_ultralytics()
    from ultralytics import YOLO

    runs = Path(tempfile.mkdtemp(prefix="yolo-val-"))
    metrics = YOLO(str(weights)).val(
        data=str(data_yaml),
        split=split,
        imgsz=imgsz,
        batch=8,
        device="cpu",
        workers=0,
        plots=False,
        project=str(runs),
        name="val",
        verbose=False,
    )
    shutil.rmtree(runs, ignore_errors=True)
    return {"map50": float(metrics.box.map50), "map50_95": float(metrics.box.map)}
