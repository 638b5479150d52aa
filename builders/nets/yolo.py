"""YOLOv8 detector plus an ONNX class-aware NMS tail, so Triton serves boxes instead of raw anchors."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, compose, helper, numpy_helper

from builders.errors import BuildError

# ultralytics reads these at import time; without them it tries to download fonts/weights and write to ~/.config.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")
if "YOLO_CONFIG_DIR" not in os.environ:
    os.environ["YOLO_CONFIG_DIR"] = tempfile.mkdtemp(prefix="ultralytics-")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from ultralytics.nn.modules import Detect, v10Detect
from ultralytics.nn.tasks import DetectionModel, load_checkpoint

DETECTIONS = 300  # rows of the output, zero padded
MAX_WH = 7680.0  # per-class box offset; larger than any box coordinate, so classes never overlap in NMS


def build_yolov8(
    weights: Path | None, variant: str = "yolov8n", num_classes: int = 1, seed: int = 0
) -> tuple[torch.nn.Module, int, str]:
    """Return (eval module: x [B,3,640,640] in 0..1 -> raw [B,4+nc,8400], num_classes, weights' source).

    weights None: seeded random init of `{variant}.yaml` (same seed => identical weights; nothing is downloaded).
    weights *.pt: an ultralytics checkpoint via `ultralytics.nn.tasks.load_checkpoint`; num_classes comes from it.
    """
    if weights is not None and (Path(weights).suffix != ".pt" or not Path(weights).is_file()):
        raise BuildError(f"YOLO weights {weights}: expected an existing ultralytics *.pt checkpoint")
    try:
        if weights is None:
            torch.manual_seed(seed)
            model = DetectionModel(f"{variant}.yaml", nc=num_classes, verbose=False)
            source = f"random init of {variant}.yaml (seed={seed}, nc={num_classes}); untrained, for plumbing only"
        else:
            model, _ = load_checkpoint(weights, device="cpu", fuse=False)
            source = f"ultralytics checkpoint {Path(weights).name}"
    except Exception as exc:  # torch/pickle/yaml raise many types; the message carries the detail
        raise BuildError(f"YOLO {weights or variant}: ultralytics could not build/load it ({exc})") from exc
    head = model.model[-1]
    # One-to-many branch (xywh, needs NMS); NMS-free v10/26 heads would otherwise emit [B,300,6].
    if type(head) not in (Detect, v10Detect) or head.cv2 is None:  # Segment, Pose, ... subclass Detect
        raise BuildError(f"YOLO {weights or variant}: not a YOLO detection model with a one-to-many (NMS) head")
    head.end2end, head.xyxy = False, False
    head.export = True  # return the decoded tensor alone instead of (tensor, feature dict)
    num_classes = int(head.nc)
    model = model.eval().fuse(verbose=False).eval()  # fold BN into convs: smaller, faster export
    return model, num_classes, source


def _const(name: str, value: list | float, dtype: type = np.int64) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def nms_graph(
    num_classes: int,
    *,
    iou_threshold: float = 0.45,
    score_threshold: float = 0.25,
    max_det: int = DETECTIONS,
    opset: int = 17,
) -> onnx.ModelProto:
    """ONNX graph 'raw' [B,4+nc,A] (B, A dynamic) -> 'detections' [B,max_det,6].

    Rows are x1,y1,x2,y2,score,class sorted by score descending; rows past the survivors are all zeros.
    Classes are kept apart by shifting boxes by class*MAX_WH before one single-class NonMaxSuppression.
    Scores are padded with max_det zeros before TopK, so any anchor count A works (even A < max_det).
    """
    if not 13 <= opset <= 17:  # ReduceMax takes axes as an attribute only up to 17; Pad/Unsqueeze inputs need 13
        raise BuildError(f"nms_graph supports opset 13..17, got {opset}")
    channels = 4 + num_classes
    n = helper.make_node
    nodes = [
        n("Slice", ["raw", "i0", "i2", "i1"], ["xy"]),  # [B,2,A] centres
        n("Slice", ["raw", "i2", "i4", "i1"], ["wh"]),
        n("Slice", ["raw", "i4", "ic", "i1"], ["cls_scores"]),  # [B,nc,A]
        n("Mul", ["wh", "half"], ["half_wh"]),
        n("Sub", ["xy", "half_wh"], ["x1y1"]),
        n("Add", ["xy", "half_wh"], ["x2y2"]),
        n("Concat", ["x1y1", "x2y2"], ["xyxy_t"], axis=1),
        n("Transpose", ["xyxy_t"], ["boxes"], perm=[0, 2, 1]),  # [B,A,4]
        n("ReduceMax", ["cls_scores"], ["score"], axes=[1], keepdims=0),  # [B,A]
        n("ArgMax", ["cls_scores"], ["cls"], axis=1, keepdims=0),
        n("Cast", ["cls"], ["cls_f"], to=TensorProto.FLOAT),
        n("Mul", ["cls_f", "max_wh"], ["offset"]),
        n("Unsqueeze", ["offset", "i2"], ["offset3"]),
        n("Add", ["boxes", "offset3"], ["nms_boxes"]),  # classes moved apart: one NMS pass is class-aware
        n("Unsqueeze", ["score", "i1"], ["nms_scores"]),  # [B,1,A]: a single NMS "class"
        n("NonMaxSuppression", ["nms_boxes", "nms_scores", "max_out", "iou", "thr"], ["selected"], center_point_box=0),
        n("Gather", ["selected", "batch_box"], ["pairs"], axis=1),  # [N,2] (batch, box)
        n("Shape", ["selected"], ["sel_shape"]),
        n("Slice", ["sel_shape", "i0", "i1", "i0"], ["n_sel"]),
        n("ConstantOfShape", ["n_sel"], ["ones"], value=_const("one", [1.0], np.float32)),
        n("Shape", ["score"], ["score_shape"]),
        n("ConstantOfShape", ["score_shape"], ["zeros"], value=_const("zero", [0.0], np.float32)),
        n("ScatterND", ["zeros", "pairs", "ones"], ["keep"]),  # [B,A] 1 where NMS kept the box
        n("Mul", ["score", "keep"], ["kept"]),
        n("Unsqueeze", ["kept", "i2"], ["kept3"]),
        n("Unsqueeze", ["cls_f", "i2"], ["cls3"]),
        n("Concat", ["boxes", "kept3", "cls3"], ["rows"], axis=2),  # [B,A,6]
        n("Pad", ["kept", "pad2"], ["kept_p"]),  # >= max_det columns, so TopK's K is constant
        n("Pad", ["rows", "pad3"], ["rows_p"]),
        n("TopK", ["kept_p", "k"], ["top", "top_idx"], axis=1, largest=1, sorted=1),
        n("Unsqueeze", ["top_idx", "i2"], ["top_idx3"]),
        n("Tile", ["top_idx3", "tile6"], ["idx6"]),
        n("GatherElements", ["rows_p", "idx6"], ["picked"], axis=1),
        n("Unsqueeze", ["top", "i2"], ["top3"]),
        n("Greater", ["top3", "zero_f"], ["live"]),
        n("Where", ["live", "picked", "zero_f"], ["detections"]),  # Where, not Mul: no NaN from 0*inf
    ]
    inits = [
        _const("i0", [0]), _const("i1", [1]), _const("i2", [2]), _const("i4", [4]), _const("ic", [channels]),
        _const("half", 0.5, np.float32), _const("max_wh", MAX_WH, np.float32), _const("zero_f", 0.0, np.float32),
        _const("max_out", [max_det]), _const("iou", [iou_threshold], np.float32),
        _const("thr", [score_threshold], np.float32), _const("batch_box", [0, 2]), _const("k", [max_det]),
        _const("pad2", [0, 0, 0, max_det]), _const("pad3", [0, 0, 0, 0, max_det, 0]), _const("tile6", [1, 1, 6]),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "yolo_nms",
        [helper.make_tensor_value_info("raw", TensorProto.FLOAT, ["batch", channels, "anchors"])],
        [helper.make_tensor_value_info("detections", TensorProto.FLOAT, ["batch", max_det, 6])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8  # helper stamps the newest IR, which onnxruntime rejects; 8 covers opsets 13..17
    return model


def reference_nms(
    raw: np.ndarray, *, iou_threshold: float = 0.45, score_threshold: float = 0.25, max_det: int = DETECTIONS
) -> np.ndarray:
    """Greedy class-aware NMS in numpy with nms_graph's semantics: [B,4+nc,A] -> [B,max_det,6].

    Mirrors onnxruntime's float32 arithmetic (offset boxes, score > threshold, IoU > threshold suppresses),
    so a comparison against the graph does not flicker on boxes right at the IoU threshold.
    """
    raw = np.asarray(raw, dtype=np.float32)
    out = np.zeros((raw.shape[0], max_det, 6), np.float32)
    iou_thr = np.float32(iou_threshold)
    for b, pred in enumerate(raw):
        half = pred[2:4].T * np.float32(0.5)
        boxes = np.concatenate([pred[:2].T - half, pred[:2].T + half], axis=1)
        score, cls = pred[4:].max(axis=0), pred[4:].argmax(axis=0).astype(np.float32)
        shifted = boxes + (cls * np.float32(MAX_WH))[:, None]
        lo, hi = np.minimum(shifted[:, :2], shifted[:, 2:]), np.maximum(shifted[:, :2], shifted[:, 2:])
        area = np.prod(hi - lo, axis=1)
        order = np.argsort(-score, kind="stable")
        order = order[score[order] > np.float32(score_threshold)]
        keep: list[int] = []
        while order.size and len(keep) < max_det:
            i, rest = order[0], order[1:]
            keep.append(i)
            wh = np.clip(np.minimum(hi[i], hi[rest]) - np.maximum(lo[i], lo[rest]), 0, None)
            inter = wh[:, 0] * wh[:, 1]
            union = area[i] + area[rest] - inter
            iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0).astype(np.float32)
            order = rest[iou <= iou_thr]
        out[b, : len(keep)] = np.column_stack([boxes[keep], score[keep], cls[keep]])
    return out


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename a tensor in the top-level graph; a clash with an existing name fails check_model (SSA)."""
    for node in graph.node:
        node.input[:] = [new if x == old else x for x in node.input]
        node.output[:] = [new if x == old else x for x in node.output]
    for info in [*graph.input, *graph.output, *graph.value_info]:
        if info.name == old:
            info.name = new


def attach_nms(
    backbone: onnx.ModelProto, num_classes: int, *, input_name: str, output_name: str, **nms_kwargs
) -> onnx.ModelProto:
    """Append nms_graph to a one-input, one-output backbone; name the result's input/output as Triton expects."""
    if len(backbone.graph.input) != 1 or len(backbone.graph.output) != 1:
        raise BuildError("attach_nms: the backbone must have exactly one input and one output")
    opset = next((o.version for o in backbone.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset != 17:  # both halves must share one opset (and IR version); NMS is written for 17
        try:
            backbone = onnx.version_converter.convert_version(backbone, 17)
        except Exception as exc:
            raise BuildError(f"attach_nms: cannot convert the backbone from opset {opset} to 17 ({exc})") from exc
        backbone.ir_version = max(backbone.ir_version, 8)  # a copy: the caller's model is left as it was
    nms = nms_graph(num_classes, opset=17, **nms_kwargs)
    nms.ir_version = backbone.ir_version
    # merge_models prefixes io_map's right side itself; "nms/" keeps NMS names clear of the backbone's.
    merged = compose.merge_models(backbone, nms, io_map=[(backbone.graph.output[0].name, "raw")], prefix2="nms/")
    _rename(merged.graph, merged.graph.input[0].name, input_name)
    _rename(merged.graph, merged.graph.output[0].name, output_name)
    onnx.checker.check_model(merged)
    return merged


def is_raw_head(model: onnx.ModelProto) -> bool:
    """True if the single output looks like [B, 4+nc, A] (needs NMS); False for [B,300,6] and other layouts.

    The torchscript exporter leaves every output dim symbolic once the batch is dynamic, so unknown dims count
    as compatible; a known last dim of 6 marks finished detections (raw heads have thousands of anchors there).
    """
    if len(model.graph.output) != 1:
        return False
    dims = [d.dim_value if d.HasField("dim_value") else None for d in model.graph.output[0].type.tensor_type.shape.dim]
    if len(dims) != 3 or dims[2] == 6 or (dims[1] is not None and dims[1] < 5):
        return False
    return None in dims[1:] or dims[2] > dims[1]  # anchors outnumber channels in the raw layout
