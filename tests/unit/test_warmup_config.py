"""Warmup from the typed specs: every non-ensemble config of both targets carries one per batch size, with
realistic samples the builder writes where zeros would not exercise the real path."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import json_format

from builders import catalog, gpt2, repository, vision, warmup
from builders.errors import BuildError
from builders.triton_config import Ensemble, OnnxModel, PythonModel, Target, model_config
from tritonyard_contract import (
    CROP,
    DETECTIONS,
    FRAME,
    FRAME_U8,
    IMAGE_BYTES,
    LETTERBOXED,
    MAX_TOKENS,
    TEXT_INPUT,
    TensorSpec,
)
from tritonyard_contract.images import decode


def required(spec) -> set[str]:
    optional = spec.optional_inputs if isinstance(spec, PythonModel) else frozenset()
    return {t.name for t in spec.inputs if t.name not in optional}


@pytest.mark.parametrize("device,sizes", [("cpu", [1, 2, 4]), ("gpu", [1, 4, 8])])
def test_model_config_warms_every_batch_size_when_the_model_is_not_an_ensemble(device: str, sizes: list[int]) -> None:
    for spec in catalog.all_specs(device):
        config = model_config(spec, Target(device))
        if isinstance(spec, Ensemble) or spec.name == gpt2.ENTRY:
            # Triton refuses model_warmup on ensembles; gpt2's (over BLS) aborted Triton 2.51: docs/warmup.md
            assert not config.model_warmup and (isinstance(spec, Ensemble) or spec.warmup is None), spec.name
            continue
        assert [w.batch_size for w in config.model_warmup] == sizes, spec.name
        for sample in config.model_warmup:
            assert sample.count == 1 and sample.name == f"batch_{sample.batch_size}"
            extra = {t.name for t in spec.warmup.optional}
            assert set(sample.inputs) == required(spec) | extra, spec.name


def test_model_config_warms_gpt2_stream_with_a_prompt_and_max_tokens_when_rendered() -> None:
    for spec in gpt2.specs(gpt2.Gpt2Config()):
        if spec.name == gpt2.ENTRY:
            continue
        [first, *_] = model_config(spec, Target("cpu")).model_warmup
        inputs = json_format.MessageToDict(first, preserving_proto_field_name=True)["inputs"]
        assert inputs == {
            TEXT_INPUT.name: {"data_type": "TYPE_STRING", "dims": ["1"], "input_data_file": TEXT_INPUT.name},
            MAX_TOKENS.name: {"data_type": "TYPE_INT32", "dims": ["1"], "input_data_file": MAX_TOKENS.name},
        }


def test_model_config_warms_the_frames_with_zero_data_when_a_file_would_be_99_mb() -> None:
    by_name = {s.name: s for s in vision.specs(vision.VisionConfig())}
    for name, frame in (("preprocessing", FRAME), ("postprocessing_u8", FRAME_U8)):
        sample = model_config(by_name[name], Target("cpu")).model_warmup[0].inputs[frame.name]
        assert sample.zero_data and not sample.input_data_file


def element(data: bytes) -> bytes:
    (length,) = struct.unpack("<I", data[:4])
    assert length == len(data) - 4, "a BYTES sample is one length-prefixed element"
    return data[4:]


def test_samples_are_realistic_when_decoded_as_triton_reads_them() -> None:
    image = decode(element(warmup.SAMPLES[IMAGE_BYTES.name]()), max_bytes=1 << 20, max_pixels=1 << 20)
    assert image.size == warmup.JPEG_SIZE
    assert element(warmup.SAMPLES[TEXT_INPUT.name]()).decode() == warmup.PROMPT
    assert np.frombuffer(warmup.SAMPLES[MAX_TOKENS.name](), np.int32).tolist() == [warmup.NEW_TOKENS]
    detections = np.frombuffer(warmup.SAMPLES[DETECTIONS.name](), np.float32).reshape(DETECTIONS.dims)
    assert detections[0, 4] > 0.25 and not detections[1:].any()  # one box above the NMS score threshold
    for spec in (LETTERBOXED, CROP):
        pixels = np.frombuffer(warmup.SAMPLES[spec.name](), np.float32)
        assert pixels.size == np.prod(spec.dims) and 0 <= pixels.min() < pixels.max() <= 1, spec.name


def test_write_files_writes_every_file_the_config_names_when_a_model_is_added(tmp_path: Path) -> None:
    specs = [s for s in catalog.all_specs("cpu") if isinstance(s, PythonModel) and s.warmup is not None]
    for spec in specs:
        repository.add_model(tmp_path, spec, Target("cpu"))
        for sample in model_config(spec, Target("cpu")).model_warmup:
            for data in sample.inputs.values():
                if data.input_data_file:
                    assert (tmp_path / spec.name / warmup.FOLDER / data.input_data_file).stat().st_size > 0


def test_model_config_fails_the_build_naming_the_input_when_a_bytes_input_has_no_warmup_sample() -> None:
    odd = OnnxModel("odd", (TensorSpec("mystery", "TYPE_STRING", (1,)),), (CROP,))
    with pytest.raises(BuildError, match="odd: no warmup sample for BYTES input mystery"):
        model_config(odd, Target("cpu"))


def test_model_config_warms_with_zero_data_when_a_numeric_input_has_no_sample() -> None:
    plain = OnnxModel("plain", (TensorSpec("x", "TYPE_FP32", (3,)),), (CROP,))
    [first, *_] = model_config(plain, Target("cpu")).model_warmup
    assert first.inputs["x"].zero_data and list(first.inputs["x"].dims) == [3]


def test_warmup_refuses_a_count_below_one_when_declared() -> None:
    with pytest.raises(BuildError, match="warmup count must be >= 1"):
        warmup.Warmup(count=0)


def test_jpeg_sample_is_a_jpeg_when_written() -> None:
    from PIL import Image

    with Image.open(io.BytesIO(element(warmup.SAMPLES[IMAGE_BYTES.name]()))) as img:
        assert img.format == "JPEG"
