"""Import a user's ONNX detector (`--yolo-weights model.onnx`): judge its output on a real run, batch it, and
append the NMS tail of builders.nets.yolo to a raw head."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, compose, helper, numpy_helper

from builders.errors import BuildError
from builders.nets.yolo import DETECTIONS, MAX_OPSET, MIN_OPSET, attach_nms, onnx_opset, rename_tensor
from tritonyard_contract.onnx_session import cpu_session

IMAGE = (3, 640, 640)  # what Triton feeds the detector per image


def _dims(info: onnx.ValueInfoProto) -> list[int | None]:
    """Declared dims; None where symbolic or unknown."""
    return [d.dim_value if d.HasField("dim_value") else None for d in info.type.tensor_type.shape.dim]


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return cpu_session(model.SerializeToString(), threads=None, quiet=True)


def output_shape(model: onnx.ModelProto, label: str = "the model") -> tuple[int, ...]:
    """The single output's real shape for one gray 640x640 image (declared dims may be symbolic or wrong)."""
    try:
        session = _session(model)
        (out,) = session.run(None, {model.graph.input[0].name: np.full((1, *IMAGE), 0.5, np.float32)})
    except Exception as exc:  # onnxruntime raises its own types; the message carries the detail
        raise BuildError(f"{label}: onnxruntime cannot run it on one [1,3,640,640] image ({exc})") from exc
    return tuple(out.shape)


def is_raw_head(model: onnx.ModelProto, shape: tuple[int, ...] | None = None) -> bool:
    """True if the single output is [B, 4+nc, A] (needs NMS); False for [B,300,6] and other layouts.

    Judged on the real output shape of one image (`shape`, else one onnxruntime run): exporters leave output dims
    symbolic once the batch is dynamic (dim_value 0). Raw heads have more anchors than channels.
    """
    if len(model.graph.output) != 1:
        return False
    shape = output_shape(model) if shape is None else shape
    return len(shape) == 3 and shape[1] >= 5 and shape[2] > shape[1]


def per_image_scan(model: onnx.ModelProto) -> onnx.ModelProto:
    """Run a graph whose batch is fixed at 1 once per image: its nodes become the body of a Scan over axis 0.

    Input 'images' [B,...] -> output 'output' [B,...] for any B. Weights stay in the outer graph (the body reads
    them from there); every inner name gets a "per_image/" prefix, so outer names never shadow inner ones.
    """
    inner = compose.add_prefix(model, "per_image/")
    graph, x, y = inner.graph, inner.graph.input[0], inner.graph.output[0]
    x_type, y_type = x.type.tensor_type.elem_type, y.type.tensor_type.elem_type
    item, item_out, axis = "per_image/item", "per_image/item_out", "per_image/axis0"
    body = helper.make_graph(
        [
            helper.make_node("Unsqueeze", [item, axis], [x.name]),
            *graph.node,
            helper.make_node("Squeeze", [y.name, axis], [item_out]),
        ],
        "per_image",
        [helper.make_tensor_value_info(item, x_type, _dims(x)[1:])],
        [helper.make_tensor_value_info(item_out, y_type, _dims(y)[1:])],
        value_info=graph.value_info,
    )
    outer = helper.make_graph(
        [helper.make_node("Scan", ["images"], ["output"], body=body, num_scan_inputs=1)],
        graph.name,
        [helper.make_tensor_value_info("images", x_type, ["batch", *_dims(x)[1:]])],
        [helper.make_tensor_value_info("output", y_type, ["batch", *_dims(y)[1:]])],
        [*graph.initializer, numpy_helper.from_array(np.asarray([0], dtype=np.int64), axis)],
        sparse_initializer=graph.sparse_initializer,
    )
    wrapped = helper.make_model(outer, opset_imports=model.opset_import, ir_version=model.ir_version)
    wrapped.metadata_props.extend(model.metadata_props)
    wrapped.functions.extend(inner.functions)
    return wrapped


def _ultralytics_metadata(model: onnx.ModelProto) -> dict[str, object]:
    """task, names, args, ... as ultralytics' exporter writes them (Python literals as strings); {} if absent."""
    meta: dict[str, object] = {}
    for prop in model.metadata_props:
        try:
            meta[prop.key] = ast.literal_eval(prop.value) if prop.key in ("names", "args") else prop.value
        except (ValueError, SyntaxError):
            meta[prop.key] = prop.value
    return meta


def _check_batch(model: onnx.ModelProto, where: str) -> np.ndarray:
    """A batch of two different images must give what each image gives alone; returns the batch's output."""
    x = np.random.default_rng(0).random((2, *IMAGE), dtype=np.float32)
    session = _session(model)
    name = model.graph.input[0].name
    both = session.run(None, {name: x})[0]
    each = np.concatenate([session.run(None, {name: x[i : i + 1]})[0] for i in range(2)])
    diff = float(np.max(np.abs(both - each))) if both.shape == each.shape else float("inf")
    if not diff <= 1e-3 * max(1.0, float(np.max(np.abs(each)))):
        raise BuildError(f"{where}: a batch of 2 differs from its 2 images run alone ({diff:.3g}); re-export it")
    return both


