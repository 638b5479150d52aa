"""GPT-2 serving layout against a real tritonserver: gpt2 and gpt2_stream share gpt2_stream's one in-flight batch,
a gpt2_stream version rolled out per docs/rollout.md is what both entries generate with, and TensorRT-LLM's inputs
(as genai-perf sends them) are served. A server of its own, on a copy of the session's GPT-2 models."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
from tokenizers import Tokenizer

from clients import gpt2 as client
from serving import rollout
from serving.launcher import TritonServer, free_ports
from serving.supervisor import TritonAdmin

pytestmark = pytest.mark.integration

MODELS = ("gpt2_stream", "gpt2")
PROMPT = "Now is the winter of our"
BATCH_LINE = re.compile(r"gpt2_stream engine: batch of (\d+) after admitting \d+: (.*?)\"?$")


@pytest.fixture(scope="module")
def server(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    root = tmp_path_factory.mktemp("gpt2-serving")
    for name in MODELS:
        shutil.copytree(model_repo / name, root / "repo" / name)
    with TritonServer(root / "repo", *free_ports(3), log_file=root / "tritonserver.log") as triton:
        yield triton


def batches(log: str) -> list[dict[str, int]]:
    """The entry counts of every batch the engine logged, e.g. {"gpt2": 2, "gpt2_stream": 3}."""
    found = []
    for line in log.splitlines():
        match = BATCH_LINE.search(line)
        if match:
            found.append({k: int(v) for k, v in (p.rsplit(" ", 1) for p in match.group(2).split(", ") if " " in p)})
    return found


def test_gpt2_and_gpt2_stream_share_one_batch_when_traffic_is_mixed(server: TritonServer) -> None:
    before = len(batches(server.log_file.read_text()))
    with ThreadPoolExecutor(6) as pool:
        unary = [pool.submit(client.generate, server.http_url, PROMPT, max_tokens=80) for _ in range(3)]
        streams = [pool.submit(client.stream, server.grpc_url, PROMPT, max_tokens=80) for _ in range(3)]
        results = [f.result() for f in unary + streams]
    assert [r.completion_tokens for r in results] == [80] * 6
    assert len({r.text for r in results}) == 1  # greedy: the same text through both entries
    mixed = [b for b in batches(server.log_file.read_text())[before:] if b.get("gpt2") and b.get("gpt2_stream")]
    assert mixed, "no engine batch held requests from both entries"


def biased(source: Path, target: Path, token: int, vocab: int) -> None:
    """`source` with +1000 on one token's logit: greedy decoding then says only that token."""
    model = onnx.load(str(source))
    graph = model.graph
    producer = next(n for n in graph.node if "logits" in n.output)
    producer.output[list(producer.output).index("logits")] = "logits_unbiased"
    bias = np.zeros(vocab, np.float32)
    bias[token] = 1000.0
    graph.initializer.append(onnx.numpy_helper.from_array(bias, "logits_bias"))
    graph.node.append(onnx.helper.make_node("Add", ["logits_unbiased", "logits_bias"], ["logits"]))
    onnx.save(model, str(target))


def test_new_gpt2_stream_version_generates_for_both_entries_when_rolled_out(
    server: TritonServer, tmp_path: Path
) -> None:
    repo, admin = server.repository, TritonAdmin(server.http_url, server.admin_key)
    current = repo / "gpt2_stream" / "1"
    tokenizer = Tokenizer.from_file(str(current / "tokenizer.json"))
    token = tokenizer.token_to_id("e")
    version_2 = tmp_path / "gpt2_stream-next"
    shutil.copytree(current, version_2)
    biased(current / "model.onnx", version_2 / "model.onnx", token, tokenizer.get_vocab_size())
    v1 = client.generate(server.http_url, PROMPT, max_tokens=6).text
    version = rollout.roll_out(repo, admin, "gpt2_stream", version_2)
    try:
        assert client.generate(server.http_url, PROMPT, max_tokens=6).text == "e" * 6  # gpt2, through BLS
        assert client.stream(server.grpc_url, PROMPT, max_tokens=6).text == "e" * 6
    finally:
        rollout.rollback(repo, admin, "gpt2_stream", version)
    assert client.generate(server.http_url, PROMPT, max_tokens=6).text == v1 != "e" * 6


def trt_llm_inputs(max_tokens: int, **flags: bool) -> list:
    """What genai-perf 0.0.16 sends (--backend tensorrtllm --streaming, a fixed output length)."""
    arrays = {
        "text_input": np.array([[PROMPT.encode()]], np.object_),
        "max_tokens": np.array([[max_tokens]], np.int32),
        "min_length": np.array([[max_tokens]], np.int32),
        **{k: np.array([[v]], np.bool_) for k, v in flags.items()},
    }
    inputs = []
    for name, array in arrays.items():
        datatype = {np.object_: "BYTES", np.int32: "INT32", np.bool_: "BOOL"}[array.dtype.type]
        inputs.append(grpcclient.InferInput(name, list(array.shape), datatype))
        inputs[-1].set_data_from_numpy(array)
    return inputs


def test_gpt2_stream_serves_tensorrt_llm_inputs_when_sent_like_genai_perf(server: TritonServer) -> None:
    responses: list = []
    grpc = grpcclient.InferenceServerClient(server.grpc_url)
    grpc.start_stream(callback=lambda result=None, error=None: responses.append((result, error)))
    inputs = trt_llm_inputs(40, stream=True, exclude_input_in_output=True, ignore_eos=True)
    grpc.async_stream_infer("gpt2_stream", inputs)
    grpc.stop_stream()  # waits for the stream to end
    grpc.close()
    assert responses and all(e is None for _, e in responses), responses[-1]
    last = responses[-1][0]
    assert int(last.as_numpy("num_output_tokens").reshape(-1)[0]) == 40
    assert int(last.as_numpy("num_input_tokens").reshape(-1)[0]) == int(last.as_numpy("prompt_tokens").reshape(-1)[0])


def test_gpt2_answers_with_the_prompt_and_token_counts_when_unary_grpc_asks_tensorrt_llm_style(
    server: TritonServer,
) -> None:
    grpc = grpcclient.InferenceServerClient(server.grpc_url)
    result = grpc.infer("gpt2", trt_llm_inputs(5, stream=False, exclude_input_in_output=False))
    grpc.close()
    generated = client.generate(server.http_url, PROMPT, max_tokens=5)
    assert result.as_numpy("text_output").reshape(-1)[0].decode() == PROMPT + generated.text
    assert int(result.as_numpy("num_output_tokens").reshape(-1)[0]) == 5
    assert int(result.as_numpy("num_input_tokens").reshape(-1)[0]) == generated.prompt_tokens
