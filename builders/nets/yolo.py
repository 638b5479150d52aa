"""YOLOv8 detector and its ONNX class-aware NMS tail (so Triton serves boxes, not raw anchors), with the numpy
reference NMS. Importing a user's ONNX detector is builders.nets.yolo_import."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, compose, helper, numpy_helper

from builders.errors import BuildError
from builders.offline import stay_offline

stay_offline()  # before ultralytics, which reads the variables when imported
from ultralytics.nn.modules import Detect, v10Detect  # noqa: E402
from ultralytics.nn.tasks import DetectionModel, load_checkpoint  # noqa: E402

DETECTIONS = 300  # rows of the output, zero padded
MIN_OPSET = 13  # Unsqueeze/Squeeze/Pad take axes and pads as inputs from opset 13 on
MAX_OPSET = min(28, onnx.defs.onnx_opset_version())  # 28: the newest ai.onnx opset onnxruntime 1.32 has kernels for


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
    """ONNX graph 'raw' [B,4+nc,A] (B, A dynamic) -> 'detections' [B,max_det,6], for any opset MIN..MAX_OPSET.

    Rows are x1,y1,x2,y2,score,class sorted by score descending; rows past the survivors are all zeros.
    Class-aware through NonMaxSuppression's own classes: scores [B,nc,A] keep each anchor's score in its argmax
    class only (0 elsewhere), so an anchor is never selected twice and boxes stay in pixels. No class*offset
    shift: that reached 7680*(nc-1) and overflowed FP16 (max 65504) from class 9 on under TensorRT FP16.
    Scores are padded with max_det zeros before TopK, so any anchor count A works (even A < max_det).
    """
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise BuildError(f"nms_graph supports opset {MIN_OPSET}..{MAX_OPSET}, got {opset}")
    if not score_threshold >= 0:  # a class's masked-out scores are 0 and must never pass
        raise BuildError(f"nms_graph: score_threshold must be >= 0, got {score_threshold}")
    channels = 4 + num_classes
    n = helper.make_node
    if opset >= 18:  # ReduceMax takes axes as an input from opset 18 on
        reduce_max = n("ReduceMax", ["cls_scores", "i1"], ["score"], keepdims=0)
    else:
        reduce_max = n("ReduceMax", ["cls_scores"], ["score"], axes=[1], keepdims=0)
    nodes = [
        n("Slice", ["raw", "i0", "i2", "i1"], ["xy"]),  # [B,2,A] centres
        n("Slice", ["raw", "i2", "i4", "i1"], ["wh"]),
        n("Slice", ["raw", "i4", "ic", "i1"], ["cls_scores"]),  # [B,nc,A]
        n("Mul", ["wh", "half"], ["half_wh"]),
        n("Sub", ["xy", "half_wh"], ["x1y1"]),
        n("Add", ["xy", "half_wh"], ["x2y2"]),
        n("Concat", ["x1y1", "x2y2"], ["xyxy_t"], axis=1),
        n("Transpose", ["xyxy_t"], ["boxes"], perm=[0, 2, 1]),  # [B,A,4]
        reduce_max,  # [B,A]
        n("ArgMax", ["cls_scores"], ["cls"], axis=1, keepdims=0),  # first of tied maxima, like numpy
        n("Gather", ["class_values", "cls"], ["cls_f"], axis=0),  # class as float; no Cast(to=FLOAT) to retype
        n("Unsqueeze", ["cls", "i1"], ["cls_row"]),  # [B,1,A]
        n("Equal", ["class_ids", "cls_row"], ["own_class"]),  # [B,nc,A]: true in each anchor's argmax class only
        n("Where", ["own_class", "cls_scores", "zero_f"], ["nms_scores"]),
        n("NonMaxSuppression", ["boxes", "nms_scores", "max_out", "iou", "thr"], ["selected"], center_point_box=0),
        n("Gather", ["selected", "batch_box"], ["pairs"], axis=1),  # [N,2] (batch, box); each box at most once
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
    for node in nodes:  # unique node names: tools such as the FP16 converter name their Casts after them
        node.name = node.output[0]
    inits = [
        _const("i0", [0]),
        _const("i1", [1]),
        _const("i2", [2]),
        _const("i4", [4]),
        _const("ic", [channels]),
        _const("half", 0.5, np.float32),
        _const("zero_f", 0.0, np.float32),
        _const("class_ids", np.arange(num_classes).reshape(1, num_classes, 1)),
        _const("class_values", np.arange(num_classes), np.float32),
        _const("max_out", [max_det]),
        _const("iou", [iou_threshold], np.float32),
        _const("thr", [score_threshold], np.float32),
        _const("batch_box", [0, 2]),
        _const("k", [max_det]),
        _const("pad2", [0, 0, 0, max_det]),
        _const("pad3", [0, 0, 0, 0, max_det, 0]),
        _const("tile6", [1, 1, 6]),
    ]
    graph = helper.make_graph(
        nodes,
        "yolo_nms",
        [helper.make_tensor_value_info("raw", TensorProto.FLOAT, ["batch", channels, "anchors"])],
        [helper.make_tensor_value_info("detections", TensorProto.FLOAT, ["batch", max_det, 6])],
        inits,
    )
    opsets = [helper.make_opsetid("", opset)]
    # helper.make_model stamps the newest IR, which older onnxruntime builds reject; take the opset's own.
    return helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))


def reference_nms(
    raw: np.ndarray, *, iou_threshold: float = 0.45, score_threshold: float = 0.25, max_det: int = DETECTIONS
) -> np.ndarray:
    """Greedy class-aware NMS in numpy with nms_graph's semantics: [B,4+nc,A] -> [B,max_det,6].

    Each anchor competes in its argmax class only; per class, the best box suppresses the boxes it overlaps
    with IoU > threshold; survivors of all classes are sorted by score (then anchor) and cut to max_det.
    Mirrors onnxruntime's float32 arithmetic (score > threshold; no suppression by empty boxes), so a
    comparison against the graph does not flicker on boxes right at the IoU threshold.
    """
    raw = np.asarray(raw, dtype=np.float32)
    out = np.zeros((raw.shape[0], max_det, 6), np.float32)
    iou_thr = np.float32(iou_threshold)
    for b, pred in enumerate(raw):
        half = pred[2:4].T * np.float32(0.5)
        boxes = np.concatenate([pred[:2].T - half, pred[:2].T + half], axis=1)
        score, cls = pred[4:].max(axis=0), pred[4:].argmax(axis=0)
        lo, hi = np.minimum(boxes[:, :2], boxes[:, 2:]), np.maximum(boxes[:, :2], boxes[:, 2:])
        area = np.prod(hi - lo, axis=1)
        keep: list[int] = []
        for c in np.unique(cls):
            order = np.flatnonzero((cls == c) & (score > np.float32(score_threshold)))
            order = order[np.argsort(-score[order], kind="stable")]
            kept_here = 0
            while order.size and kept_here < max_det:
                i, rest = order[0], order[1:]
                keep.append(i)
                kept_here += 1
                wh = np.clip(np.minimum(hi[i], hi[rest]) - np.maximum(lo[i], lo[rest]), 0, None)
                inter = wh[:, 0] * wh[:, 1]
                union = area[i] + area[rest] - inter
                valid = (inter > 0) & (area[i] > 0) & (area[rest] > 0) & (union > 0)
                iou = np.where(valid, inter / np.where(valid, union, 1), 0).astype(np.float32)
                order = rest[iou <= iou_thr]
        keep = sorted(keep, key=lambda i: (-score[i], i))[:max_det]
        out[b, : len(keep)] = np.column_stack([boxes[keep], score[keep], cls[keep].astype(np.float32)])
    return out


def rename_tensor(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename a tensor in the top-level graph; a clash with an existing name fails check_model (SSA)."""
    for node in graph.node:
        node.input[:] = [new if x == old else x for x in node.input]
        node.output[:] = [new if x == old else x for x in node.output]
    for info in [*graph.input, *graph.output, *graph.value_info]:
        if info.name == old:
            info.name = new