def _check_detections(rows: np.ndarray, where: str, num_classes: int | None) -> None:
    """Rows must read x1,y1,x2,y2,score,class: score-sorted live rows (score in (0,1], class an index), then zeros."""
    for image in rows:
        count = int((image[:, 4] > 0).sum())
        x1, y1, x2, y2, score, cls = image[:count].T
        valid = (x2 >= x1) & (y2 >= y1) & (score <= 1) & (cls >= 0) & (cls == np.round(cls))
        if not (valid.all() and np.all(np.diff(score) <= 0) and not image[count:].any()) or (
            num_classes is not None and np.any(cls >= num_classes)
        ):
            raise BuildError(f"{where}: the output is not x1,y1,x2,y2,score,class rows sorted by score, zero padded")


def _load_checked(path: Path) -> tuple[onnx.ModelProto, dict[str, object], int | None]:
    """Load a user's ONNX detector; refuse what cannot be served. Returns (model, metadata, declared batch)."""
    where = f"--yolo-weights {path}"
    if not path.is_file():
        raise BuildError(f"{where} does not exist")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf raises DecodeError and others
        raise BuildError(f"{where}: not a readable ONNX model ({exc})") from exc
    meta = _ultralytics_metadata(model)
    if meta.get("task", "detect") != "detect":
        raise BuildError(f"{where}: an ultralytics '{meta['task']}' model; only detection models are served")
    opset = onnx_opset(model)
    if opset is None or not MIN_OPSET <= opset <= MAX_OPSET:
        raise BuildError(f"{where}: opset {opset}; re-export it with an opset in {MIN_OPSET}..{MAX_OPSET}")
    inputs, outputs = len(model.graph.input), len(model.graph.output)
    if inputs != 1 or outputs != 1:
        raise BuildError(f"{where}: {inputs} inputs and {outputs} outputs; a detector with one of each is expected")
    x = model.graph.input[0]
    dims, dtype = _dims(x), x.type.tensor_type.elem_type
    if dtype != TensorProto.FLOAT or len(dims) != 4 or any(d not in (None, w) for d, w in zip(dims[1:], IMAGE)):
        dims_text = ", ".join("?" if d is None else str(d) for d in dims)
        raise BuildError(
            f"{where}: input '{x.name}' is {TensorProto.DataType.Name(dtype)} [{dims_text}]; FLOAT [batch, 3, 640, "
            "640] is expected (re-export with imgsz=640 and no half/int8)"
        )
    if dims[0] not in (None, 1):
        raise BuildError(f"{where}: batch fixed at {dims[0]}; re-export it with dynamic=True")
    return model, meta, dims[0]


def import_onnx(path: Path, *, input_name: str, output_name: str, **nms_kwargs) -> tuple[onnx.ModelProto, str]:
    """Make a user's ONNX detector servable: [B,3,640,640] RGB 0..1 -> [B,300,6], named input_name/output_name.

    Takes what `YOLO(pt).export(format="onnx")` writes (ultralytics 8.4: opset 18 unless `opset=`, batch fixed
    at 1 unless `dynamic=True`) and graphs laid out like it, judged on the output of one real run:
    - raw head [B,4+nc,A]: nc from that output (declared dims are symbolic with dynamic=True), which must agree
      with ultralytics' `names` metadata when present; nms_graph is appended at the model's own opset.
    - detections [B,300,6] x1,y1,x2,y2,score,class in input pixels (`nms=True`, NMS-free heads): used as
      exported, with the thresholds chosen at export.
    A batch fixed at 1 runs once per image inside a Scan over the batch (per_image_scan), and so does
    ultralytics' nms=True graph even with dynamic=True: its NMS loop is unrolled for the export's batch size,
    so further images would come out empty. A batch of 2 must then equal its 2 images run alone.
    Returns the model and a sentence for the build log; BuildError names the file and what to re-export.
    """
    where = f"--yolo-weights {path}"
    model, meta, batch = _load_checked(path)
    shape = output_shape(model, where)
    raw = is_raw_head(model, shape)
    args, names = meta.get("args"), meta.get("names")
    num_classes = len(names) if isinstance(names, dict | list) else None
    ultralytics_nms = isinstance(args, dict) and bool(args.get("nms"))
    notes = [f"ONNX {path.name}, opset {onnx_opset(model)}"]
    if raw:
        if num_classes is not None and num_classes != shape[1] - 4:
            raise BuildError(
                f"{where}: the output has {shape[1]} channels (4 + classes), its metadata {num_classes} names"
            )
        notes.append(f"raw head with {shape[1] - 4} classes + NMS graph")
    elif len(shape) == 3 and shape[1:] == (DETECTIONS, 6):
        notes.append("detections with NMS inside, used as exported" + (" (ultralytics nms=True)" * ultralytics_nms))
    else:
        raise BuildError(
            f"{where}: output '{model.graph.output[0].name}' is {list(shape)} for one image; a raw YOLO head "
            f"[1, 4+classes, anchors] or detections [1, {DETECTIONS}, 6] is expected (re-export, max_det={DETECTIONS})"
        )
    if ultralytics_nms and not raw:
        model = per_image_scan(model)
        notes.append("ultralytics unrolls its NMS for a fixed batch: runs once per image in a Scan")
    elif batch == 1:
        model = per_image_scan(model)
        notes.append("batch fixed at 1 by the export: runs once per image in a Scan (dynamic=True batches natively)")
    rows = _check_batch(model, where)
    if raw:
        model = attach_nms(model, shape[1] - 4, input_name=input_name, output_name=output_name, **nms_kwargs)
        return model, "; ".join(notes)
    _check_detections(rows, where, num_classes)
    rename_tensor(model.graph, model.graph.input[0].name, input_name)
    rename_tensor(model.graph, model.graph.output[0].name, output_name)
    onnx.checker.check_model(model)
    return model, "; ".join(notes)
