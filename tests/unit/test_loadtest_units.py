"""The pure parts of the load tests: SSE parsing, response checks, soak verdicts, perf_analyzer commands."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np
import pytest

from loadtests import locust_common as common
from loadtests import perf, soak
from tritonyard_contract import CROP, DETECTIONS, OIL_PCT


def _sse(*events: str) -> list[bytes]:
    return [line.encode() for e in events for line in (f"data: {e}\n", "\n")]


def test_parse_sse_line_returns_payload_when_line_is_data() -> None:
    assert common.parse_sse_line(b'data: {"text_output": "a", "finish_reason": ""}\n') == {
        "text_output": "a",
        "finish_reason": "",
    }
    assert common.parse_sse_line(b"\n") is None
    assert common.parse_sse_line(": keep-alive") is None


@pytest.mark.parametrize("line", ['data: {"error": "text_input: is empty"}', "data: not json", "data: [1, 2]"])
def test_parse_sse_line_raises_when_event_is_an_error_or_garbage(line: str) -> None:
    with pytest.raises(common.ResponseError):
        common.parse_sse_line(line)


def test_read_stream_measures_ttft_itl_and_rate_when_tokens_arrive() -> None:
    lines = _sse(
        '{"text_output": "Hel", "finish_reason": "", "completion_tokens": 1}',
        '{"text_output": "lo", "finish_reason": "", "completion_tokens": 2}',
        '{"text_output": "!", "finish_reason": "length", "completion_tokens": 5}',
    )
    clock = itertools.count(start=10.1, step=0.1).__next__  # one tick per event, then one for the end
    result = common.read_stream(lines, start=10.0, clock=clock)
    assert result.text == "Hello!" and result.finish_reason == "length" and result.completion_tokens == 5
    assert result.ttft_s == pytest.approx(0.1)
    assert result.itl_s == pytest.approx((0.3 - 0.1) / 4)  # five tokens in three pieces: per token, not per piece
    assert result.tokens_per_s == pytest.approx(5 / 0.4)


@pytest.mark.parametrize(
    ("events", "message"),
    [
        (['{"text_output": "", "finish_reason": "stop", "completion_tokens": 0}'], "empty"),
        (['{"text_output": "a", "finish_reason": "", "completion_tokens": 1}'], "finish_reason"),
        (['{"text_output": "a", "finish_reason": ""}', '{"error": "cancelled"}'], "cancelled"),
        ([], "without any event"),
    ],
)
def test_read_stream_raises_when_generation_is_incomplete_or_failed(events: list[str], message: str) -> None:
    with pytest.raises(common.ResponseError, match=message):
        common.read_stream(_sse(*events), start=0.0)


def _outputs(**override: np.ndarray) -> dict[str, np.ndarray]:
    good = {t.name: np.zeros((1, *t.dims), np.float32) for t in (DETECTIONS, CROP, OIL_PCT)}
    return {**good, **override}


def test_check_vision_outputs_accepts_when_shapes_match_the_contract() -> None:
    common.check_vision_outputs(_outputs())


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({DETECTIONS.name: np.zeros((1, 299, 6), np.float32)}, "shape"),
        ({CROP.name: np.zeros((3, 384, 384), np.float32)}, "shape"),
        ({OIL_PCT.name: np.array([[np.nan]], np.float32)}, "NaN"),
        ({OIL_PCT.name: None}, "missing"),
    ],
)
def test_check_vision_outputs_raises_when_an_output_is_wrong(override: dict, message: str) -> None:
    with pytest.raises(common.ResponseError, match=message):
        common.check_vision_outputs(_outputs(**override))


def _samples(series: dict[str, list[int]], step: float = 1.0) -> list[soak.Sample]:
    n = len(next(iter(series.values())))
    return [
        soak.Sample(i, i * step, label, 100 + j, values[i])
        for i in range(n)
        for j, (label, values) in enumerate(series.items())
        if values[i] is not None
    ]


def test_memory_growth_passes_when_only_transient_buffers_come_and_go() -> None:
    spiky = [200_000 + (100_000 if i % 2 else 0) for i in range(50)]  # a 99.5 MB frame in every other sample
    flat = [500_000] * 50
    verdict = soak.memory_growth(_samples({"tritonserver": flat, "image_decoder": spiky}), 49, 0.2, 0.2, 0.10)
    assert [g.process for g in verdict] == ["tritonserver", "image_decoder", "total"]
    assert all(g.ok and g.growth_pct == pytest.approx(0.0) for g in verdict)
    assert verdict[1].peak_mb == pytest.approx(300_000 / 1024)


def test_memory_growth_fails_when_a_process_leaks_after_warm_up() -> None:
    leak = [100_000 + 1_000 * i for i in range(50)]  # +1% of the start per second
    verdict = soak.memory_growth(_samples({"tritonserver": [500_000] * 50, "gpt2": leak}), 49, 0.2, 0.2, 0.10)
    by = {g.process: g for g in verdict}
    assert not by["gpt2"].ok and by["gpt2"].growth_pct > 10
    assert by["tritonserver"].ok and by["total"].ok  # the total hides it; per process does not


def test_memory_growth_fails_when_a_stub_disappears() -> None:
    gone = [90_000] * 30 + [None] * 20
    verdict = soak.memory_growth(_samples({"tritonserver": [500_000] * 50, "yolov8": gone}), 49, 0.2, 0.2, 0.10)
    yolo = next(g for g in verdict if g.process == "yolov8")
    assert not yolo.ok and "gone" in yolo.note


def test_latency_windows_reports_p99_of_first_and_last_window_when_latency_drifts() -> None:
    rows = [(1000.0 + t, "sse", "gpt2_stream", 10.0 + t, True) for t in range(100)]
    rows.append((1050.0, "sse", "gpt2_stream", 99_999.0, False))  # failures count elsewhere, not in latency
    (row,) = soak.latency_windows(rows, 0.2)
    assert row["requests"] == 100
    assert row["p99_start_ms"] == pytest.approx(np.percentile([10.0 + t for t in range(20)], 99))
    assert row["p99_end_ms"] == pytest.approx(np.percentile([10.0 + t for t in range(80, 100)], 99))


def test_stub_label_reads_model_and_instance_when_given_a_stub_command_line() -> None:
    cmd = [
        "/x/triton_python_backend_stub",
        "/repo/yolov8/1/model.py",
        "region",
        "1048576",
        "1048576",
        "42",
        "/x/python",
        "336",
        "yolov8_0_1",
        "DEFAULT",
    ]
    assert soak.stub_label(cmd) == ("yolov8", "yolov8_0_1")


@pytest.mark.parametrize(("text", "seconds"), [("600", 600), ("90s", 90), ("10m", 600), ("1.5h", 5400)])
def test_seconds_parses_durations_when_given_units(text: str, seconds: float) -> None:
    assert soak.seconds(text) == seconds


def test_pa_command_uses_shared_memory_for_ensemble_and_grpc_streaming_for_gpt2_stream() -> None:
    window = perf.Window(5, 50.0, 3)
    ens = perf.pa_command(Path("pa"), "ensemble", 2, "h:1", "h:2", Path("in"), window, Path("o.csv"))
    stream = perf.pa_command(Path("pa"), "gpt2_stream", 1, "h:1", "h:2", Path("in"), window, Path("o.csv"))
    assert ens[ens.index("--shared-memory") + 1] == "system" and ens[ens.index("-u") + 1] == "h:1"
    assert int(ens[ens.index("--output-shared-memory-size") + 1]) >= 3 * 384 * 384 * 4
    assert "--streaming" in stream and stream[stream.index("-i") + 1] == "grpc"
    assert stream[stream.index("-u") + 1] == "h:2"
    assert "--shared-memory" not in stream


def test_merge_csv_keeps_one_header_when_joining_concurrencies(tmp_path: Path) -> None:
    parts = []
    for c in (1, 2):
        part = tmp_path / f"c{c}.csv"
        part.write_text(f"Concurrency,Inferences/Second\n{c},{c * 1.5}\n")
        parts.append(part)
    rows = perf.merge_csv(parts, tmp_path / "all.csv")
    assert [r["Concurrency"] for r in rows] == ["1", "2"]
    with (tmp_path / "all.csv").open() as f:
        assert list(csv.reader(f)) == [["Concurrency", "Inferences/Second"], ["1", "1.5"], ["2", "3.0"]]


FAKE_PA = """#!{python}
import sys
args = sys.argv[1:]
value = lambda flag: args[args.index(flag) + 1]
if float(value("--stability-percentage")) < 999 and value("--concurrency-range") == "2":
    print("Failed to obtain stable measurement within 10 measurement windows for concurrency 2.")
    sys.exit(2)
