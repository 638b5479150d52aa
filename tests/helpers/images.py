"""Encoded images for the decoder tests: small valid ones, headers that lie about their size, and broken ones."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


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


def jpeg_declaring(width: int, height: int) -> bytes:
    """A ~600-byte JPEG whose frame header claims width x height (a decompression bomb)."""
    data = bytearray(encode(Image.new("RGB", (16, 16), (1, 2, 3))))
    sof = data.find(b"\xff\xc0")  # baseline SOF0: FF C0, length(2), precision(1), height(2), width(2)
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def small_image(width: int = 64, height: int = 36, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


# Images image_decoder must refuse: name -> (bytes, words its message must contain). The byte caps assume
# max_image_bytes=2_000_000 ("too many bytes"); the served repository's 32 MiB cap needs a bigger blob.
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
