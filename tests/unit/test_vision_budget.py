"""The vision benchmark's pieces that need no server: the latency budget's arithmetic over a Triton trace and
stub timings, the FastAPI baseline's answer format, the targets' verdicts, the tuning score and the builder's
--threads flag that `make tune` writes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from builders import __main__ as cli
from builders.errors import BuildError
from loadtests import profile_vision as pv
from loadtests import report_vision, tune
from loadtests.baselines.fastapi_server import encode_answer, parse_answer
from tritonyard_contract import CROP, DETECTIONS, OIL_PCT

MS = 1_000_000


def _trace_records(rid: str, t0: int) -> list[dict]:
    """One HTTP request to `ensemble` with two steps (one with a stub timer), as Triton's trace file holds it."""
    top = [("HTTP_RECV_START", 10), ("REQUEST_START", 12), ("REQUEST_END", 112), ("HTTP_SEND_END", 115)]
    step_a = [("REQUEST_START", 13), ("QUEUE_START", 13), ("COMPUTE_START", 15), ("COMPUTE_INPUT_END", 20)]
    step_a += [("COMPUTE_OUTPUT_START", 60), ("COMPUTE_END", 65), ("REQUEST_END", 66)]
    step_b = [("REQUEST_START", 70), ("QUEUE_START", 70), ("COMPUTE_START", 71), ("COMPUTE_INPUT_END", 72)]
    step_b += [("COMPUTE_OUTPUT_START", 100), ("COMPUTE_END", 101), ("REQUEST_END", 102)]

    def stamps(pairs):
        return [{"name": n, "ns": t0 + ms * MS} for n, ms in pairs]

    return [
        {"id": 1, "model_name": "ensemble", "model_version": 1, "request_id": rid, "parent_id": 0},
        {"id": 1, "timestamps": stamps(top)},
        {"id": 2, "model_name": "yolov8", "model_version": 1, "request_id": rid, "parent_id": 1},
        {"id": 2, "timestamps": stamps(step_a)},
        {"id": 3, "model_name": "image_decoder", "model_version": 1, "request_id": rid, "parent_id": 1},
        {"id": 3, "timestamps": stamps(step_b)},
    ]


def test_budget_categories_add_up_to_the_client_latency_when_trace_and_stub_timings_align(tmp_path: Path) -> None:
    t0 = 5_000 * MS
    trace_file = tmp_path / "trace.json"
    trace_file.write_text(json.dumps(_trace_records("bench-1", t0)))
    stubs = {"yolov8": [(t0 + 25 * MS, 30 * MS, t0 + 58 * MS)]}  # execute 25..58 ms, session.run 30 ms
    mark = ("bench-1", t0, t0 + 120 * MS)  # the client sent at 0 and had its answer at 120 ms
    budget = pv.summarize({("shm", 1): [mark]}, pv.read_trace(trace_file), stubs, {"yolov8": 20.0})
    b = budget["shm"]["1"]
    cats = b["categories"]
    assert b["requests"] == 1 and b["untraced"] == 0
    assert math.isclose(sum(cats.values()), 120.0, abs_tol=0.05)
    assert cats["client write + transport"] == pytest.approx(15.0)  # 120 - (115 - 10)
    assert cats["HTTP frontend"] == pytest.approx(5.0)  # 105 - 100 of the ensemble
    assert cats["queue"] == pytest.approx(2 + 1)
    assert cats["input copies"] == pytest.approx(10 + 1)  # yolov8 15 -> 25; the decoder's own 71 -> 72
    assert cats["ONNX run, in-process time"] == pytest.approx(20.0)
    assert cats["ONNX run above in-process"] == pytest.approx(10.0)
    assert cats["rest of execute (Python)"] == pytest.approx(3.0)  # 33 ms in execute - 30 ms run
    assert cats["image_decoder execute"] == pytest.approx(28.0)
    assert cats["output copies"] == pytest.approx(7 + 1)  # 58 -> 65, 100 -> 101
    assert cats["ensemble overhead"] == pytest.approx(100 - 52 - 31)
    assert list(b["steps"]) == ["yolov8", "image_decoder"] and b["steps"]["yolov8"]["run_ms"] == pytest.approx(30)