if value("-m") == "gpt2":
    print("error: model refused")
    sys.exit(99)
with open(value("-f"), "w") as f:
    f.write("Concurrency,Inferences/Second,p50 latency,p90 latency,p99 latency\\n")
    f.write(value("--concurrency-range") + ",2.5,1000,2000,3000\\n")
"""


def test_sweep_remeasures_and_marks_the_point_when_perf_analyzer_never_settles(tmp_path: Path) -> None:
    import sys

    fake = tmp_path / "perf_analyzer"
    fake.write_text(FAKE_PA.format(python=sys.executable))
    fake.chmod(0o755)
    windows = {m: perf.Window(5, 25.0, 10) for m in perf.MODELS}
    inputs = {m: tmp_path for m in perf.MODELS}
    results, problems = perf.sweep(fake, {}, ["ensemble", "gpt2"], [1, 2], "h:1", "h:2", inputs, windows, tmp_path, 60)
    assert [(r["Concurrency"], r["unstable"]) for r in results["ensemble"]] == [("1", ""), ("2", "25%")]
    assert (tmp_path / "ensemble_c2_unstable.log").is_file()
    assert results["gpt2"] == [] and len(problems) == 2 and all("exit 99" in p for p in problems)
    assert "| ensemble | 2 (unstable) | 2.50 |" in perf.format_table(results)
