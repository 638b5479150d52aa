"""`--yolo-weights model.onnx`: files written by ultralytics' own `export(format="onnx")`, through import_onnx."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from builders import vision
from builders.errors import BuildError
from builders.nets.yolo import DETECTIONS, attach_nms, reference_nms
from builders.nets.yolo_import import import_onnx
from tritonyard_contract import DETECTIONS as DETECTIONS_SPEC
from tritonyard_contract import LETTERBOXED

ROOT = Path(__file__).resolve().parents[2]
CLASSES = 80  # yolov8n.yaml's own class count: plenty of classes >= 9
EXPORTS = {  # file stem -> ultralytics export() options; simplify=False: onnxslim is not installed here
    "default": {},
    "opset17": {"opset": 17},
    "opset17_dynamic": {"opset": 17, "dynamic": True},
    "dynamic": {"dynamic": True},
    "nms": {"nms": True},
    "nms_dynamic": {"nms": True, "dynamic": True},
    "imgsz320": {"imgsz": 320},
}

# Run in a child: ultralytics' exporter imports torchvision, which imports only after training.torchvision_shim
# is installed, and not at all once builders.nets.gpt2 (imported by other test modules) has hidden it.
_EXPORT_SCRIPT = """
import json, os, sys, tempfile
from pathlib import Path
os.environ["YOLO_CONFIG_DIR"] = tempfile.mkdtemp()
from training import torchvision_shim

torchvision_shim.install()
import torch
from ultralytics import YOLO

out, exports = Path(sys.argv[1]), json.loads(sys.argv[2])
torch.manual_seed(0)
yolo = YOLO("yolov8n.yaml")
net = yolo.model
# Fresh random init scores every anchor alike (~1e-4): BatchNorm statistics from noise make the output depend on
# the image, and class biases around -5 put a few dozen boxes per image above 0.25 in many classes.
for m in net.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
        m.momentum = None
with torch.no_grad():
    net.train()(torch.rand(1, 3, 640, 640, generator=torch.Generator().manual_seed(3)))
    for seq in net.model[-1].cv3:
        seq[-1].bias.normal_(-5.0, 1.0, generator=torch.Generator().manual_seed(1))
net.eval()
yolo.save(out / "best.pt")
for stem, options in exports.items():
    written = YOLO(out / "best.pt").export(format="onnx", simplify=False, **options)
    os.replace(written, out / f"{stem}.onnx")
