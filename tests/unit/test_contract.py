"""tritonyard_contract on its own: typed model parameters, tensor dtypes, the frame placement, image acceptance."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from tests.helpers.images import BAD, png_with_size
from tritonyard_contract import FRAME, IMAGE_BYTES, SEED, frame_letterbox, place_in_frame
from tritonyard_contract.images import ImageError, decode
from tritonyard_contract.params import ModelParams, param
from tritonyard_contract.protocol import tag_error_code, untag_error_code


@dataclass(frozen=True)
class Params(ModelParams):
    n_layer: int
    threads: int = param(2, minimum=1)
    mode: str = param("in_process", choices=("in_process", "bls"))
    concat: bool = True
    scale: float = 0.5
    names: tuple = param((), parse=lambda text: tuple(text.split(",")))


def config(**values: str) -> dict:
    return {"parameters": {k: {"string_value": v} for k, v in values.items()}}


def test_params_read_every_field_by_its_type_when_given() -> None:
    got = Params.from_config(config(n_layer="12", threads="4", mode="bls", concat="FALSE", scale="0.25", names="a,b"))
    assert got == Params(12, 4, "bls", False, 0.25, ("a", "b"))
    assert Params.from_config(config(n_layer="2", other="ignored")) == Params(2)


@pytest.mark.parametrize(
    "values,message",
    [
        ({}, "parameter n_layer is required"),
        ({"n_layer": "x"}, "parameter n_layer: cannot read 'x'"),
        ({"n_layer": "1", "threads": "0"}, "parameter threads must be positive, got 0"),
        ({"n_layer": "1", "mode": "gpu"}, "parameter mode must be one of in_process, bls, got 'gpu'"),
        ({"n_layer": "1", "concat": "yes"}, "parameter concat: cannot read 'yes'"),
    ],
)
def test_params_refuse_with_the_parameter_named_when_a_value_is_wrong(values: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Params.from_config(config(**values))


def test_tensor_specs_give_wire_and_numpy_dtypes() -> None:
    assert (FRAME.datatype, FRAME.np_dtype) == ("FP32", np.float32)
    assert (IMAGE_BYTES.datatype, IMAGE_BYTES.np_dtype) == ("BYTES", np.object_)
    assert (SEED.datatype, SEED.np_dtype) == ("UINT64", np.uint64)


def test_place_in_frame_equals_pasting_onto_a_gray_canvas() -> None:
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (37, 61, 3), dtype=np.uint8))
    box = frame_letterbox(*image.size)
    resized = image.resize((box.new_w, box.new_h), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (3840, 2160), (114, 114, 114))
    canvas.paste(resized, (box.pad_x, box.pad_y))
    np.testing.assert_array_equal(place_in_frame(np.asarray(resized), box), np.asarray(canvas))
    with pytest.raises(ValueError, match="letterbox needs"):
        place_in_frame(np.zeros((2, 2, 3), np.uint8), box)


def test_decode_applies_caps_only_when_given() -> None:
    """The server passes its caps; a client passes none and refuses only what it cannot turn into a frame."""
    data = BAD["too many bytes"][0]
    with pytest.raises(ImageError, match="above the limit of 2000000"):
        decode(data, max_bytes=2_000_000, max_pixels=1 << 30)
    with pytest.raises(ImageError, match="not a decodable image"):
        decode(data)  # uncapped: refused for what it is, not for its size
    bomb = png_with_size(100_000, 100_000)  # past Pillow's own decompression-bomb guard
    with pytest.raises(ImageError, match=r"above the limit of 1000 pixels \(.*decompression bomb"):
        decode(bomb, max_bytes=1 << 30, max_pixels=1000)
    with pytest.raises(ImageError, match="not a decodable image: .*decompression bomb"):
        decode(bomb)
    with pytest.raises(ImageError, match=r"image is 100x100 = 10000 pixels, above the limit of 9999"):
        decode(png_with_size(100, 100), max_bytes=1 << 30, max_pixels=9999)  # refused before any pixel is decoded


def test_error_code_tag_survives_the_round_trip_when_gpt2_stream_answers_a_bls_caller() -> None:
    """Triton 2.51 turns a BLS callee's error code into INTERNAL; the code travels in the message instead."""
    tagged = tag_error_code("INVALID_ARG", "max_tokens: must be between 1 and 255, got -5")
    assert untag_error_code(tagged) == ("INVALID_ARG", "max_tokens: must be between 1 and 255, got -5")
    assert untag_error_code("text_input: is required") == (None, "text_input: is required")
    assert untag_error_code("[code not a name] x") == (None, "[code not a name] x")
