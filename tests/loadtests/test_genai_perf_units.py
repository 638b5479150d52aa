"""The pure parts of the GPT-2 benchmark: genai-perf's command and output, the floor's file finding, the ratios and
the report section. No server (tier unit); the end-to-end runs are test_genai_perf_quick.py and test_bench_quick.py."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

from loadtests import bench_gpt2, gpt2_floor, report_gpt2
from loadtests import genai_perf as gp

pytestmark = pytest.mark.unit

GENAI_JSON = {
    "time_to_first_token": {"unit": "ms", "avg": 20.5, "p50": 19.0},
    "inter_token_latency": {"unit": "ms", "avg": 3.5, "p50": 3.0},
    "output_token_throughput": {"unit": "tokens/sec", "avg": 250.0},
    "request_throughput": {"unit": "requests/sec", "avg": 4.0},
    "output_sequence_length": {"unit": "tokens", "avg": 64.0},
    "input_sequence_length": {"unit": "tokens", "avg": 16.0},
    "request_latency": {"unit": "ms", "avg": 240.0},
}


def _value(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


def test_genai_perf_command_drives_gpt2_stream_as_tensorrtllm_when_built(tmp_path: Path) -> None:
    cmd = gp.command(Path("/v/bin/genai-perf"), "h:8001", 4, gp.Workload(), tmp_path / "tok", tmp_path / "c4")
    assert cmd[:4] == ["/v/bin/genai-perf", "profile", "-m", "gpt2_stream"]
    assert _value(cmd, "--endpoint-type") == "kserve" and _value(cmd, "--backend") == "tensorrtllm"
    assert "--streaming" in cmd and _value(cmd, "-u") == "h:8001" and _value(cmd, "--concurrency") == "4"
    assert _value(cmd, "--request-count") == "12"  # 3 x concurrency, at least 8
    assert _value(cmd, "--output-tokens-mean") == "64" and "--output-tokens-mean-deterministic" in cmd
    assert _value(cmd, "--tokenizer") == str(tmp_path / "tok")
    loose = gp.command(Path("g"), "h:1", 1, gp.Workload(deterministic=False), tmp_path, tmp_path)
    assert "--output-tokens-mean-deterministic" not in loose and _value(loose, "--request-count") == "8"


def test_genai_perf_workload_takes_flags_over_the_mode_when_given() -> None:
    args = argparse.Namespace(
        quick=True, input_tokens=None, output_tokens=32, request_count=None, timeout=None, no_deterministic=True
    )
    work = gp.workload(args)
    assert (work.input_tokens, work.output_tokens, work.request_count) == (8, 32, 3)
    assert not work.deterministic


def test_genai_perf_summarize_reads_its_metrics_when_json_is_complete() -> None:
    row = gp.summarize(GENAI_JSON, 2)
    assert row["concurrency"] == 2 and row["ttft_ms"] == 20.5 and row["ttft_p50_ms"] == 19.0
    assert row["itl_ms"] == 3.5 and row["output_tok_s"] == 250.0 and row["output_tokens"] == 64.0
    assert gp.summarize({}, 1)["itl_ms"] is None  # a run with one token per request has no ITL
    assert "| 2 | 20.5 | 19.0 | 3.5 | 3.0 | 250.0 | 4.0 | 64.0 |" in gp.format_table([row])


def test_genai_perf_tokenizer_dir_loads_in_transformers_when_made_from_tokenizer_json(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(["the oil level in the pump"] * 20, trainers.BpeTrainer(special_tokens=["<|endoftext|>"]))
    tok.save(str(tmp_path / "tokenizer.json"))
    folder = gp.tokenizer_dir(tmp_path / "tokenizer.json", tmp_path / "out")
    loaded = AutoTokenizer.from_pretrained(str(folder))
    assert loaded.encode("the oil level", add_special_tokens=False) == tok.encode("the oil level").ids
    assert loaded.eos_token == "<|endoftext|>"


FAKE_GENAI_PERF = """#!{python}
import pathlib, sys
args = sys.argv
c = args[args.index("--concurrency") + 1]
if c == "2":
    print("error: The input or output 'exclude_input_in_output' is not found in the model configuration")
    sys.exit(1)
