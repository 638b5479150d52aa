"""The batch results table and its resume logic (clients/batch_table.py), the input listing, the summary files."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from clients import batch, clo
from clients.batch_summary import Summary, artifacts
from clients.batch_table import COLUMNS, ResultsTable, Row, TableError

FORMATS = (".csv", ".jsonl", ".parquet")


def scored(path: str, oil: float = 41.5) -> Row:
    boxes = np.array([[10.25, 20.5, 300.75, 400.125, 0.6712345, 0.0], [1, 2, 3, 4, 0.3, 0]], np.float32)
    return Row.scored(path, (640, 360), boxes, np.float32(oil), 0.8123)


def failed(path: str) -> Row:
    return Row(path, 64, 36, error="image has an alpha channel (mode RGBA); flatten it to RGB before sending")


def write(path: Path, rows: list[Row], keep: list[Row] | None = None) -> ResultsTable:
    table = ResultsTable(path)
    table.open(keep)
    for row in rows:
        table.append(row)
    table.close()
    return table


@pytest.mark.parametrize("suffix", FORMATS)
def test_results_table_reads_back_every_row_when_written_in_each_format(tmp_path: Path, suffix: str) -> None:
    rows = [scored("a.jpg"), failed("b.png"), Row("c.txt", error="not a decodable image: cannot identify")]
    write(tmp_path / f"results{suffix}", rows)

    assert ResultsTable(tmp_path / f"results{suffix}").load() == rows
    assert not (tmp_path / f"results{suffix}.partial.jsonl").exists()


@pytest.mark.parametrize("suffix", FORMATS)
def test_results_table_appends_after_old_rows_when_a_run_resumes(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"results{suffix}"
    write(path, [scored("a.jpg")])
    write(path, [scored("b.jpg", 12.0)])

    assert [r.path for r in ResultsTable(path).load()] == ["a.jpg", "b.jpg"]
    if suffix == ".csv":
        assert path.read_text().splitlines()[0] == ",".join(COLUMNS)  # one header, not one per run
        assert path.read_text().count("path,width") == 1


def test_results_row_keeps_the_float32_answer_when_written_as_text(tmp_path: Path) -> None:
    row = scored("a.jpg", oil=np.float32(62.123456))
    write(tmp_path / "r.csv", [row])
    [back] = ResultsTable(tmp_path / "r.csv").load()

    assert np.float32(back.oil_pct) == np.float32(62.123456)
    assert back.detections[0] == [10.25, 20.5, 300.75, 400.125, float(str(np.float32(0.6712345))), 0]
    assert back.best_score == back.detections[0][4] and back.latency_ms == 812.3
    record = back.record()
    assert record["n_detections"] == 2 and json.loads(record["detections"]) == back.detections


@pytest.mark.parametrize("suffix", (".csv", ".jsonl"))
def test_results_table_drops_a_torn_last_line_when_a_run_was_killed_mid_write(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"results{suffix}"
    write(path, [scored("a.jpg"), scored("b.jpg")])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 25])  # the second row half written

    table = ResultsTable(path)
    assert [r.path for r in table.load()] == ["a.jpg"]
    write(path, [scored("b.jpg")])
    assert [r.path for r in ResultsTable(path).load()] == ["a.jpg", "b.jpg"]


def test_parquet_table_merges_the_journal_when_the_previous_run_never_closed(tmp_path: Path) -> None:
    path = tmp_path / "results.parquet"
    write(path, [scored("a.jpg")])
    killed = ResultsTable(path)
    killed.open()
    killed.append(scored("b.jpg"))  # no close(): the process died here
    killed._file.close()

    assert [r.path for r in ResultsTable(path).load()] == ["a.jpg", "b.jpg"]
    write(path, [scored("c.jpg")])
    assert [r.path for r in ResultsTable(path).load()] == ["a.jpg", "b.jpg", "c.jpg"]
    assert not (tmp_path / "results.parquet.partial.jsonl").exists()


@pytest.mark.parametrize("suffix", FORMATS)
def test_results_table_keeps_only_given_rows_when_errors_are_retried(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"results{suffix}"
    write(path, [scored("a.jpg"), failed("b.png"), scored("c.jpg")])
    old = ResultsTable(path).load()

    write(path, [scored("b.png")], keep=[r for r in old if r.ok])

    rows = ResultsTable(path).load()
    assert [r.path for r in rows] == ["a.jpg", "c.jpg", "b.png"] and all(r.ok for r in rows)


def test_results_table_refuses_the_file_when_its_suffix_is_not_a_table_format(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="suffix must be one of .csv, .jsonl, .parquet"):
        ResultsTable(tmp_path / "results.xlsx")


def test_results_table_refuses_a_csv_when_it_is_not_a_batch_table(tmp_path: Path) -> None:
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(TableError, match="not those of a batch run"):
        ResultsTable(tmp_path / "other.csv").load()


def test_list_inputs_walks_the_folder_when_given_one_and_leaves_out_hidden_and_output_files(tmp_path: Path) -> None:
    for name in ("b.jpg", "a.png", "sub/c.jpg", ".hidden.jpg", ".cache/d.jpg", "results.csv", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")

    found = batch.list_inputs(tmp_path, {tmp_path / "results.csv"})

    assert found == [str(tmp_path / n) for n in ("a.png", "b.jpg", "notes.txt", "sub/c.jpg")]


def test_list_inputs_reads_paths_relative_to_the_list_when_given_a_list_file(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    listing = tmp_path / "lists" / "frames.txt"
    listing.write_text("# today's frames\n../frames/a.jpg\n\n/abs/b.png\n../frames/a.jpg\n")

    assert batch.list_inputs(listing) == [str(tmp_path / "frames" / "a.jpg"), "/abs/b.png"]


def test_summary_counts_this_run_and_the_whole_table_when_a_run_resumes(tmp_path: Path, capsys) -> None:
    out = tmp_path / "results.csv"
    summary = Summary(tmp_path, out, "ensemble_jpeg", found=4, skipped=1, todo=3, concurrency=2)
    summary.start = time.perf_counter() - 1.5
    for row in (scored("b.jpg", 30.0), failed("c.png"), scored("d.jpg", 70.0)):
        summary.add(row)
    files = artifacts(out)

    result = summary.finish([scored("a.jpg", 50.0), scored("b.jpg", 30.0), failed("c.png"), scored("d.jpg")], files)

    assert (result["scored"], result["errors"], result["rows_total"], result["errors_total"]) == (3, 1, 4, 1)
    assert result["p50_ms"] == result["p99_ms"] == 812.3 and result["images_per_s"] > 0
    assert json.loads(files["summary"].read_text()) == result
    assert files["histogram"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = capsys.readouterr().out
    assert "batch: 4 file(s)" in text and "1 already in" in text and "errors: 1" in text
    assert "c.png: image has an alpha channel" in text and f"histogram of oil levels: {files['histogram']}" in text


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--out", "r.csv", "x.jpg"], "--out goes with --batch"),
        (["--batch", "."], "--batch needs --out"),
        (["--batch", "no-such-folder", "--out", "r.csv"], "no such folder or list file"),
        (["--batch", ".", "--out", "r.csv", "--synthetic"], "leave out the image, --synthetic"),
        (["--batch", ".", "--out", "r.csv", "--concurrency", "0"], "--concurrency must be at least 1"),
        (["--batch", ".", "--out", "r.xlsx"], "suffix must be one of"),
        (["--batch", ".", "--out", "r.csv", "--entry", "ensemble_jpeg", "--shm"], "--shm carries the FP32 frame"),
    ],
)
def test_clo_batch_exits_2_naming_the_problem_when_arguments_are_wrong(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert clo.main(argv) == 2
    assert message in capsys.readouterr().err


def test_clo_batch_exits_3_and_writes_no_row_when_no_server_answers(tmp_path: Path, capsys) -> None:
    from serving.launcher import free_ports

    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "a.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "results.csv"
    [port] = free_ports(1)

    code = clo.main(["--batch", str(tmp_path / "frames"), "--out", str(out), "--url", f"127.0.0.1:{port}"])

    assert code == batch.EXIT_STOPPED
    assert f"error: no Triton server at 127.0.0.1:{port}" in capsys.readouterr().err
    assert ResultsTable(out).load() == []
