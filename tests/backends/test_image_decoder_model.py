"""image_decoder's model.py and frames.py, driven through a stubbed triton_python_backend_utils."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import json_format
from PIL import Image

from builders import vision
from builders.contract import FRAME_U8
from builders.triton_config import Target, model_config
from python_backends.image_decoder import frames
from tests.backends.pb_utils_stub import Request, TritonError, load_model


def encode(img: Image.Image, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header declares any size (a bomb or a zero-size image) without the pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def decoder(tmp_path_factory: pytest.TempPathFactory):
    spec = next(s for s in vision.specs(vision.VisionConfig(max_image_bytes=2_000_000)) if s.name == "image_decoder")
    config = json_format.MessageToDict(model_config(spec, Target("cpu")), preserving_proto_field_name=True)
    version = tmp_path_factory.mktemp("image_decoder") / "1"
    version.mkdir()
    return load_model("image_decoder", config, version, name="image_decoder")


def request(*blobs: bytes) -> Request:
    return Request(image_bytes=np.array([[b] for b in blobs], dtype=np.object_))


def small_image(width: int = 64, height: int = 36, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def test_frames_fit_geometry_keeps_aspect_when_image_is_not_16_9() -> None:
    assert frames.fit_geometry(3840, 2160) == (1.0, 0, 0, 3840, 2160)
    assert frames.fit_geometry(1920, 1080) == (2.0, 0, 0, 3840, 2160)
    scale, pad_x, pad_y, new_w, new_h = frames.fit_geometry(1000, 1000)
    assert (scale, pad_x, pad_y, new_w, new_h) == (2.16, 840, 0, 2160, 2160)


def test_image_decoder_returns_client_side_frame_when_jpeg_is_valid(decoder) -> None:
    data = encode(small_image())
    [response] = decoder.execute([request(data)])
    assert not response.has_error()
    got = response.output(FRAME_U8.name)
    image = frames.decode(data, max_bytes=1 << 30, max_pixels=1 << 30)
    assert got.shape == (1, *FRAME_U8.dims) and got.dtype == np.uint8
    np.testing.assert_array_equal(got[0], frames.to_frame_u8(image))
    # The client's FP32 frame for `ensemble` holds exactly the same pixels.
    np.testing.assert_array_equal(got[0].transpose(2, 0, 1).astype(np.float32), frames.to_frame(image))


def test_image_decoder_pads_with_gray_when_image_is_square(decoder) -> None:
    square = Image.new("RGB", (50, 50), (10, 200, 30))
    [response] = decoder.execute([request(encode(square, "PNG"))])
    frame = response.output(FRAME_U8.name)[0]
    assert frame[1080, 839].tolist() == [114, 114, 114]  # left band: 840 px of padding
    assert frame[1080, 840].tolist() == [10, 200, 30]  # the image starts here
    assert frame[1080, 3000].tolist() == [114, 114, 114]  # right band


BAD = {
    "empty": (b"", "0 bytes"),
    "not an image": (b"hello, I am text" * 10, "not a decodable image"),
    "truncated jpeg": (encode(small_image(640, 360))[:20_000], "corrupt"),
    "png with alpha": (encode(Image.new("RGBA", (32, 32), (1, 2, 3, 4)), "PNG"), "alpha"),
    "zero size": (png_with_size(0, 10), "image_bytes"),
    "pixel bomb": (png_with_size(100_000, 100_000), "above the limit of"),
    "too many bytes": (b"\xff\xd8" + b"\0" * 2_000_001, "above the limit"),
    "gif": (encode(small_image(), "GIF"), "JPEG or PNG"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_image_decoder_fails_only_that_request_when_image_is_bad(decoder, name: str) -> None:
    data, message = BAD[name]
    good = encode(small_image())
    responses = decoder.execute([request(good), request(data), request(good)])
    assert [r.has_error() for r in responses] == [False, True, False]
    error = responses[1].error
    assert error.code() == TritonError.INVALID_ARG
    assert "image_bytes" in error.message() and message in error.message()


def test_image_decoder_decodes_every_image_when_request_carries_two(decoder) -> None:
    [response] = decoder.execute([request(encode(small_image(seed=1)), encode(small_image(seed=2)))])
    assert response.output(FRAME_U8.name).shape == (2, *FRAME_U8.dims)


def test_image_decoder_refuses_to_start_when_caps_are_not_positive(tmp_path: Path) -> None:
    config = {"input": [], "output": [], "parameters": {"max_bytes": {"string_value": "0"}}}
    with pytest.raises(ValueError, match="positive"):
        load_model("image_decoder", config, tmp_path)
