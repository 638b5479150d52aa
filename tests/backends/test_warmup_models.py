"""Warmup requests through the model.py files: the samples the builder writes, as Triton would send them.

Triton builds each warmup request from `<model>/warmup/<input>` (BYTES: a 4-byte length before the element) and
runs it through execute() before the model reports ready. Here the same bytes go through the stubbed pb_utils. gpt2
(the BLS forwarder) carries none: see docs/warmup.md.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from builders import repository, vision, warmup
from builders.triton_config import Target
from tests.backends.pb_utils_stub import (
    TRITONSERVER_RESPONSE_COMPLETE_FINAL,
    Request,
    loaded,
    output,
    read_config,
)
from tritonyard_contract import FRAME_U8, IMAGE_BYTES, MAX_TOKENS, TEXT_INPUT


def bytes_element(path: Path) -> bytes:
    """The one element of a BYTES warmup file, as Triton reads it: a little-endian length, then the bytes."""
    data = path.read_bytes()
    (length,) = struct.unpack("<I", data[:4])
    assert length == len(data) - 4
    return data[4:]


def warmup_request(model_dir: Path) -> Request:
    """A request with the inputs of the model's first warmup sample, read from its files as Triton reads them."""
    sample = read_config(model_dir)["model_warmup"][0]
    inputs = {}
    for name, spec in sample["inputs"].items():
        path = model_dir / warmup.FOLDER / spec["input_data_file"]
        if spec["data_type"] == "TYPE_STRING":
            inputs[name] = np.array([[bytes_element(path)]], dtype=np.object_)
        else:
            inputs[name] = np.frombuffer(path.read_bytes(), np.int32).reshape(1, -1)
    return Request(inputs)


@pytest.fixture(scope="module")
def decoder_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image_decoder model alone, written by the builder (no ONNX export needed)."""
    repo = tmp_path_factory.mktemp("decoder_repo")
    [spec] = [s for s in vision.specs(vision.VisionConfig()) if s.name == "image_decoder"]
    repository.add_model(repo, spec, Target("cpu"))
    return repo


def test_image_decoder_decodes_the_warmup_jpeg_into_a_full_frame_when_warming_up(decoder_repo) -> None:
    model_dir = decoder_repo / "image_decoder"
    request = warmup_request(model_dir)
    assert set(read_config(model_dir)["model_warmup"][0]["inputs"]) == {IMAGE_BYTES.name}
    with loaded(model_dir) as model:
        [response] = model.execute([request])
    assert not response.has_error(), response.error() and response.error().message()
    frame = output(response, FRAME_U8.name)
    assert frame.shape == (1, *FRAME_U8.dims) and frame.dtype == np.uint8
    assert len(np.unique(frame)) > 3  # the picture, not a flat frame: the real decode and resize ran


def test_gpt2_stream_generates_the_warmup_tokens_when_sent_its_warmup_sample(gpt2_cpu_repo) -> None:
    model_dir = gpt2_cpu_repo / "gpt2_stream"
    assert set(read_config(model_dir)["model_warmup"][0]["inputs"]) == {TEXT_INPUT.name, MAX_TOKENS.name}
    with loaded(model_dir) as stream:
        request = warmup_request(model_dir)
        assert stream.execute([request]) is None  # decoupled: pieces, then the final flag
        responses = request.sender.responses()
    assert request.sender.sent[-1][1] == TRITONSERVER_RESPONSE_COMPLETE_FINAL
    assert not any(r.has_error() for r in responses)
    assert int(output(responses[-1], "num_output_tokens").reshape(-1)[0]) == warmup.NEW_TOKENS


def test_gpt2_carries_no_warmup_when_built(gpt2_cpu_repo) -> None:
    """gpt2 forwards over BLS, and forwarding its warmup aborted Triton 2.51 (docs/warmup.md): none is written."""
    assert "model_warmup" not in read_config(gpt2_cpu_repo / "gpt2")
    assert not (gpt2_cpu_repo / "gpt2" / warmup.FOLDER).exists()
