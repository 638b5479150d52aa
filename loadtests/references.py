"""Reference answers for the load generators, computed here, in-process, from the weights the repository is built from.

The server under test plays no part in them:
- vision: the CLO pipeline in torch with the modules the builder exports (training.oil.Detector: letterbox,
  YOLOv8 raw head, reference NMS; CropBestBoxU8; the oil regressor loaded as the builder loads it), run on the
  very pixels locust sends (its JPEG, decoded). Default weights: weights/clo, the builder's default.
- GPT-2: transformers' own greedy `generate` on weights/gpt2 (the builder's default checkpoint), FP32.

    python -m loadtests.references --out answers.json [--prompt P ...] [--max-tokens 16] [--frames 1]

writes the answers (with the weights' sha256 as provenance) that `--answers` hands the locustfiles. The checks
below compare a served answer with them and raise ResponseError on a wrong one: locust counts it as a failure.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import io
import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from clients.lib.checks import ResponseError
from clients.synthetic import synthetic_frame
from tritonyard_contract.tensors import DETECTIONS, OIL_PCT

ROOT = Path(__file__).resolve().parent.parent
CLO_WEIGHTS = ROOT / "weights" / "clo"  # builders.vision.STAND_IN_DIR: what `make build` serves by default
GPT2_WEIGHTS = ROOT / "weights" / "gpt2"  # builders.gpt2_load.TRAINED_STAND_IN
YOLO_FILE, OIL_FILE = "yolov8n_clo.pt", "oil_effnetv2s.pt"
JPEG_QUALITY = 92
# How far a correct served answer may sit from the torch reference. The served letterbox, crop and regressor are
# the exported twins of these modules, run by onnxruntime (FP32 on cpu); only rounding separates them. Boxes
# within score_margin of the NMS score threshold may come and go; vision_answers adds that threshold.
TOLERANCE = {"oil_pct": 1.0, "iou": 0.9, "score": 0.05, "score_margin": 0.05}
# The locustfiles' built-in prompts (greedy, so each has one right answer).
GPT2_PROMPTS = (
    "The oil level in the",
    "def main():",
    "Pump seven was inspected at noon and",
    "import os\nimport sys\n",
)
OPENAI_PROMPTS = ("The oil level in the", "Now is the winter of our", "Pump seven was inspected at noon and")


def frame_sources(image: str, count: int) -> list[bytes]:
    """The encoded images locust sends: a file's bytes, or `count` synthetic 4K frames as JPEG."""
    if image != "synthetic":
        return [Path(image).read_bytes()]
    out = []
    for seed in range(max(1, count)):
        buf = io.BytesIO()
        synthetic_frame(seed=seed).save(buf, "JPEG", quality=JPEG_QUALITY)
        out.append(buf.getvalue())
    return out


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _weights(folder: Path, names: Iterable[str]) -> dict:
    """Provenance: the folder (relative to the project when inside it) and each file's sha256."""
    shown = folder.resolve().relative_to(ROOT) if folder.resolve().is_relative_to(ROOT) else folder
    return {"folder": str(shown), "sha256": {name: digest((folder / name).read_bytes()) for name in names}}


def vision_answers(sources: list[bytes], weights: Path = CLO_WEIGHTS) -> dict:
    """sha256 of each source -> {oil_pct, detections (kept rows, letterbox px)} from the torch pipeline."""
    import torch

    from builders.nets.efficientnet_v2 import build_oil_regressor
    from builders.nets.frame_ops import CropBestBoxU8
    from builders.nets.yolo import reference_nms
    from builders.vision import stand_in_oil_input_px
    from clients.lib import images
    from training.oil import Detector

    threshold = inspect.signature(reference_nms).parameters["score_threshold"].default  # the one Detector uses

    detector, cropper = Detector(weights / YOLO_FILE), CropBestBoxU8()
    regressor, _ = build_oil_regressor(weights / OIL_FILE, input_px=stand_in_oil_input_px(weights / "metrics.json"))
    frames = {}
    with torch.no_grad():
        for data in sources:
            pixels = torch.from_numpy(np.asarray(images.decode(data).convert("RGB")).copy())[None]
            det = detector(pixels)
            oil = float(regressor(cropper(pixels, torch.from_numpy(det)))[0, 0])
            kept = det[0][det[0][:, 4] > 0]
            frames[digest(data)] = {"oil_pct": oil, "detections": kept.astype(float).round(3).tolist()}
    return {
        "frames": frames,
        "tolerance": {**TOLERANCE, "score_threshold": threshold},
        "weights": _weights(weights, (YOLO_FILE, OIL_FILE)),
        "torch": torch.__version__,
    }


