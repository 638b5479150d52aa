"""`python -m training`: the trained stand-ins of the CLO pipeline, from a data set this project generates.

    python -m training --out weights/clo            # make train: about 40 minutes on 2 CPU cores (measured)
    python -m training --quick --out /tmp/clo       # smoke mode (make test): a few frames, one epoch

Steps: render the synthetic data set (YOLO layout + manifest), train YOLOv8n with ultralytics' trainer, validate it
with ultralytics' validator on the test split, train the EfficientNetV2-S oil regressor on crops made by the served
crop function from detected boxes, score the whole pipeline in-process on the test split, and write
`yolov8n_clo.pt`, `oil_effnetv2s.pt` (FP16 state_dict) and `metrics.json` into --out.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from builders.offline import stay_offline

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "weights" / "clo"
YOLO_FILE, OIL_FILE, METRICS_FILE = "yolov8n_clo.pt", "oil_effnetv2s.pt", "metrics.json"
FULL_SIZES = {"train": 320, "val": 40, "test": 70}
QUICK_SIZES = {"train": 6, "val": 3, "test": 3}

log = logging.getLogger("tritonyard.train")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"where the weights and metrics go (default {DEFAULT_OUT})"
    )
    p.add_argument(
        "--data", type=Path, default=Path("data/clo"), help="where the data set is rendered (default data/clo)"
    )
    p.add_argument("--seed", type=int, default=0, help="data set and training seed (default 0)")
    p.add_argument(
        "--reuse-yolo",
        action="store_true",
        help="keep the YOLO checkpoint already in --out (validate it again) and train only the oil regressor",
    )
    p.add_argument(
        "--yolo-base",
        type=Path,
        help="the first YOLO run's best.pt from an earlier run of this recipe: only the 640 fine-tune runs again",
    )
    p.add_argument(
        "--keep-data", action="store_true", help="reuse the data set in --data when it was rendered with these sizes"
    )
    p.add_argument(
        "--quick", action="store_true", help="smoke mode: a few frames, one short epoch each (for make test)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    stay_offline()
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))  # before ultralytics sets it to 1
    from training import dataset, oil, yolo

    yolo.all_cores()
    import torch

    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    yolo_recipe = yolo.YoloRecipe(seed=args.seed)
    oil_recipe = oil.OilRecipe(seed=args.seed)
    if args.quick:
        yolo_recipe = replace(yolo_recipe, epochs=1, batch=4, close_mosaic=0, finetune_epochs=1)
        oil_recipe = replace(oil_recipe, steps=2, batch=4, jitter_copies=1)
    seconds: dict[str, float] = {}
    start = time.perf_counter()

    def phase(name: str, t0: float) -> None:
        seconds[name] = round(time.perf_counter() - t0, 1)
        log.info("== %s done in %.0fs (%.0fs in all)", name, seconds[name], time.perf_counter() - start)

    t0 = time.perf_counter()
    log.info("== rendering the synthetic CLO data set into %s: %s", args.data, sizes)
    data_yaml = dataset.write(args.data, args.seed, sizes, keep=args.keep_data)
    phase("data set", t0)

    t0 = time.perf_counter()
    yolo_path = args.out / YOLO_FILE
    if args.reuse_yolo and yolo_path.is_file():
        log.info("== reusing %s (--reuse-yolo)", yolo_path)
    else:
        log.info("== training YOLOv8n with ultralytics' trainer: %s", yolo_recipe)
        yolo.train(data_yaml, yolo_path, yolo_recipe, base=args.yolo_base)
    yolo_val = yolo.validate(yolo_path, data_yaml, "test")
    log.info("   ultralytics val, test split: mAP50 %.3f, mAP50-95 %.3f", yolo_val["map50"], yolo_val["map50_95"])
    phase("yolo", t0)

    t0 = time.perf_counter()
    log.info("== oil regressor: crops from detected boxes, then EfficientNetV2-S: %s", oil_recipe)
    detector = oil.Detector(yolo_path)
    crops, levels = oil.make_crops(args.data, "train", detector, oil_recipe, augment=True)
    log.info("   %d training crops", len(crops))
    model = oil.train(crops, levels, oil_recipe)
    oil.save_fp16(model, args.out / OIL_FILE)
    phase("oil regressor", t0)

    t0 = time.perf_counter()
    from training import pipeline

    figures = pipeline.evaluate(args.data, "test", yolo_path, args.out / OIL_FILE, oil_recipe.input_px)
    phase("pipeline evaluation", t0)
    seconds["total"] = round(time.perf_counter() - start, 1)
    report = {
        "what": "stand-ins trained on synthetic CLO frames, not production models",
        "quick": args.quick,
        "yolo_reused": args.reuse_yolo,
        "yolo_base_from_earlier_run": args.yolo_base is not None,
        "seed": args.seed,
        "data_set": sizes,
        "yolo_recipe": asdict(yolo_recipe),
        "oil_recipe": asdict(oil_recipe),
        "ultralytics_val_test": yolo_val,
        "pipeline_test": figures,
        "seconds": seconds,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
    }
    (args.out / METRICS_FILE).write_text(json.dumps(_finite(report), indent=2) + "\n")
    log.info("== wrote %s: %s", args.out, json.dumps({**yolo_val, **figures}))
    return 0


def _finite(obj: object) -> object:
    """NaN (no frame to score, in the quick mode) as JSON null."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    return None if isinstance(obj, float) and obj != obj else obj


if __name__ == "__main__":
    sys.exit(main())
