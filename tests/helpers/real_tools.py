"""The real tools a user's files come from, run in a child process: ultralytics' predictor and exporter, and
torchvision's EfficientNetV2-S.

Both import torchvision, which imports here only after `training.torchvision_shim` is installed, and not at all
in a process where `builders.nets.gpt2` has hidden it (every test session that builds the repository).

    python -m tests.helpers.real_tools predict BEST_PT OUT_JSON OPTIONS_JSON IMAGE...  # boxes per image, source pixels
    python -m tests.helpers.real_tools export BEST_PT OUT_DIR VARIANTS_JSON            # {stem: options} -> stem.onnx
    python -m tests.helpers.real_tools effnet STATE_DICT OUT NUM_CLASSES               # torchvision's state_dict
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from builders.offline import OFFLINE_ENV

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, timeout: int = 900) -> None:
    """Run this module in a child with `args`; fail with the child's stderr tail."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **OFFLINE_ENV}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.helpers.real_tools", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(f"tests.helpers.real_tools {args[0]} failed:\n{proc.stderr[-3000:]}")


def predict(weights: Path, images: list[Path], out: Path, **options: object) -> list[list[list[float]]]:
    """[x1, y1, x2, y2, score, class] rows per image, by `YOLO(weights).predict(bgr, **options)`."""
    run("predict", str(weights), str(out), json.dumps(options), *map(str, images))
    return json.loads(out.read_text())


def export(weights: Path, out: Path, variants: dict[str, dict[str, object]]) -> dict[str, Path]:
    """`YOLO(weights).export(format="onnx", **options)` for each variant: {stem: out/stem.onnx}."""
    run("export", str(weights), str(out), json.dumps(variants))
    return {stem: out / f"{stem}.onnx" for stem in variants}


def torchvision_effnet(weights: Path, out: Path, num_classes: int) -> Path:
    """`torchvision.models.efficientnet_v2_s(num_classes=...)` given `weights`' backbone (and head, when it fits),
    saved with torch.save(model.state_dict()): the file a torchvision user brings."""
    run("effnet", str(weights), str(out), str(num_classes))
    return out


def _main(argv: list[str]) -> None:
    os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="ultralytics-"))
    from training import torchvision_shim

    torchvision_shim.install()
    import numpy as np
    from PIL import Image
    from ultralytics import YOLO

    verb, weights = argv[0], argv[1]
    if verb == "predict":
        out, options, images = Path(argv[2]), json.loads(argv[3]), argv[4:]
        model, rows = YOLO(weights), []
        for path in images:
            bgr = np.ascontiguousarray(np.asarray(Image.open(path).convert("RGB"))[:, :, ::-1])
            [res] = model.predict(bgr, device="cpu", verbose=False, **options)
            b = res.boxes
            rows.append(np.column_stack([b.xyxy.numpy(), b.conf.numpy(), b.cls.numpy()]).tolist())
        out.write_text(json.dumps(rows))
    elif verb == "export":
        out, exports = Path(argv[2]), json.loads(argv[3])
        copy = out / "best.pt"  # ultralytics writes the export beside the checkpoint: never beside the user's
        shutil.copyfile(weights, copy)
        for stem, options in exports.items():
            written = YOLO(copy).export(format="onnx", simplify=False, **options)
            os.replace(written, out / f"{stem}.onnx")
    elif verb == "effnet":
        import torch
        import torchvision

        out, num_classes = Path(argv[2]), int(argv[3])
        model = torchvision.models.efficientnet_v2_s(num_classes=num_classes)
        state = {k: v.float() for k, v in torch.load(weights, map_location="cpu", weights_only=True).items()}
        if num_classes != 1:  # an ImageNet-style head: only the backbone comes from `weights`
            state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        model.load_state_dict(state, strict=num_classes == 1)
        torch.save(model.state_dict(), out)
    else:
        raise SystemExit(f"unknown verb {verb!r}")


if __name__ == "__main__":
    _main(sys.argv[1:])