"""


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with `{stem}.onnx` for each of EXPORTS, all from one ultralytics `best.pt`."""
    out = tmp_path_factory.mktemp("ultralytics_exports")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    proc = subprocess.run(
        [sys.executable, "-c", _EXPORT_SCRIPT, str(out), json.dumps(EXPORTS)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"ultralytics export failed:\n{proc.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """Two different letterboxed-like images (RGB 0..1)."""
    return np.random.default_rng(7).random((2, 3, 640, 640), dtype=np.float32)


def _run(model: onnx.ModelProto | Path, x: np.ndarray) -> np.ndarray:
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.fixture(scope="module")
def raw_heads(exported: Path, images: np.ndarray) -> np.ndarray:
    """[2, 84, 8400]: ultralytics' dynamic-batch raw export on `images`, the reference for every variant."""
    raw = _run(exported / "dynamic.onnx", images)
    assert raw.shape == (2, 4 + CLASSES, 8400)
    return raw


def _imported(path: Path, **nms_kwargs) -> tuple[onnx.ModelProto, str]:
    return import_onnx(path, input_name=LETTERBOXED.name, output_name=DETECTIONS_SPEC.name, **nms_kwargs)


def _opset(path: Path) -> int:
    return next(o.version for o in onnx.load(str(path), load_external_data=False).opset_import if o.domain == "")


def _batch_dim(path: Path) -> int:
    return onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0].dim_value  # 0: symbolic


@pytest.mark.parametrize("stem", ["default", "opset17", "opset17_dynamic", "dynamic"])
def test_import_onnx_appends_nms_matching_reference_when_export_has_raw_head(
    stem: str, exported: Path, images: np.ndarray, raw_heads: np.ndarray
) -> None:
    path = exported / f"{stem}.onnx"
    assert _opset(path) == EXPORTS[stem].get("opset", 18)  # ultralytics 8.4 with torch 2.13 defaults to opset 18
    assert _batch_dim(path) == (0 if EXPORTS[stem].get("dynamic") else 1)  # 0: symbolic
    model, note = _imported(path)
    assert f"raw head with {CLASSES} classes" in note  # not from the symbolic dim (which gave -4 classes)
    assert ("Scan" in note) == (not EXPORTS[stem].get("dynamic"))
    assert [i.name for i in model.graph.input] == [LETTERBOXED.name]
    assert [o.name for o in model.graph.output] == [DETECTIONS_SPEC.name]
    got = _run(model, images)
    want = reference_nms(raw_heads)
    assert got.shape == (2, DETECTIONS, 6)
    assert (got[:, :, 4] > 0).sum(axis=1).min() >= 5  # real boxes in both images
    assert np.abs(got - want).max() < 1e-2
    one_by_one = np.concatenate([_run(model, images[i : i + 1]) for i in range(2)])
    assert np.abs(got - one_by_one).max() < 1e-4  # batch 2 == two batch-1 runs


def test_per_image_scan_runs_any_batch_when_export_is_batch_1(exported: Path, images: np.ndarray) -> None:
    path = exported / "default.onnx"
    with pytest.raises(Exception, match="index: 0 Got: 2 Expected: 1"):  # onnxruntime's INVALID_ARGUMENT
        _run(path, images)
    model, _ = _imported(path)
    assert any(node.op_type == "Scan" for node in model.graph.node)
    three = np.concatenate([images, images[:1]])
    got = _run(model, three)
    assert got.shape == (3, DETECTIONS, 6) and np.array_equal(got[0], got[2])


def test_import_onnx_uses_ultralytics_nms_when_export_has_nms_true(
    exported: Path, images: np.ndarray, raw_heads: np.ndarray
) -> None:
    path = exported / "nms.onnx"
    assert any(node.op_type == "NonMaxSuppression" for node in onnx.load(str(path)).graph.node)
    model, note = _imported(path)
    assert "ultralytics nms=True" in note and "Scan" in note
    got = _run(model, images)
    # Its defaults are conf=0.25, iou=0.7: our graph at those thresholds, on its raw head, gives the same rows,
    # so the output is x1,y1,x2,y2,score,class in input pixels, sorted by score, zero padded.
    raw_export = onnx.load(str(exported / "dynamic.onnx"))
    want = _run(attach_nms(raw_export, CLASSES, input_name="x", output_name="y", iou_threshold=0.7), images)
    assert got.shape == want.shape == (2, DETECTIONS, 6)
    assert (want[:, :, 4] > 0).sum(axis=1).min() >= 5
    assert np.array_equal(got[:, :, 5], want[:, :, 5])
    assert np.abs(got - want).max() < 1e-2


def test_import_onnx_scans_ultralytics_nms_when_dynamic_export_drops_later_images(
    exported: Path, images: np.ndarray
) -> None:
    path = exported / "nms_dynamic.onnx"
    alone = _run(path, images[1:])
    as_exported = _run(path, images)
    assert (alone[0, :, 4] > 0).any()
    assert not as_exported[1].any()  # ultralytics unrolled its NMS loop for one image: image 2 comes back empty
    model, note = _imported(path)
    assert "ultralytics unrolls its NMS" in note
    got = _run(model, images)
    assert np.abs(got[1] - alone[0]).max() < 1e-2


def test_import_onnx_raises_build_error_when_export_cannot_be_served(exported: Path, tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"imgsz320.onnx.*re-export with imgsz=640"):
        _imported(exported / "imgsz320.onnx")
    model = onnx.load(str(exported / "default.onnx"))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4
    onnx.save(model, tmp_path / "batch4.onnx")
    with pytest.raises(BuildError, match=r"batch4.onnx: batch fixed at 4; re-export it with dynamic=True"):
        _imported(tmp_path / "batch4.onnx")
    model = onnx.load(str(exported / "dynamic.onnx"))
    names = next(p for p in model.metadata_props if p.key == "names")
    names.value = "{0: 'only'}"
    onnx.save(model, tmp_path / "names.onnx")
    with pytest.raises(BuildError, match=r"84 channels \(4 \+ classes\), its metadata 1 names"):
        _imported(tmp_path / "names.onnx")
    next(p for p in model.metadata_props if p.key == "task").value = "pose"
    onnx.save(model, tmp_path / "pose.onnx")
    with pytest.raises(BuildError, match="'pose' model; only detection models"):
        _imported(tmp_path / "pose.onnx")
    with pytest.raises(BuildError, match="does not exist"):
        _imported(tmp_path / "missing.onnx")


def _pixels_as(shape: list[int], scale: list[float]) -> onnx.ModelProto:
    """Dynamic-batch images [B,3,640,640] -> the first pixels of each image as [B, *shape], times `scale`."""
    n, from_array = onnx.helper.make_node, onnx.numpy_helper.from_array
    nodes = [
        n("Reshape", ["images", "flat_shape"], ["flat"]),
        n("Slice", ["flat", "zero", "size", "one"], ["first"]),
        n("Reshape", ["first", "out_shape"], ["part"]),
        n("Mul", ["part", "scale"], ["output0"]),
    ]
    ints = {"flat_shape": [0, -1], "zero": [0], "size": [int(np.prod(shape))], "one": [1], "out_shape": [0, *shape]}
    inits = [from_array(np.asarray(v, np.int64), k) for k, v in ints.items()]
    inits.append(from_array(np.asarray(scale, np.float32).reshape(1, -1, 1), "scale"))
    graph = onnx.helper.make_graph(
        nodes,
        "pixels",
        [onnx.helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, ["batch", 3, 640, 640])],
        [onnx.helper.make_tensor_value_info("output0", onnx.TensorProto.FLOAT, ["batch", *shape])],
        inits,
    )
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8)