def test_budget_counts_a_request_as_untraced_when_its_id_is_not_in_the_trace(tmp_path: Path) -> None:
    trace = {1: {"ts": {}, "model_name": "ensemble", "request_id": "other"}}
    budget = pv.summarize({("jpeg", 4): [("bench-9", 0, 1)]}, trace, {}, {})
    assert budget["jpeg"]["4"]["requests"] == 0 and budget["jpeg"]["4"]["untraced"] == 1


def test_fastapi_answer_round_trips_the_three_outputs_when_encoded_and_parsed() -> None:
    rng = np.random.default_rng(0)
    arrays = [rng.random((1, *t.dims), dtype=np.float32) for t in (DETECTIONS, CROP, OIL_PCT)]
    for got, want in zip(parse_answer(encode_answer(*arrays)), arrays):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="expected"):
        parse_answer(b"\0" * 12)


def _row(c: int, fps: float, p99: float = 100.0) -> dict:
    return {"concurrency": c, "throughput_per_s": fps, "p99_ms": p99, "p50_ms": p99 / 2}


def test_targets_give_each_verdict_when_figures_meet_or_miss_them() -> None:
    results = {
        "plan": {"baseline_concurrency": 4},
        "floor": {"throughput_per_s": 10.0},
        "served": {"http_binary": [_row(1, 3.0), _row(4, 2.5)], "jpeg": [_row(1, 5.0), _row(4, 9.0, 90)]},
        "fastapi": {"fastapi_binary": [_row(1, 4.0), _row(4, 5.0)], "fastapi_jpeg": [_row(1, 4.0), _row(4, 8.0)]},
        "warmup": {"entries": {"ensemble": {"first_ms": 110.0, "steady_ms": 100.0}}},
    }
    verdicts = [t["verdict"] for t in report_vision.targets(results)]
    # FP32 and JPEG vs FastAPI, p99, served/floor (jpeg c=4: 0.9x), c=4 vs c=1, first request (1.1x)
    assert verdicts == ["**missed**", "met", "met", "met", "**missed**", "met"]
    results.pop("warmup")
    assert report_vision.targets(results)[-1]["verdict"] == "not measured"


def test_tune_score_penalises_a_candidate_when_throughput_falls_with_concurrency() -> None:
    steady = {"shm": {"1": 4.0, "4": 4.0}, "jpeg": {"1": 4.0, "4": 9.0}}
    falling = {"shm": {"1": 5.0, "4": 4.0}, "jpeg": {"1": 4.0, "4": 9.0}}
    assert tune.score(steady) == pytest.approx(6.0)
    assert tune.score(falling) == pytest.approx(6.0 * tune.FALL_PENALTY)


def test_builder_sets_per_model_threads_when_threads_are_given_inline_or_from_a_file(tmp_path: Path) -> None:
    from builders import vision

    flags = tmp_path / "cpu.args"
    flags.write_text("--threads\nyolov8=1,preprocessing=2\n--instances\nimage_decoder=2\n")
    cfg = cli.vision_config([f"@{flags}"])
    threads = {s.name: s.cpu_threads for s in vision.specs(cfg) if hasattr(s, "cpu_threads")}
    assert threads["yolov8"] == 1 and threads["preprocessing"] == 2 and threads["efficientnet_v2"] == 2
    assert cfg.policies["image_decoder"].instances == 2
    with pytest.raises(BuildError, match="not an ONNX model"):
        vision.specs(cli.vision_config(["--threads", "image_decoder=2"]))
    with pytest.raises(BuildError, match="must be >= 1"):
        cli.vision_config(["--threads", "yolov8=0"])
