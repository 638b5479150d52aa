"""The synthetic CLO data set and `python -m training --quick`: the training code cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from training import dataset, scenes
from training.metrics import FrameResult, summarize

ROOT = Path(__file__).resolve().parents[2]


def test_render_is_identical_when_seed_and_index_repeat():
    a, b = scenes.render(7, 3), scenes.render(7, 3)
    assert a.oilers == b.oilers
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert a.jpeg() == b.jpeg()
    assert scenes.render(7, 4).oilers != a.oilers or not a.oilers


def test_render_labels_fit_the_frame_when_many_scenes_are_drawn():
    counts, levels, kinds = [], [], set()
    for i in range(12):
        scene = scenes.render(1, i)
        assert scene.image.size == (scenes.FRAME_W, scenes.FRAME_H)
        counts.append(len(scene.oilers))
        for o in scene.oilers:
            x1, y1, x2, y2 = o.box
            assert 0 <= x1 < x2 <= scenes.FRAME_W and 0 <= y1 < y2 <= scenes.FRAME_H
            assert 0.09 * scenes.FRAME_H <= y2 - y1 <= 0.61 * scenes.FRAME_H  # 10-60 % of the frame height
            assert 0 <= o.level <= 1 and o.tint in scenes.TINTS
            kinds.add(o.kind)
            levels.append(o.level)
        for a in scene.oilers:  # oilers never overlap, so every label is fully visible
            assert all(scenes.iou(a.box, b.box) == 0 for b in scene.oilers if b is not a)
    assert max(counts) <= 3 and min(counts) == 0 and kinds == set(scenes.KINDS)


def test_render_pins_count_and_level_when_asked():
    scene = scenes.render(0, 1, count=1, level=0.25)
    assert len(scene.oilers) == 1 and scene.oilers[0].level == 0.25
    assert scene.best_level(scene.oilers[0].box) == 0.25
    assert scene.best_level((0, 0, 1, 1)) is None


def test_summarize_scores_perfect_answers_when_boxes_and_levels_are_exact():
    scene = scenes.render(0, 1, count=2, level=0.4)
    boxes = np.array([[*o.box, 0.9 - 0.1 * i, 0] for i, o in enumerate(scene.oilers)])
    figures = summarize([FrameResult(scene.oilers, boxes, 40.0), FrameResult([], np.zeros((0, 6)), 50.0)])
    assert figures["map50"] == pytest.approx(1.0, abs=0.01) and figures["map50_95"] == pytest.approx(1.0, abs=0.01)
    assert figures["oil_mae"] == pytest.approx(0.0, abs=1e-6) and figures["oil_within_5"] == 1.0
    assert figures["frames_scored_for_oil"] == 1  # the frame without an oiler has no level to score


def test_summarize_counts_misses_when_a_box_is_wrong():
    scene = scenes.render(0, 1, count=1, level=0.5)
    x1, y1, x2, y2 = scene.oilers[0].box
    far = np.array([[x1 + 2 * (x2 - x1), y1, x2 + 2 * (x2 - x1), y2, 0.9, 0]])
    figures = summarize([FrameResult(scene.oilers, far, 10.0)])
    assert figures["map50"] == 0.0 and figures["frames_scored_for_oil"] == 0


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out, data = tmp_path_factory.mktemp("weights"), tmp_path_factory.mktemp("data")
    cmd = [sys.executable, "-m", "training", "--quick", "--out", str(out), "--data", str(data)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, data


@pytest.mark.slow
def test_training_writes_yolo_layout_when_quick_mode_runs(quick_run):
    _, data = quick_run
    yaml = (data / "data.yaml").read_text()
    assert "train: images/train" in yaml and "0: oiler" in yaml
    rows = list(dataset.read_manifest(data))
    for split, size in {"train": 6, "val": 3, "test": 3}.items():
        images = sorted((data / "images" / split).glob("*.jpg"))
        labels = sorted((data / "labels" / split).glob("*.txt"))
        assert len(images) == len(labels) == size == sum(r.split == split for r in rows)
    for row in rows:
        label = (data / row.file.replace("images/", "labels/").replace(".jpg", ".txt")).read_text().split("\n")
        assert len([line for line in label if line]) == len(row.oilers)


@pytest.mark.slow
def test_training_writes_checkpoints_the_tools_load_when_quick_mode_runs(quick_run):
    from builders.nets.efficientnet_v2 import build_oil_regressor
    from builders.nets.yolo import build_yolov8

    out, _ = quick_run
    ckpt = torch.load(out / "yolov8n_clo.pt", map_location="cpu", weights_only=False)
    assert {"model", "train_args", "version"} <= set(ckpt)  # what ultralytics' trainer writes
    _, num_classes, source = build_yolov8(out / "yolov8n_clo.pt")
    assert num_classes == 1 and "ultralytics checkpoint" in source
    state = torch.load(out / "oil_effnetv2s.pt", map_location="cpu", weights_only=True)
    assert state["classifier.1.weight"].dtype == torch.float16
    _, source = build_oil_regressor(out / "oil_effnetv2s.pt")
    assert source.startswith("all weights from")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["quick"] is True and metrics["data_set"] == {"train": 6, "val": 3, "test": 3}
    assert {"map50", "map50_95"} <= set(metrics["ultralytics_val_test"])
    assert {"map50", "oil_mae", "oil_within_5", "frames"} <= set(metrics["pipeline_test"])
    assert metrics["seconds"]["total"] > 0
