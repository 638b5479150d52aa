"""Each weights format a user brings, written by the real tool, goes build -> serve -> infer.

- `--yolo-weights model.onnx`: ultralytics' own exports of the trained stand-in (its default, opset 18 with the
  batch fixed at 1; `dynamic=True`; `opset=17`; `nms=True`). Served detections equal the session server's, which
  serves the stand-in's `.pt` (the trainer's own checkpoint) through our export.
- `--effnet-weights`: state_dicts saved from torchvision's own `efficientnet_v2_s`. With a 1-output head (the
  stand-in's weights loaded into torchvision's model) the served oil level equals the session server's; with
  torchvision's 1000-class ImageNet head the build warns loudly that the regression head is random, and serves.

(`--model DIR` for GPT-2 is tested in test_gpt2_checkpoint.py.)
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from builders import vision
from builders.vision import STAND_IN_OIL, STAND_IN_YOLO
from clients.clo import CloClient, Result
from clients.lib import images
from clients.synthetic import synthetic_scene
from serving.launcher import TritonServer, free_ports
from tests.helpers import real_tools
from training.scenes import iou

pytestmark = pytest.mark.integration

EXPORTS = {  # ultralytics export() options; nms=True keeps the served NMS thresholds
    "default": {},
    "dynamic": {"dynamic": True},
    "opset17": {"opset": 17},
    "nms": {"nms": True, "conf": 0.25, "iou": 0.45},
}
# (export, torchvision head) per build: every export is served once, and each torchvision file once.
BUILDS = {"default": 1, "dynamic": 1000, "opset17": None, "nms": None}


@pytest.fixture(scope="module")
def user_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("user_files")
    files = real_tools.export(STAND_IN_YOLO, out, EXPORTS)
    files["effnet_1"] = real_tools.torchvision_effnet(STAND_IN_OIL, out / "tv_oil.pt", 1)
    files["effnet_1000"] = real_tools.torchvision_effnet(STAND_IN_OIL, out / "tv_imagenet.pt", 1000)
    return files


@pytest.fixture(scope="module")
def jpegs() -> list[bytes]:
    """Demo frames with one oiler each, at three levels."""
    return [synthetic_scene(seed=i, oil_level=level).jpeg() for i, level in enumerate((0.2, 0.5, 0.85))]


def _infer(url: str, jpegs: list[bytes]) -> list[Result]:
    client = CloClient(url, "http")
    try:
        return [client.infer_encoded(data, images.decode(data).size) for data in jpegs]
    finally:
        client.close()


@pytest.fixture(scope="module")
def reference(triton: TritonServer, jpegs: list[bytes]) -> list[Result]:
    """The session server: the stand-in's .pt and FP16 state_dict, through our own exports."""
    return _infer(triton.http_url, jpegs)


@pytest.fixture(scope="module", params=list(BUILDS))
def served(request, user_files, jpegs, tmp_path_factory, caplog_module) -> Iterator[tuple[str, list[Result], str]]:
    export, head = request.param, BUILDS[request.param]
    repo = tmp_path_factory.mktemp(f"repo_{export}")
    effnet = user_files[f"effnet_{head}"] if head else None
    caplog_module.clear()
    # The torchvision file holds the stand-in's weights, so it reads the crop at the side the stand-in was trained at.
    input_px = vision.stand_in_oil_input_px() if effnet else None
    vision.build(
        vision.VisionConfig(yolo_weights=user_files[export], effnet_weights=effnet, effnet_input_px=input_px), repo
    )
    log = caplog_module.text
    with TritonServer(repo, *free_ports(3), log_file=repo / "tritonserver.log", ready_timeout=600) as server:
        yield export, _infer(server.http_url, jpegs), log


@pytest.fixture(scope="module")
def caplog_module() -> Iterator[logging.Handler]:
    """The build log of each module-scoped build (pytest's caplog is function-scoped)."""

    class Capture(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.INFO)
            self.records: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.records.append(record.getMessage())

        def clear(self) -> None:
            self.records.clear()

        @property
        def text(self) -> str:
            return "\n".join(self.records)

    handler, logger = Capture(), logging.getLogger("tritonyard.build")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def test_served_detections_equal_the_pt_pipeline_when_yolo_comes_as_ultralytics_onnx(served, reference):
    export, results, log = served
    assert f"ONNX {export}.onnx" in log  # the ONNX import path ran, not the .pt one
    for got, want in zip(results, reference, strict=True):
        assert len(want.boxes) >= 1 and len(got.boxes) == len(want.boxes), (export, got.boxes, want.boxes)
        for g, w in zip(got.boxes, want.boxes, strict=True):  # both sorted by score
            assert iou(tuple(g[:4]), tuple(w[:4])) >= 0.98 and abs(g[4] - w[4]) <= 0.01, (export, g, w)


def test_served_oil_level_follows_the_weights_when_effnet_comes_from_torchvision(served, reference):
    export, results, log = served
    head = BUILDS[export]
    if head == 1:  # the stand-in's weights, saved by torchvision's model: the same answers
        assert "all weights from" in log and "RANDOM" not in log
        for got, want in zip(results, reference, strict=True):
            assert got.oil_pct == pytest.approx(want.oil_pct, abs=0.05)
    elif head == 1000:  # ImageNet head: the backbone loads, the head is random, and the build says so loudly
        assert "RANDOM" in log and "classifier.1" in log and "[1000, 1280]" in log
        assert all(0.0 <= r.oil_pct <= 100.0 for r in results)
    else:  # the stand-in itself
        assert "oil_effnetv2s.pt" in log
        for got, want in zip(results, reference, strict=True):
            assert got.oil_pct == pytest.approx(want.oil_pct, abs=0.05)
