"""The generic onnxruntime model.py, from a version folder the builder wrote, driven through the stubbed pb_utils."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from builders import repository
from builders.triton_config import OnnxModel, OutputCheck, Target
from tests.backends.pb_utils_stub import Request, TritonError, load_model, output
from tritonyard_contract import TensorSpec

X = TensorSpec("x", "TYPE_FP32", (2,))
Y = TensorSpec("y", "TYPE_FP32", (2,))


def _add_one_model(version_dir: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "one"], ["y"])],
        "add_one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    version_dir.mkdir(parents=True)
    onnx.save(model, str(version_dir / "model.onnx"))


def _build(repo: Path, spec: OnnxModel) -> Path:
    """add_one as the builder writes it for the cpu target: model.onnx, config.pbtxt and the shipped runner."""
    _add_one_model(repo / spec.name / "1")
    repository.add_model(repo, spec, Target("cpu"))
    return repo / spec.name


def _load(tmp_path: Path, concat: bool, threads: int = 1):
    return load_model(_build(tmp_path, OnnxModel("add_one", (X,), (Y,), cpu_threads=threads, concat_batch=concat)))


@pytest.mark.parametrize("concat", [True, False])
def test_onnx_runtime_answers_each_request_when_batched(tmp_path: Path, concat: bool) -> None:
    model = _load(tmp_path, concat)
    inputs = [np.array([[1, 2]], np.float32), np.array([[3, 4], [5, 6]], np.float32), np.array([[7, 8]], np.float32)]
    responses = model.execute([Request(x=a) for a in inputs])
    assert [r.has_error() for r in responses] == [False] * 3
    for a, r in zip(inputs, responses):
        np.testing.assert_array_equal(output(r, "y"), a + 1)


def test_onnx_runtime_fails_only_the_bad_request_when_one_input_is_malformed(tmp_path: Path) -> None:
    model = _load(tmp_path, concat=True)
    good = np.ones((1, 2), np.float32)
    responses = model.execute([Request(x=good), Request(x=np.ones((1, 3), np.float32)), Request(x=good)])
    assert [r.has_error() for r in responses] == [False, True, False]
    assert responses[1].error().code() == TritonError.INTERNAL
    assert "add_one" in responses[1].error().message()
    np.testing.assert_array_equal(output(responses[2], "y"), good + 1)


def test_onnx_runtime_refuses_to_start_when_threads_are_invalid(tmp_path: Path) -> None:
    model_dir = _build(tmp_path, OnnxModel("add_one", (X,), (Y,), cpu_threads=1))
    with pytest.raises(ValueError, match="intra_op_threads"):
        load_model(model_dir, parameters={"intra_op_threads": "0"})


def test_onnx_runtime_blames_the_input_when_an_output_check_fails(tmp_path: Path) -> None:
    check = OutputCheck("y", 0.0, 10.0, "x", "values must be finite numbers in -1..9")
    model = load_model(_build(tmp_path, OnnxModel("add_one", (X,), (Y,), cpu_threads=1, output_checks=(check,))))
    good = np.ones((1, 2), np.float32)
    bad = [np.array([[np.nan, 1]], np.float32), np.array([[np.inf, 1]], np.float32), np.array([[1, 99]], np.float32)]
    responses = model.execute([Request(x=good), *(Request(x=b) for b in bad), Request(x=good)])
    assert [r.has_error() for r in responses] == [False, True, True, True, False]
    for r in responses[1:4]:
        assert r.error().code() == TritonError.INVALID_ARG
        assert r.error().message() == "x: values must be finite numbers in -1..9"
    np.testing.assert_array_equal(output(responses[4], "y"), good + 1)


def test_onnx_runtime_writes_execute_timings_at_finalize_when_the_benchmark_variable_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    timings = tmp_path / "timings"
    timings.mkdir()
    monkeypatch.setenv("TRITONYARD_STUB_TIMINGS", str(timings))
    model = _load(tmp_path / "repo", concat=False)
    model.execute([Request(x=np.ones((1, 2), np.float32)), Request(x=np.ones((1, 2), np.float32))])
    assert list(timings.iterdir()) == []  # nothing written while serving
    model.finalize()
    [path] = timings.glob("add_one-*.jsonl")
    [record] = [json.loads(line) for line in path.read_text().splitlines()]
    assert record["model"] == "add_one" and record["requests"] == 2
    assert record["entered_ns"] < record["left_ns"] and 0 < record["run_ns"] <= record["left_ns"] - record["entered_ns"]