def gpt2_answers(prompts: Iterable[str], max_tokens: int, weights: Path = GPT2_WEIGHTS) -> dict:
    """prompt -> the greedy text of `max_tokens` new tokens (cut at EOS), by transformers' generate."""
    import torch

    from builders.nets.gpt2 import GPT2LMHeadModel  # transformers' class; this import hides the CUDA-only torchvision

    model = GPT2LMHeadModel.from_pretrained(weights, dtype=torch.float32, local_files_only=True).eval()
    from transformers import AutoTokenizer  # after the line above, or transformers trips over torchvision

    tokenizer = AutoTokenizer.from_pretrained(weights, local_files_only=True)
    texts = {}
    for prompt in dict.fromkeys(prompts) if max_tokens > 0 else ():  # max_tokens 0: the server refuses it
        inputs = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(
                **inputs,
                do_sample=False,
                max_new_tokens=max_tokens,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.eos_token_id,
            )
        ids = out[0, inputs.input_ids.shape[1] :].tolist()
        if tokenizer.eos_token_id in ids:
            ids = ids[: ids.index(tokenizer.eos_token_id)]
        texts[prompt] = tokenizer.decode(ids, skip_special_tokens=True)
    files = sorted(p.name for p in weights.iterdir() if p.suffix in (".safetensors", ".json") and p.stem != "metrics")
    return {
        "max_tokens": max_tokens,
        "texts": texts,
        "weights": _weights(weights, files),
        "torch": torch.__version__,
    }


# --- the checks (locust users call them on every answer) ---


def _iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _unmatched(boxes: np.ndarray, others: np.ndarray, tol: Mapping) -> list[list[float]]:
    """Rows of `boxes` clearly above the threshold with no box in `others` at IoU >= iou and a close score."""
    sure = tol["score_threshold"] + tol["score_margin"]
    missing = []
    for box in boxes[boxes[:, 4] >= sure]:
        if not any(_iou(box, o) >= tol["iou"] and abs(box[4] - o[4]) <= tol["score"] for o in others):
            missing.append([round(float(v), 1) for v in box[:5]])
    return missing


def check_vision_answer(outputs: Mapping[str, np.ndarray], expected: Mapping, tol: Mapping) -> None:
    """Raise ResponseError unless the oil level and the detections match the reference for this frame."""
    oil = float(np.asarray(outputs[OIL_PCT.name]).reshape(-1)[0])
    if abs(oil - expected["oil_pct"]) > tol["oil_pct"]:
        raise ResponseError(
            f"wrong answer: oil level {oil:.2f}%, reference {expected['oil_pct']:.2f}% (tolerance {tol['oil_pct']:g})"
        )
    served = np.asarray(outputs[DETECTIONS.name], dtype=np.float64).reshape(-1, 6)
    served = served[served[:, 4] > 0]
    reference = np.asarray(expected["detections"], dtype=np.float64).reshape(-1, 6)
    missing, extra = _unmatched(reference, served, tol), _unmatched(served, reference, tol)
    if missing or extra:
        raise ResponseError(f"wrong answer: detections differ from the reference: missing {missing}, extra {extra}")


def check_text_answer(text: str, expected: str) -> None:
    """Raise ResponseError unless the generated text is the reference greedy text.

    A stream holds back an unfinished UTF-8 character at its very end, so a trailing U+FFFD of the reference
    may be absent from the served text.
    """
    if text != expected and text != expected.rstrip("\ufffd"):
        raise ResponseError(f"wrong answer: generated {text!r}, reference greedy text {expected!r}")


def expected_text(answers: Mapping, prompt: str, max_tokens: int) -> str:
    """The reference text for `prompt` at `max_tokens`; ResponseError when the answers hold none."""
    if answers.get("max_tokens") != max_tokens or prompt not in answers.get("texts", {}):
        raise ResponseError(f"no reference answer for {prompt!r} with max_tokens {max_tokens} in --answers")
    return answers["texts"][prompt]


def load(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def compute(image: str, frames: int, prompts: Iterable[str], max_tokens: int) -> dict:
    """Both pipelines' answers, as `--answers` reads them."""
    return {
        "what": "reference answers computed in-process from the committed weights (loadtests/references.py)",
        "vision": vision_answers(frame_sources(image, frames)),
        "gpt2": gpt2_answers(prompts, max_tokens),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.references", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--image", default="synthetic")
    p.add_argument("--frames", type=int, default=1)
    p.add_argument("--prompt", action="append", help="default: the locustfiles' built-in prompts")
    p.add_argument("--max-tokens", type=int, default=16)
    args = p.parse_args(argv)
    answers = compute(args.image, args.frames, args.prompt or GPT2_PROMPTS + OPENAI_PROMPTS, args.max_tokens)
    args.out.write_text(json.dumps(answers, indent=2) + "\n")
    sys.stdout.write(f"wrote {args.out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