def onnx_opset(model: onnx.ModelProto) -> int | None:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def attach_nms(
    backbone: onnx.ModelProto, num_classes: int, *, input_name: str, output_name: str, **nms_kwargs
) -> onnx.ModelProto:
    """Append nms_graph to a one-input, one-output backbone; name the result's input/output as Triton expects.

    The NMS graph is written for the backbone's own opset (MIN_OPSET..MAX_OPSET): no version conversion, which
    has no adapters for several ops (ultralytics' default opset-18 export fails on Split).
    """
    if len(backbone.graph.input) != 1 or len(backbone.graph.output) != 1:
        raise BuildError("attach_nms: the backbone must have exactly one input and one output")
    opset = onnx_opset(backbone)
    if opset is None or not MIN_OPSET <= opset <= MAX_OPSET:
        raise BuildError(f"attach_nms: backbone opset {opset}; re-export it with an opset in {MIN_OPSET}..{MAX_OPSET}")
    nms = nms_graph(num_classes, opset=opset, **nms_kwargs)
    ir_version = max(backbone.ir_version, nms.ir_version)  # merge_models needs one IR version on both sides
    if backbone.ir_version != ir_version:
        backbone = onnx.ModelProto.FromString(backbone.SerializeToString())  # the caller's model stays as it was
        backbone.ir_version = ir_version
    nms.ir_version = ir_version
    # merge_models prefixes io_map's right side itself; "nms/" keeps NMS names clear of the backbone's.
    merged = compose.merge_models(backbone, nms, io_map=[(backbone.graph.output[0].name, "raw")], prefix2="nms/")
    rename_tensor(merged.graph, merged.graph.input[0].name, input_name)
    rename_tensor(merged.graph, merged.graph.output[0].name, output_name)
    onnx.checker.check_model(merged)
    return merged