d = pathlib.Path(args[args.index("--artifact-dir") + 1]) / f"gpt2_stream-triton-tensorrtllm-concurrency{{c}}"
d.mkdir(parents=True)
(d / "profile_export_genai_perf.json").write_text({data})
(d / "profile_export_genai_perf.csv").write_text("Metric,avg\\n")
"""


def test_genai_perf_sweep_reports_missing_tensor_when_a_concurrency_fails(tmp_path: Path) -> None:
    fake = tmp_path / "genai-perf"
    fake.write_text(FAKE_GENAI_PERF.format(python=sys.executable, data=repr(json.dumps(GENAI_JSON))))
    fake.chmod(0o755)
    rows, problems = gp.sweep(fake, {}, "h:1", [1, 2], gp.QUICK, tmp_path / "tok", tmp_path)
    assert [r["concurrency"] for r in rows] == [1]
    assert rows[0]["json"] == "c1/gpt2_stream-triton-tensorrtllm-concurrency1/profile_export_genai_perf.json"
    (problem,) = problems
    assert "concurrency 2: exit 1 (gpt2_stream lacks a tensor genai-perf sends)" in problem


def test_genai_perf_tools_raise_how_to_fix_when_venv_is_empty(tmp_path: Path) -> None:
    with pytest.raises(gp.ToolError, match="make perf-tools"):
        gp.find_genai_perf(tmp_path)


def _decoder_onnx(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info("past_key_values.0.key", TensorProto.FLOAT, ["b", 2, "p", 4])]
    outputs = [helper.make_tensor_value_info("present.0.key", TensorProto.FLOAT, ["b", 2, "p", 4])]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["past_key_values.0.key"], ["present.0.key"])], "d", inputs, outputs
    )
    path.parent.mkdir(parents=True)
    onnx.save(helper.make_model(graph), str(path))


def test_gpt2_floor_finds_newest_decoder_and_tokenizer_when_layout_is_any(tmp_path: Path) -> None:
    _decoder_onnx(tmp_path / "engine" / "1" / "model.onnx")
    _decoder_onnx(tmp_path / "engine" / "3" / "model.onnx")
    (tmp_path / "engine" / "config.pbtxt").write_text(
        'parameters { key: "intra_op_threads" value: { string_value: "3" } }'
    )
    (tmp_path / "other" / "1").mkdir(parents=True)
    (tmp_path / "other" / "1" / "tokenizer.json").write_text("{}")
    (tmp_path / "gpt2_stream" / "2").mkdir(parents=True)
    (tmp_path / "gpt2_stream" / "2" / "tokenizer.json").write_text("{}")
    decoder = gpt2_floor.find_decoder(tmp_path)
    assert decoder == tmp_path / "engine" / "3" / "model.onnx" and gpt2_floor.served_threads(decoder) == 3
    assert gpt2_floor.find_tokenizer(tmp_path) == tmp_path / "gpt2_stream" / "2" / "tokenizer.json"
    with pytest.raises(FileNotFoundError, match="KV-cache decoder"):
        gpt2_floor.find_decoder(tmp_path / "other")


def _results() -> dict:
    served = [
        {"streams": n, "tok_s": t, "ttft_ms": 20.0 * n, "itl_ms": i, "tokens_per_stream": 64.0, "generations": 3 * n}
        for n, t, i in ((1, 36.0, 25.0), (4, 100.0, 38.0), (8, 160.0, 45.0))
    ]
    rss = {"server_mb": 30.0, "stubs": 2, "stubs_mb": 600.0, "total_mb": 630.0}
    results = {
        "settings": {"prompt_tokens": 16, "new_tokens": 64, "rounds": 3},
        "floor": {
            "tok_s": 40.0,
            "ttft_ms": 30.0,
            "itl_ms": 24.0,
            "rounds": 3,
            "threads": 2,
            "decoder": "d/1/model.onnx",
        },
        "served": served,
        "genai_perf": {"rows": [{**gp.summarize(GENAI_JSON, 8)}], "problems": [], "skipped": None, "out": "x"},
        "rss": {
            "before_load": {**rss, "stubs": 0, "stubs_mb": 0.0, "total_mb": 30.0},
            "after_load": rss,
            "after_run": rss,
            "models": ["gpt2", "gpt2_stream"],
        },
    }
    results["ratios"] = bench_gpt2.ratios(results)
    return results


def test_bench_gpt2_ratios_judge_each_goal_when_figures_are_given() -> None:
    r = _results()["ratios"]
    assert r["floor"]["value"] == pytest.approx(0.9) and r["floor"]["met"]
    assert r["scaling"]["value"] == pytest.approx(160 / 36) and r["scaling"]["met"]
    assert r["itl"]["value"] == pytest.approx(1.8) and r["itl"]["met"] and not r["itl"]["at_least"]
    results = _results()
    results["served"][2]["itl_ms"] = 60.0
    assert not bench_gpt2.ratios(results)["itl"]["met"]  # 2.4x is above the <= 2x goal


def test_report_gpt2_section_puts_genai_perf_beside_ours_when_it_ran() -> None:
    results = _results()
    text = "\n".join(report_gpt2.section(results, "124m"))
    assert "| 8 | 160.0 | 250.0 | 160.0 | 20.5 | 45.0 | 3.5 | 64.0 / 64.0 |" in text
    assert "re-tokenizes" in text and "| no model loaded | 30 | 0 | 0 | 30 |" in text
    assert "| ITL at 8 streams / ITL at 1 stream | 1.80x | <= 2x | met |" in text
    heads = report_gpt2.headlines(results)
    assert heads["gpt2_itl"]["target"] == "<= 2x" and heads["gpt2_floor"]["met"]
    lines = bench_gpt2.table(results)
    assert any(line.startswith("genai-perf, concurrency 8") for line in lines)
    assert lines[-1].startswith("server RSS: before loading 30 MB")
