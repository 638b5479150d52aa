"""The answer checks of the load generators (loadtests/references.py) and the soak's report, without a server."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from loadtests import references, soak, soak_report
from tritonyard_contract import DETECTIONS, OIL_PCT

TOL = {**references.TOLERANCE, "score_threshold": 0.25}
REFERENCE = {
    "oil_pct": 61.8,
    "detections": [[387.2, 245.8, 476.0, 394.1, 0.67, 0.0], [100.0, 100.0, 150.0, 180.0, 0.27, 0.0]],
}


def _served(oil: float, rows: list[list[float]]) -> dict[str, np.ndarray]:
    det = np.zeros((1, 300, 6), np.float32)
    det[0, : len(rows)] = np.asarray(rows, np.float32).reshape(-1, 6)
    return {OIL_PCT.name: np.array([[oil]], np.float32), DETECTIONS.name: det}


def test_check_vision_answer_passes_when_answer_is_within_tolerance() -> None:
    # Oil within 1 point, the sure box moved by a fraction of a pixel, the borderline box (0.27) absent.
    references.check_vision_answer(_served(62.5, [[387.5, 246.0, 476.2, 394.0, 0.66, 0.0]]), REFERENCE, TOL)


@pytest.mark.parametrize(
    "oil,rows,needle",
    [
        (64.0, [[387.2, 245.8, 476.0, 394.1, 0.67, 0.0]], "oil level 64.00%, reference 61.80%"),
        (61.8, [], "missing [[387.2"),
        (61.8, [[300.0, 245.8, 389.0, 394.1, 0.67, 0.0]], "missing"),  # moved: IoU well under 0.9
        (61.8, [[387.2, 245.8, 476.0, 394.1, 0.40, 0.0]], "missing"),  # score off by 0.27
        (61.8, [[387.2, 245.8, 476.0, 394.1, 0.67, 0.0], [10.0, 10.0, 90.0, 90.0, 0.8, 0.0]], "extra [[10.0"),
    ],
    ids=["oil", "no-box", "box-moved", "score", "extra-box"],
)
def test_check_vision_answer_raises_wrong_answer_when_it_differs(oil: float, rows: list, needle: str) -> None:
    with pytest.raises(references.ResponseError, match="wrong answer") as info:
        references.check_vision_answer(_served(oil, rows), REFERENCE, TOL)
    assert needle in str(info.value)


def test_check_text_answer_raises_wrong_answer_when_text_differs() -> None:
    references.check_text_answer(" pot\nThe pot", " pot\nThe pot")
    references.check_text_answer("oil 油", "oil 油\ufffd")  # a stream holds back an unfinished character
    with pytest.raises(references.ResponseError, match="wrong answer: generated ' pot', reference"):
        references.check_text_answer(" pot", " pan")


def test_expected_text_raises_when_answers_lack_the_prompt_or_length() -> None:
    answers = {"max_tokens": 16, "texts": {"def main():": "\nAnd"}}
    assert references.expected_text(answers, "def main():", 16) == "\nAnd"
    for prompt, tokens in (("other", 16), ("def main():", 8)):
        with pytest.raises(references.ResponseError, match="no reference answer"):
            references.expected_text(answers, prompt, tokens)


def test_frame_sources_gives_the_same_jpeg_when_called_twice() -> None:
    """The reference is keyed by the sha256 of the bytes locust sends: they must not vary between processes."""
    first, second = references.frame_sources("synthetic", 2), references.frame_sources("synthetic", 2)
    assert [references.digest(b) for b in first] == [references.digest(b) for b in second]
    assert len({references.digest(b) for b in first}) == 2 and first[0][:2] == b"\xff\xd8"


def test_wrong_answers_counts_only_failures_that_are_wrong_answers(tmp_path: Path) -> None:
    path = tmp_path / "locust_failures.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("Method", "Name", "Error", "Occurrences"))
        w.writerow(("infer", "ensemble", "ResponseError('wrong answer: oil level 80.00%, reference 60.00%')", 7))
        w.writerow(("sse", "gpt2_stream", "ResponseError('wrong answer: generated 'a'')", 2))
        w.writerow(("sse", "gpt2_stream", "ResponseError('HTTP 400: max_tokens')", 5))
    assert soak_report.wrong_answers(path) == 9
    assert soak_report.wrong_answers(tmp_path / "absent.csv") == 0
    assert "9 wrong answer(s)" in " ".join(soak.judge({"failures": 14, "rows": []}, [], [], 0, 9))


def test_soak_plot_writes_a_png_when_samples_and_requests_exist(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    samples = [soak.Sample(i, i * 2.0, label, 1, 500_000 + i) for i in range(30) for label in ("tritonserver", "gpt2")]
    requests = [(1000.0 + i, "infer", "ensemble_jpeg", 900.0 + i, True) for i in range(60)]
    verdict = {"duration_s": 60.0, "warmup_s": 12.0, "window_s": 12.0, "requests": 60, "errors": 0}
    assert soak_report.plot(tmp_path / "soak.png", verdict, samples, requests, ("infer",), 1000.0)
    assert (tmp_path / "soak.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