def test_import_onnx_keeps_detector_as_is_when_output_is_detection_rows(tmp_path: Path, images: np.ndarray) -> None:
    backbone = _pixels_as([7, 400], [640, 640, 60, 60, 1, 1, 1])  # a raw head of 3 classes, 400 anchors
    onnx.save(attach_nms(backbone, 3, input_name="images", output_name="detections"), tmp_path / "rows.onnx")
    model, note = _imported(tmp_path / "rows.onnx")
    assert "used as exported" in note and "Scan" not in note
    assert not any(node.op_type == "Scan" for node in model.graph.node)
    want = reference_nms(_run(backbone, images))
    assert (want[:, :, 4] > 0).sum(axis=1).min() > 5
    assert np.abs(_run(model, images) - want).max() < 1e-4
    onnx.save(_pixels_as([DETECTIONS, 6], [1] * DETECTIONS), tmp_path / "pixels.onnx")  # unsorted "scores"
    with pytest.raises(BuildError, match="pixels.onnx: the output is not x1,y1,x2,y2,score,class rows"):
        _imported(tmp_path / "pixels.onnx")


def test_export_yolo_writes_servable_model_when_weights_are_default_ultralytics_onnx(
    exported: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    letterboxed = np.random.default_rng(3).random((2, *LETTERBOXED.dims), dtype=np.float32)
    cfg = vision.VisionConfig(yolo_weights=exported / "default.onnx")
    with caplog.at_level(logging.INFO, logger="tritonyard.build"):
        vision._export_yolo(cfg, tmp_path, letterboxed)
    written = tmp_path / "yolov8" / "1" / "model.onnx"
    assert written.is_file()
    assert f"raw head with {CLASSES} classes" in caplog.text
    assert _run(written, letterboxed).shape == (2, *DETECTIONS_SPEC.dims)


def _fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxconverter_common.float16 import convert_float_to_float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "values truncated to FP16" for tiny weights
        return convert_float_to_float16(model, keep_io_types=True)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    inter = np.prod(np.clip(np.minimum(box[2:4], boxes[:, 2:4]) - np.maximum(box[:2], boxes[:, :2]), 0, None), axis=1)
    return inter / (np.prod(box[2:4] - box[:2]) + np.prod(boxes[:, 2:4] - boxes[:, :2], axis=1) - inter)


def test_yolov8n_with_nms_keeps_same_boxes_when_converted_to_fp16(exported: Path, images: np.ndarray) -> None:
    # The batch-1 export: the dynamic one computes anchors through Cast(to=FLOAT), which onnxconverter-common
    # 1.16 leaves FP32 while retyping its output FP16 (onnxruntime then refuses the model).
    backbone = onnx.load(str(exported / "default.onnx"))
    merged = attach_nms(backbone, CLASSES, input_name="x", output_name="y")
    half, half_backbone = _fp16(merged), _fp16(backbone)
    for image in images[:, None]:
        got = _run(half, image)[0]
        # The NMS tail in FP16 selects exactly what FP32 NMS selects on the FP16 backbone's raw head.
        want = reference_nms(_run(half_backbone, image))[0]
        assert np.array_equal(got[:, 5], want[:, 5]) and np.abs(got[:, 4] - want[:, 4]).max() < 1e-3
        assert np.abs(got[:, :4] - want[:, :4]).max() <= 0.5  # FP16 spacing is 0.5 px between 512 and 1024
        got = got[got[:, 4] > 0]
        assert len(got) >= 5 and (got[:, 5] >= 9).sum() >= 5  # classes whose old 7680*class offset overflowed FP16
        # An FP16 backbone moves scores and boxes a little (random weights: up to ~5 px): most confident FP32
        # boxes must still be found, same class, same place.
        fp32 = _run(merged, image)[0]
        confident = fp32[fp32[:, 4] > 0.3]
        found = [((got[:, 5] == row[5]) & (_iou(row, got) > 0.7)).any() for row in confident]
        assert len(confident) >= 5 and np.mean(found) >= 0.8
