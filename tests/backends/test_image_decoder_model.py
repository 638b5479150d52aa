"""image_decoder's model.py (and the contract's images module) from its built version folder, driven through the
stubbed pb_utils."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from builders import repository, vision
from builders.triton_config import Target
from clients.lib import images
from tests.backends.pb_utils_stub import Request, TritonError, load_model, output
from tests.helpers.images import BAD, encode, small_image
from tritonyard_contract import FRAME_U8, Letterbox, frame_letterbox
from tritonyard_contract.images import decode, to_frame_u8


@pytest.fixture(scope="module")
def decoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """image_decoder as the builder writes it (config.pbtxt, model.py and the files shipped beside it)."""
    spec = next(s for s in vision.specs(vision.VisionConfig(max_image_bytes=2_000_000)) if s.name == "image_decoder")
    repo = tmp_path_factory.mktemp("image_decoder_repo")
    repository.add_model(repo, spec, Target("cpu"))
    return repo / "image_decoder"


@pytest.fixture(scope="module")
def decoder(decoder_dir: Path):
    return load_model(decoder_dir)


def request(*blobs: bytes) -> Request:
    return Request(image_bytes=np.array([[b] for b in blobs], dtype=np.object_))


def test_frame_letterbox_keeps_aspect_when_image_is_not_16_9() -> None:
    assert frame_letterbox(3840, 2160) == Letterbox(1.0, 0, 0, 3840, 2160)
    assert frame_letterbox(1920, 1080) == Letterbox(2.0, 0, 0, 3840, 2160)
    assert frame_letterbox(1000, 1000) == Letterbox(2.16, 840, 0, 2160, 2160)


def test_image_decoder_returns_client_side_frame_when_jpeg_is_valid(decoder) -> None:
    data = encode(small_image())
    [response] = decoder.execute([request(data)])
    assert not response.has_error()
    got = output(response, FRAME_U8.name)
    image = decode(data, max_bytes=1 << 30, max_pixels=1 << 30)
    assert got.shape == (1, *FRAME_U8.dims) and got.dtype == np.uint8
    np.testing.assert_array_equal(got[0], to_frame_u8(image))
    # The client's own decoding (clients.lib.images) makes exactly the same pixels for `ensemble`.
    client_frame = images.to_frame(images.decode(data))
    np.testing.assert_array_equal(got[0].transpose(2, 0, 1).astype(np.float32), client_frame)


def test_image_decoder_pads_with_gray_when_image_is_square(decoder) -> None:
    square = Image.new("RGB", (50, 50), (10, 200, 30))
    [response] = decoder.execute([request(encode(square, "PNG"))])
    frame = output(response, FRAME_U8.name)[0]
    assert frame[1080, 839].tolist() == [114, 114, 114]  # left band: 840 px of padding
    assert frame[1080, 840].tolist() == [10, 200, 30]  # the image starts here
    assert frame[1080, 3000].tolist() == [114, 114, 114]  # right band


@pytest.mark.parametrize("name", sorted(BAD))
def test_image_decoder_fails_only_that_request_when_image_is_bad(decoder, name: str) -> None:
    data, message = BAD[name]
    good = encode(small_image())
    responses = decoder.execute([request(good), request(data), request(good)])
    assert [r.has_error() for r in responses] == [False, True, False]
    error = responses[1].error()
    assert error.code() == TritonError.INVALID_ARG
    assert "image_bytes" in error.message() and message in error.message()


def test_image_decoder_decodes_every_image_when_request_carries_two(decoder) -> None:
    [response] = decoder.execute([request(encode(small_image(seed=1)), encode(small_image(seed=2)))])
    assert output(response, FRAME_U8.name).shape == (2, *FRAME_U8.dims)


def test_image_decoder_refuses_to_start_when_caps_are_not_positive(decoder_dir: Path) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        load_model(decoder_dir, parameters={"max_bytes": "0"})
