"""GPT-2 builder unit tests: stand-in tokenizer, decoder export parity, greedy loop and generated configs.

Most use the tiny random-weight stand-in (--random-weights): its shape and BPE are fixed here; which stand-in a
build picks is tested at the end.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from google.protobuf import text_format
from tokenizers import Tokenizer
from tritonclient.grpc import model_config_pb2

from builders import gpt2, gpt2_decoder, gpt2_load
from builders.errors import BuildError
from builders.nets import gpt2 as nets
from builders.triton_config import ModelConfig, Target, model_config, read_config
from tritonyard_contract import EOS_TOKEN

TINY = nets.STAND_INS["tiny"]


@dataclass(frozen=True)
class Exported:
    """The tiny random-weight stand-in, loaded once, and its fp32 decoder export."""

    model: nets.GPT2LMHeadModel
    tokenizer: Tokenizer
    dims: nets.Gpt2Dims
    onnx_path: Path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    model, tokenizer, dims = gpt2_load.load(gpt2.Gpt2Config(random_weights=True))
    path = tmp_path_factory.mktemp("gpt2_decoder") / "model.onnx"
    gpt2_decoder.export_decoder(model, dims, path)
    return Exported(model, tokenizer, dims, path)


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("model_repository")
    gpt2.build(gpt2.Gpt2Config(random_weights=True), repo)
    return repo


def test_tokenizer_training_is_deterministic_when_run_twice(tiny: Exported) -> None:
    again = nets.train_tokenizer(TINY.vocab_size, TINY.corpus_chars)
    assert again.to_str() == tiny.tokenizer.to_str()
    assert tiny.tokenizer.get_vocab_size() == TINY.vocab_size
    assert tiny.tokenizer.token_to_id(EOS_TOKEN) == TINY.vocab_size - 1 == tiny.dims.eos_token_id


@pytest.mark.parametrize("text", ["emoji 🦊🎉 and CJK 世界你好", "naïve café — “quotes”\n\ttabs", "a<|endoftext|>b"])
def test_tokenizer_round_trips_text_when_it_has_multibyte_characters(tiny: Exported, text: str) -> None:
    ids = tiny.tokenizer.encode(text).ids
    assert tiny.tokenizer.decode(ids, skip_special_tokens=False) == text
    assert max(ids) < tiny.dims.vocab_size


def test_stand_in_model_vocab_matches_tokenizer_when_built_offline(tiny: Exported) -> None:
    assert tiny.model.config.vocab_size == tiny.tokenizer.get_vocab_size() == tiny.dims.vocab_size
    assert (tiny.dims.n_layer, tiny.dims.n_head, tiny.dims.head_dim) == (2, 4, 32)


def test_decoder_onnx_matches_torch_when_past_is_empty_or_not(tiny: Exported) -> None:
    worst = gpt2_decoder.check_logits(tiny.model, tiny.dims, tiny.onnx_path)
    assert worst < 1e-4


def test_decoder_onnx_has_contract_names_and_dynamic_axes_when_exported(tiny: Exported) -> None:
    sess = nets.session(tiny.onnx_path)
    inputs = {i.name: i.shape for i in sess.get_inputs()}
    outputs = {o.name: o.shape for o in sess.get_outputs()}
    assert list(inputs) == ["input_ids", "attention_mask", "position_ids", *tiny.dims.past_names]
    assert list(outputs) == ["logits", *tiny.dims.present_names]
    assert inputs["past_key_values.0.key"] == ["batch", 4, "past_sequence", 32]
    assert outputs["logits"] == ["batch", "sequence", tiny.dims.vocab_size]
    assert outputs["present.1.value"] == ["batch", 4, "past_sequence + sequence", 32]


def test_onnx_greedy_loop_equals_generate_when_prompts_are_left_padded(tiny: Exported) -> None:
    tokens = gpt2_decoder.check_greedy(tiny.model, tiny.tokenizer, tiny.dims, tiny.onnx_path)
    assert tokens.shape == (len(gpt2_decoder.CHECK_PROMPTS), gpt2_decoder.CHECK_NEW_TOKENS)
    assert len(set(tokens[0].tolist())) > 2  # initializer_range 0.1: greedy does not collapse onto one token


def test_onnx_greedy_loop_pads_with_eos_like_generate_when_a_row_finishes_early(tiny: Exported) -> None:
    prompts = gpt2_decoder.check_prompts(tiny.tokenizer)
    free = nets.greedy_onnx(nets.session(tiny.onnx_path), tiny.dims, prompts, 8)
    # Declare row 0's 4th greedy token the EOS: row 0 must stop there and be padded while row 1 runs on.
    dims = replace(tiny.dims, eos_token_id=int(free[0, 3]))
    assert dims.eos_token_id not in free[1].tolist()
    got = nets.greedy_onnx(nets.session(tiny.onnx_path), dims, prompts, 8)
    expected = nets.greedy_torch(tiny.model, dims, prompts, 8)
    assert np.array_equal(got, expected)
    assert got[0].tolist() == [*free[0, :4].tolist(), *[dims.eos_token_id] * 4]
    assert np.array_equal(got[1], free[1])


def test_left_pad_and_positions_count_real_tokens_when_rows_differ_in_length() -> None:
    ids, mask = nets.left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert nets.position_ids(mask, 3).tolist() == [[0, 1, 2], [0, 0, 0]]
    grown = np.concatenate([mask, np.ones((2, 1), np.int64)], axis=1)
    assert nets.position_ids(grown, 1).tolist() == [[3], [1]]


def test_build_writes_generation_model_with_decoder_and_tokenizer_when_target_is_cpu(tiny_repo: Path) -> None:
    assert sorted(p.name for p in tiny_repo.iterdir()) == sorted(gpt2.MODELS) == ["gpt2", "gpt2_stream"]
    version = tiny_repo / "gpt2_stream" / "1"
    assert (version / "model.onnx").is_file() and (version / "model.py").is_file()
    assert Tokenizer.from_file(str(version / gpt2.TOKENIZER_FILE)).get_vocab_size() == 4096
    entry = tiny_repo / "gpt2" / "1"
    assert (entry / "model.py").is_file()
    assert not list(entry.glob("*.onnx")) and not (entry / gpt2.TOKENIZER_FILE).exists()  # weights held once


def test_configs_declare_tensorrt_llm_interface_and_parameters_when_built(tiny_repo: Path) -> None:
    configs = {n: read_config(tiny_repo / n / "config.pbtxt") for n in gpt2.MODELS}
    params = {k: v.string_value for k, v in configs["gpt2_stream"].parameters.items()}
    assert params == {
        "execution_provider": "cpu",
        "cache_arrays": "numpy",
        "n_layer": "2",
        "n_head": "4",
        "head_dim": "32",
        "n_positions": "256",
        "vocab_size": "4096",
        "eos_token_id": "4095",
        "max_slots": "8",
        "max_pending": "32",
        "max_prompt_bytes": "32768",
        "intra_op_threads": "2",
    }
    entry = {k: v.string_value for k, v in configs["gpt2"].parameters.items()}
    assert entry == {"generation_model": "gpt2_stream", "max_in_flight": "80"}
    for name in gpt2.MODELS:  # the same interface on both entries
        inputs = {t.name: (t.data_type, list(t.dims), t.optional) for t in configs[name].input}
        assert [t.name for t in configs[name].input if not t.optional] == ["text_input"]
        for tensor in ("max_tokens", "min_length", "min_tokens", "top_k", "end_id", "pad_id", "beam_width"):
            assert inputs[tensor][:2] == (model_config_pb2.TYPE_INT32, [1]), tensor
        for tensor in ("stream", "exclude_input_in_output", "return_num_input_tokens", "ignore_eos"):
            assert inputs[tensor][:2] == (model_config_pb2.TYPE_BOOL, [1]), tensor
        assert inputs["seed"][1] == inputs["random_seed"][1] == [1] and inputs["stop_words"][1] == [-1]
        outputs = {t.name: list(t.dims) for t in configs[name].output}
        assert outputs["text_output"] == [-1] and outputs["num_input_tokens"] == outputs["num_output_tokens"] == [1]
        assert {"finish_reason", "prompt_tokens", "completion_tokens"} <= set(outputs)  # the names we had
        assert not configs[name].HasField("dynamic_batching")  # the engine batches; max_pending bounds it
    assert configs["gpt2_stream"].model_transaction_policy.decoupled
    assert not configs["gpt2"].model_transaction_policy.decoupled


def test_cli_limits_reach_the_generated_configs_when_flags_are_given(tmp_path: Path) -> None:
    from builders.__main__ import _parser, _queue

    args = _parser().parse_args(
        "gpt2 --max-pending 3 --max-prompt-bytes 100 --max-queue-size 5 --queue-timeout-ms 250".split()
    )
    cfg = gpt2.Gpt2Config(
        random_weights=True, max_pending=args.max_pending, max_prompt_bytes=args.max_prompt_bytes, queue=_queue(args)
    )
    for spec in gpt2.specs(cfg):
        repo_path = tmp_path / spec.name / "config.pbtxt"
        repo_path.parent.mkdir()
        repo_path.write_text(text_format.MessageToString(model_config(spec, cfg.target)))
        config = read_config(repo_path)
        if spec.name == "gpt2_stream":
            assert config.parameters["max_pending"].string_value == "3"
            assert config.parameters["max_prompt_bytes"].string_value == "100"
        else:  # gpt2 holds twice the forwarding threads gpt2_stream can hold requests: 2 x (8 slots + 3 pending)
            assert config.parameters["max_in_flight"].string_value == "22"


@pytest.mark.parametrize("field", ["max_pending", "max_prompt_bytes", "max_slots"])
def test_gpt2_config_refuses_limit_when_it_is_not_positive(field: str) -> None:
    with pytest.raises(BuildError, match=field.replace("_", "-")):
        gpt2.Gpt2Config(**{field: 0})


def test_specs_run_generation_on_gpu_instances_with_cuda_and_torch_cache_when_target_is_gpu() -> None:
    cfg = gpt2.Gpt2Config(device="gpu", random_weights=True)
    target = Target("gpu")
    kinds = {}
    for spec in gpt2.specs(cfg):
        parsed = text_format.Parse(text_format.MessageToString(model_config(spec, target)), ModelConfig())
        assert parsed.backend == "python"
        kinds[spec.name] = [model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind) for g in parsed.instance_group]
        if spec.name == "gpt2_stream":
            params = {k: v.string_value for k, v in parsed.parameters.items()}
            assert (params["execution_provider"], params["cache_arrays"]) == ("cuda", "torch")
    assert kinds == {"gpt2_stream": ["KIND_GPU"], "gpt2": ["KIND_CPU"]}


def test_load_raises_build_error_when_hub_model_is_not_cached() -> None:
    with pytest.raises(BuildError, match="HF_HUB_OFFLINE"):
        gpt2_load.load(gpt2.Gpt2Config(model="tritonyard-test/no-such-gpt2"))


def test_load_raises_build_error_when_model_directory_is_missing(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="no such directory"):
        gpt2_load.load(gpt2.Gpt2Config(model=str(tmp_path / "absent")))


@pytest.mark.parametrize("tokenizer_files", ["tokenizer.json", "vocab+merges"])
def test_load_reads_local_checkpoint_when_saved_with_save_pretrained(
    tiny: Exported, tmp_path: Path, tokenizer_files: str
) -> None:
    tiny.model.save_pretrained(tmp_path)
    if tokenizer_files == "tokenizer.json":
        tiny.tokenizer.save(str(tmp_path / "tokenizer.json"))
    else:
        tiny.tokenizer.model.save(str(tmp_path))  # vocab.json + merges.txt, as the slow tokenizer ships
    model, tokenizer, dims = gpt2_load.load(gpt2.Gpt2Config(model=str(tmp_path)))
    assert dims == tiny.dims
    text = "def f(x):\n    return x  # 世界"
    assert tokenizer.encode(text).ids == tiny.tokenizer.encode(text).ids
    assert tokenizer.decode(tokenizer.encode(text).ids) == text
    assert torch.equal(model.lm_head.weight, tiny.model.lm_head.weight)


def _user_checkpoint(tiny: Exported, path: Path, **tokenizer_kwargs: object) -> Path:
    """The tiny model and its BPE saved the way users do: save_pretrained, the BPE in GPT2TokenizerFast."""
    from transformers import GPT2TokenizerFast

    tiny.model.save_pretrained(path)
    fast = GPT2TokenizerFast(
        tokenizer_object=Tokenizer.from_str(tiny.tokenizer.to_str()),
        eos_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        **tokenizer_kwargs,
    )
    fast.save_pretrained(path)
    return path


@pytest.mark.parametrize("tokenizer_files", ["tokenizer.json", "vocab+merges"])
def test_load_tokenizes_like_transformers_when_tokenizer_config_adds_a_prefix_space(
    tiny: Exported, tmp_path: Path, tokenizer_files: str
) -> None:
    from transformers import AutoTokenizer

    path = _user_checkpoint(tiny, tmp_path, add_prefix_space=True)  # in tokenizer_config.json only
    if tokenizer_files == "vocab+merges":
        Tokenizer.from_file(str(path / "tokenizer.json")).model.save(str(path))
        (path / "tokenizer.json").unlink()
    _, tokenizer, _ = gpt2_load.load(gpt2.Gpt2Config(model=str(path)))
    hf = AutoTokenizer.from_pretrained(path)
    for text in ("def main():", "x = 1", "a<|endoftext|>b"):
        assert tokenizer.encode(text).ids == hf(text).input_ids
    assert tokenizer.encode("def").ids != tiny.tokenizer.encode("def").ids  # the prefix space is applied


def test_load_raises_build_error_when_tokenizer_has_tokens_without_logits(tiny: Exported, tmp_path: Path) -> None:
    path = _user_checkpoint(tiny, tmp_path, pad_token="[PAD]")  # added, but the embeddings were not resized
    with pytest.raises(BuildError, match=r"4097 tokens, the model only 4096 logits \(no logit for '\[PAD\]' "):
        gpt2_load.load(gpt2.Gpt2Config(model=str(path)))


def test_load_warns_and_keeps_tokenizer_eos_when_config_names_another_eos(
    tiny: Exported, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _user_checkpoint(tiny, tmp_path)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "eos_token_id": 50256, "bos_token_id": 50256}))
    with caplog.at_level(logging.WARNING, logger="tritonyard.build"):
        _, _, dims = gpt2_load.load(gpt2.Gpt2Config(model=str(path)))
    assert (
        dims.eos_token_id == tiny.dims.eos_token_id == gpt2.nominal_dims(gpt2.Gpt2Config(model=str(path))).eos_token_id
    )
    assert "config.json: 50256" in caplog.text and f"end-of-text id {dims.eos_token_id}" in caplog.text


def test_load_raises_build_error_when_folder_has_no_tokenizer_files(tiny: Exported, tmp_path: Path) -> None:
    tiny.model.save_pretrained(tmp_path)
    (tmp_path / "vocab.json").write_text("{}")  # merges.txt missing
    with pytest.raises(BuildError, match=r"no tokenizer.json, nor vocab.json \+ merges.txt"):
        gpt2_load.load(gpt2.Gpt2Config(model=str(tmp_path)))


def test_optimize_keeps_greedy_tokens_when_fusions_are_applied(tiny: Exported, tmp_path: Path) -> None:
    served = tmp_path / "model.onnx"
    gpt2_decoder.optimize(gpt2.Gpt2Config(optimize=True), tiny.onnx_path, served, tiny.tokenizer, tiny.dims)
    prompts = gpt2_decoder.check_prompts(tiny.tokenizer)
    fused = nets.greedy_onnx(nets.session(served), tiny.dims, prompts, gpt2_decoder.CHECK_NEW_TOKENS)
    reference = nets.greedy_onnx(nets.session(tiny.onnx_path), tiny.dims, prompts, gpt2_decoder.CHECK_NEW_TOKENS)
    assert np.array_equal(fused, reference)
    assert any(n.domain == "com.microsoft" for n in onnx.load(str(served)).graph.node)


def test_build_leaves_repository_untouched_when_a_check_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: object) -> float:
        raise BuildError("gpt2_stream's decoder: forced failure")

    monkeypatch.setattr(gpt2_decoder, "check_logits", broken)
    with pytest.raises(BuildError, match="forced failure"):
        gpt2.build(gpt2.Gpt2Config(), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_catalog_lists_gpt2_models_when_asked_for_every_model() -> None:
    from builders import catalog

    names = catalog.model_names("cpu")
    assert names[-2:] == list(gpt2.MODELS) and "ensemble" in names


def test_optimize_quantizes_and_checks_agreement_when_int8_is_asked(
    tiny: Exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = tmp_path / "model.onnx"
    gpt2_decoder.optimize(gpt2.Gpt2Config(int8=True), tiny.onnx_path, served, tiny.tokenizer, tiny.dims)
    assert served.stat().st_size < tiny.onnx_path.stat().st_size / 2
    assert any(n.op_type == "MatMulInteger" for n in onnx.load(str(served)).graph.node)
    monkeypatch.setattr(gpt2_decoder, "MIN_INT8_AGREEMENT", 1.01)  # no model can reach it: the failure path
    with pytest.raises(BuildError, match="build without --int8"):
        gpt2_decoder.optimize(gpt2.Gpt2Config(int8=True), tiny.onnx_path, served, tiny.tokenizer, tiny.dims)


@pytest.mark.parametrize(
    "flags,checkpoint,size",
    [
        ("", str(gpt2_load.TRAINED_STAND_IN), "tiny"),
        ("--random-weights", None, "tiny"),
        ("--gpt2-size 124m", None, "124m"),
        ("--random-weights --gpt2-size 124m", None, "124m"),
        ("--model ./ckpt --random-weights", "./ckpt", "tiny"),
    ],
)
def test_cli_picks_the_gpt2_stand_in_when_flags_ask_for_one(
    flags: str, checkpoint: str | None, size: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Default: the trained stand-in; --random-weights or a --gpt2-size: the random one of that shape."""
    from builders import __main__ as cli

    built: list[gpt2.Gpt2Config] = []
    monkeypatch.setattr(gpt2, "build", lambda cfg, _out: built.append(cfg))
    cli._build_gpt2(cli._parser().parse_args(["gpt2", *flags.split()]), {})
    assert built[0].checkpoint == checkpoint and built[0].size == size


def test_trained_stand_in_is_a_save_pretrained_folder_when_committed() -> None:
    folder = gpt2_load.TRAINED_STAND_IN
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in folder.iterdir()
    }
    dims = gpt2.nominal_dims(gpt2.Gpt2Config())
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["quick"] is False and dims.n_positions == metrics["recipe"]["n_positions"]
    assert dims.vocab_size == metrics["recipe"]["vocab_size"] and dims.eos_token_id == dims.vocab_size - 1
    assert sum(p.stat().st_size for p in folder.iterdir()) < 12 * 1024 * 1024  # small enough to commit


def test_build_says_how_to_get_the_trained_stand_in_when_it_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gpt2_load, "TRAINED_STAND_IN", tmp_path / "absent")
    with pytest.raises(BuildError, match=r"make train-gpt2.*--model DIR.*--random-weights"):
        gpt2.build(gpt2.Gpt2Config(), tmp_path / "repo")
    assert gpt2.Gpt2Config(random_weights=True).checkpoint is None
