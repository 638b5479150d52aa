"""YOLOv8 builder and the ONNX NMS tail, checked against the numpy reference and onnxruntime."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from builders.errors import BuildError
from builders.nets.yolo import (
    DETECTIONS,
    MAX_OPSET,
    MIN_OPSET,
    attach_nms,
    build_yolov8,
    nms_graph,
    reference_nms,
)
from builders.nets.yolo_import import is_raw_head

NUM_CLASSES = 3


def _run(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feed)[0]


def _raw(
    boxes: list[tuple[float, float, float, float, int, float]],
    anchors: int = 400,
    seed: int = 0,
    classes: int = NUM_CLASSES,
) -> np.ndarray:
    """[4+nc, anchors] with the given (cx, cy, w, h, class, score) first, then low-score background anchors."""
    rng = np.random.default_rng(seed)
    raw = np.zeros((4 + classes, anchors), np.float32)
    raw[:2] = rng.uniform(0, 640, (2, anchors))
    raw[2:4] = rng.uniform(5, 120, (2, anchors))
    raw[4:] = rng.uniform(0, 0.2, (classes, anchors))
    for i, (cx, cy, w, h, cls, score) in enumerate(boxes):
        raw[:4, i] = cx, cy, w, h
        raw[4:, i] = rng.uniform(0, 0.1, classes)
        raw[4 + cls, i] = score
    return raw


def _clustered_batch() -> np.ndarray:
    """Two images with overlapping clusters in several classes, plus same-place boxes of different classes."""
    rng = np.random.default_rng(1)
    images = []
    for b in range(2):
        boxes = []
        for cls, (cx, cy) in enumerate([(100, 100), (300, 300), (500, 150)]):
            for _ in range(12):  # a cluster: one class, jittered boxes -> suppression matters
                jx, jy, jw, jh = rng.normal(0, 20, 4)
                boxes.append((cx + jx, cy + jy, 80 + jw, 60 + jh, cls, rng.uniform(0.3, 0.99)))
        # Identical box in every class: class-aware NMS must keep all of them.
        boxes += [(420, 500, 90, 90, cls, 0.6 + 0.1 * cls + 0.01 * b) for cls in range(NUM_CLASSES)]
        images.append(_raw(boxes, seed=10 + b))
    return np.stack(images)


def test_nms_graph_matches_reference_when_clusters_overlap_across_classes():
    raw = _clustered_batch()
    got = _run(nms_graph(NUM_CLASSES), {"raw": raw})
    want = reference_nms(raw)
    assert got.shape == want.shape == (2, DETECTIONS, 6)
    assert np.abs(got - want).max() < 1e-4
    for image in got:
        kept = image[image[:, 4] > 0]
        assert 2 * NUM_CLASSES < len(kept) < 3 * 12 + NUM_CLASSES  # some suppressed, partial overlaps kept
        same_place = kept[(np.abs(kept[:, 0] - 375) < 1e-3) & (np.abs(kept[:, 1] - 455) < 1e-3)]
        assert sorted(same_place[:, 5].tolist()) == list(range(NUM_CLASSES))


def test_nms_graph_returns_zeros_when_no_score_passes_threshold():
    raw = np.stack([_raw([], seed=s) for s in range(2)])  # background scores stay below 0.2
    got = _run(nms_graph(NUM_CLASSES), {"raw": raw})
    assert got.shape == (2, DETECTIONS, 6)
    assert not got.any()


def test_nms_graph_sorts_by_score_and_zero_pads_when_few_boxes_survive():
    got = _run(nms_graph(NUM_CLASSES), {"raw": _clustered_batch()})
    for image in got:
        live = image[:, 4] > 0
        count = int(live.sum())
        assert live[:count].all() and not image[count:].any()
        assert np.all(np.diff(image[:count, 4]) <= 0)


def test_nms_graph_handles_fewer_anchors_than_max_det_when_input_is_small():
    raw = _raw([(50, 50, 20, 20, 0, 0.9), (300, 300, 20, 20, 1, 0.8)], anchors=40)[None]
    got = _run(nms_graph(NUM_CLASSES), {"raw": raw})
    assert got.shape == (1, DETECTIONS, 6)
    assert np.abs(got - reference_nms(raw)).max() < 1e-4


def test_nms_graph_keeps_overlapping_boxes_of_other_classes_when_classes_differ():
    # Same place, classes 0 and 2: both kept. Class 1 twice: the weaker is suppressed; a box is never kept twice.
    same = [(200, 200, 100, 100, 0, 0.9), (200, 200, 100, 100, 2, 0.8), (205, 200, 100, 100, 1, 0.7)]
    raw = _raw([*same, (200, 205, 100, 100, 1, 0.6)], anchors=30)[None]
    got = _run(nms_graph(NUM_CLASSES), {"raw": raw})[0]
    kept = got[got[:, 4] > 0]
    assert kept[:, 5].tolist() == [0, 2, 1] and np.allclose(kept[:, 4], [0.9, 0.8, 0.7])
    assert np.abs(got - reference_nms(raw)[0]).max() < 1e-5


def test_nms_graph_matches_reference_at_every_opset_when_backbone_opset_varies():
    raw = _clustered_batch()
    want = reference_nms(raw)
    for opset in range(MIN_OPSET, MAX_OPSET + 1):  # 13 .. 28 with onnx 1.23 and onnxruntime 1.32
        model = nms_graph(NUM_CLASSES, opset=opset)
        onnx.checker.check_model(model, full_check=True)
        assert np.abs(_run(model, {"raw": raw}) - want).max() < 1e-4, opset
    with pytest.raises(BuildError, match="opset"):
        nms_graph(NUM_CLASSES, opset=MIN_OPSET - 1)


def _scenes_80_classes() -> np.ndarray:
    """Two images, 80 classes: per class a kept box, a suppressed near-copy (IoU ~0.8) and a kept neighbour
    (IoU ~0.1), all scores at least 0.004 apart (FP16 keeps their order); plus one place shared by 8 classes."""
    rng = np.random.default_rng(5)
    images = []
    for b in range(2):
        boxes = []
        scores = iter(rng.permutation(np.linspace(0.3, 0.99, 3 * 80 + 8)))
        for cls in range(80):
            cx, cy = rng.uniform(60, 580, 2)
            boxes += [(cx, cy, 80, 60, cls, next(scores))]
            boxes += [(cx + 5, cy + 3, 80, 60, cls, next(scores))]
            boxes += [(cx + 70, cy, 80, 60, cls, next(scores))]
        boxes += [(320, 320, 90, 90, cls, next(scores)) for cls in range(0, 80, 10)]
        images.append(_raw(boxes, anchors=900, seed=20 + b, classes=80))
    return np.stack(images)


def test_nms_graph_gives_fp32_results_when_converted_to_fp16_with_80_classes():
    from onnxconverter_common.float16 import convert_float_to_float16

    # The old design shifted boxes by class * 7680 before one NonMaxSuppression: infinite in FP16 from class 9.
    with np.errstate(over="ignore"):
        assert np.isinf(np.float16(9 * 7680.0 + 640))
    model = nms_graph(80)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        half = convert_float_to_float16(model, keep_io_types=True)
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in half.graph.initializer)
    raw = _scenes_80_classes()
    want, got = _run(model, {"raw": raw}), _run(half, {"raw": raw})
    assert np.abs(want - reference_nms(raw)).max() < 1e-4
    for w, g in zip(want, got):
        kept = w[:, 4] > 0
        assert 160 <= kept.sum() <= 3 * 80 + 8 and (w[kept, 5] >= 9).sum() > 100  # some suppressed; classes >= 9
        assert np.array_equal(g[:, 4] > 0, kept) and np.array_equal(g[:, 5], w[:, 5])  # same boxes, same order
        assert np.abs(g[:, :4] - w[:, :4]).max() <= 0.5  # FP16 spacing is 0.5 px between 512 and 1024
        assert np.abs(g[:, 4] - w[:, 4]).max() < 1e-3
        shared = w[kept & (np.abs(w[:, 0] - 275) < 1e-3) & (np.abs(w[:, 1] - 275) < 1e-3)]
        assert sorted(shared[:, 5].tolist()) == list(range(0, 80, 10))


def test_build_yolov8_is_deterministic_when_seed_is_fixed():
    x = torch.rand(1, 3, 640, 640, generator=torch.Generator().manual_seed(0))
    outputs = []
    for _ in range(2):
        model, num_classes, source = build_yolov8(None, seed=0)
        with torch.no_grad():
            outputs.append(model(x))
    assert num_classes == 1 and "random" in source
    assert outputs[0].shape == (1, 5, 8400)
    assert torch.equal(outputs[0], outputs[1])


def test_build_yolov8_takes_num_classes_from_checkpoint_when_given_pt(tmp_path):
    from ultralytics.nn.tasks import DetectionModel  # after builders.nets.yolo set the offline env

    torch.save({"model": DetectionModel("yolov8n.yaml", nc=3, verbose=False).half()}, tmp_path / "best.pt")
    model, num_classes, source = build_yolov8(tmp_path / "best.pt")
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 640, 640)).shape == (1, 7, 8400)
    assert num_classes == 3 and "best.pt" in source


def test_build_yolov8_raises_build_error_when_checkpoint_is_corrupt(tmp_path):
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(BuildError, match="broken.pt"):
        build_yolov8(tmp_path / "broken.pt")


@pytest.fixture(scope="module")
def exported() -> tuple[torch.nn.Module, onnx.ModelProto]:
    model, _, _ = build_yolov8(None, seed=0)
    buffer = io.BytesIO()
    torch.onnx.export(
        model,
        torch.zeros(1, 3, 640, 640),
        buffer,
        dynamo=False,
        opset_version=17,
        input_names=["images"],
        output_names=["raw"],
        dynamic_axes={"images": {0: "batch"}, "raw": {0: "batch"}},
    )
    return model, onnx.load_from_string(buffer.getvalue())


def test_attach_nms_runs_end_to_end_when_batch_is_two(exported):
    model, backbone = exported
    x = torch.rand(2, 3, 640, 640, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want_raw = model(x).numpy()
    got_raw = _run(backbone, {"images": x.numpy()})
    assert np.abs(got_raw - want_raw).max() < 1e-3

    # Untrained scores sit near 0.001; a low threshold makes NMS and the max_det cap do real work.
    merged = attach_nms(backbone, 1, input_name="INPUT__0", output_name="DETECTIONS", score_threshold=0.001)
    assert [i.name for i in merged.graph.input] == ["INPUT__0"]
    assert [o.name for o in merged.graph.output] == ["DETECTIONS"]
    got = _run(merged, {"INPUT__0": x.numpy()})
    assert got.shape == (2, DETECTIONS, 6)
    assert np.abs(got - reference_nms(got_raw, score_threshold=0.001)).max() < 1e-4


def test_is_raw_head_tells_backbone_from_merged_when_given_both(exported):
    _, backbone = exported
    assert [d.dim_param for d in backbone.graph.output[0].type.tensor_type.shape.dim][0] == "batch"
    assert is_raw_head(backbone)  # judged on a real run, not on the declared dims
    assert not is_raw_head(attach_nms(backbone, 1, input_name="images", output_name="detections"))
    assert is_raw_head(backbone, (1, 84, 8400)) and not is_raw_head(backbone, (1, DETECTIONS, 6))
