"""The contract's letterbox (Letterbox, frame_letterbox, to_source_boxes) against geometry worked out by hand.

A source image (W x H) is letterboxed twice before YOLO sees it:

1. into the 3840x2160 frame (the image decoder, the contract's geometry): uniform scale s = min(3840/W, 2160/H), the
   image resized to new_w x new_h = round(W*s) x round(H*s) and pasted at (floor((3840-new_w)/2),
   floor((2160-new_h)/2)), gray elsewhere;
2. the frame into 640x640 (builders/nets/frame_ops.py): an exact 6x reduction to 640x360, padded by 140 rows at the
   top (and bottom).

So a source point maps to letterbox pixels as det = src * k + pad_det with k = s/6, pad_det_x = frame_pad_x/6,
pad_det_y = frame_pad_y/6 + 140. The table below spells that arithmetic out per size instead of calling
frame_letterbox or Letterbox, and the tests compare the contract's inverse, to_source_boxes, with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from tritonyard_contract import DET_LETTERBOX, Letterbox, frame_letterbox, to_source_boxes
from tritonyard_contract.images import to_frame_u8


@dataclass(frozen=True)
class Case:
    """One source size with its frame placement and composite (source -> 640x640) mapping, derived by hand."""

    width: int
    height: int
    frame_scale: float  # s: source px -> frame px
    frame_pad: tuple[int, int]  # where the resized image is pasted in the 3840x2160 frame
    frame_size: tuple[int, int]  # new_w, new_h: the resized image's size in frame px

    @property
    def k(self) -> float:
        """Nominal composite scale: source px -> 640x640 letterbox px (the frame shrinks 6x)."""
        return self.frame_scale / 6

    @property
    def kxy(self) -> tuple[float, float]:
        """The composite scale each axis really gets: the image spans frame_size px of the frame, so new_w/W and
        new_h/H (s itself, except on an axis where W*s or H*s was rounded)."""
        return self.frame_size[0] / self.width / 6, self.frame_size[1] / self.height / 6

    @property
    def det_pad(self) -> tuple[float, float]:
        """Composite padding in 640x640 px: the frame's padding shrunk 6x, plus the 140 rows above the frame."""
        return self.frame_pad[0] / 6, self.frame_pad[1] / 6 + 140


CASES = {
    # 16:9 4K: the frame is the image (s = 1); the detector sees it at 1/6 below 140 rows of gray.
    "3840x2160": Case(3840, 2160, 1.0, (0, 0), (3840, 2160)),
    # 16:9 1080p: s = 3840/1920 = 2160/1080 = 2, no frame padding; k = 2/6 = 1/3.
    "1920x1080": Case(1920, 1080, 2.0, (0, 0), (3840, 2160)),
    # 4:3, pillarboxed: 3840/4000 = 0.96 > 2160/3000 = 0.72, so s = 0.72 -> 2880x2160, (3840-2880)/2 = 480 columns
    # of gray each side; k = 0.12, pad = (80, 140).
    "4000x3000": Case(4000, 3000, 0.72, (480, 0), (2880, 2160)),
    # Portrait: 3840/1080 = 3.56 > 2160/1920 = 1.125, s = 1.125 -> 1215x2160; 3840-1215 = 2625 is odd, the paste
    # is at floor(1312.5) = 1312; k = 0.1875, pad = (218.67, 140).
    "1080x1920": Case(1080, 1920, 1.125, (1312, 0), (1215, 2160)),
    # Very wide, letterboxed: 3840/3000 = 1.28 < 2160/1000 = 2.16, s = 1.28 -> 3840x1280, (2160-1280)/2 = 440 rows
    # of gray above and below; k = 0.21333, pad = (0, 140 + 440/6 = 213.33).
    "3000x1000": Case(3000, 1000, 1.28, (0, 440), (3840, 1280)),
    # VGA 4:3, upscaled: 3840/640 = 6 > 2160/480 = 4.5, s = 4.5 -> 2880x2160, pad 480; k = 0.75, pad = (80, 140).
    "640x480": Case(640, 480, 4.5, (480, 0), (2880, 2160)),
    # Odd: 3840/1001 = 3.836 > 2160/777 = 2.7799, s = 2160/777; 1001 * 2160/777 = 2782.70 -> 2783 columns,
    # (3840-2783)/2 = 528.5 -> 528; k = 360/777, pad = (88, 140).
    "1001x777": Case(1001, 777, 2160 / 777, (528, 0), (2783, 2160)),
}


def forward(case: Case, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Source px -> 640x640 letterbox px with the hand-derived composite mapping (per-axis scale)."""
    (kx, ky), (pad_x, pad_y) = case.kxy, case.det_pad
    return x * kx + pad_x, y * ky + pad_y


def backward(case: Case, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """640x640 letterbox px -> source px: the inverse of forward, unclipped."""
    (kx, ky), (pad_x, pad_y) = case.kxy, case.det_pad
    return (x - pad_x) / kx, (y - pad_y) / ky


def rows(boxes: np.ndarray, scores: np.ndarray | None = None, classes: np.ndarray | None = None) -> np.ndarray:
    """[N,4] boxes -> [N,6] detection rows (score 0.9 and class 0 unless given), float32 as served."""
    n = len(boxes)
    scores = np.full(n, 0.9) if scores is None else scores
    classes = np.zeros(n) if classes is None else classes
    return np.column_stack([boxes, scores, classes]).astype(np.float32)


def source_boxes(case: Case, n: int, seed: int) -> np.ndarray:
    """n random boxes inside the source image, as float64 [n, 4]."""
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(0, case.width, (n, 2)), axis=1)
    y = np.sort(rng.uniform(0, case.height, (n, 2)), axis=1)
    return np.column_stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]])


@pytest.mark.parametrize("name", CASES)
def test_hand_derived_geometry_is_where_the_decoder_pastes_the_image(name: str) -> None:
    """The table itself is checked against the real letterbox: a solid image's footprint in the frame."""
    case = CASES[name]
    frame = to_frame_u8(Image.new("RGB", (case.width, case.height), (200, 30, 60)))
    inside = frame[:, :, 1] < 72  # 30 inside the image, 114 in the gray bands
    ys, xs = np.nonzero(inside.any(axis=1))[0], np.nonzero(inside.any(axis=0))[0]
    assert (xs[0], ys[0]) == case.frame_pad
    assert (xs[-1] + 1 - xs[0], ys[-1] + 1 - ys[0]) == case.frame_size
    assert inside.sum() == case.frame_size[0] * case.frame_size[1]
    assert case.frame_scale == min(3840 / case.width, 2160 / case.height)


@pytest.mark.parametrize("name", CASES)
def test_to_source_boxes_inverts_hand_derived_mapping_when_given_letterbox_points(name: str) -> None:
    case = CASES[name]
    # Corners and centre of the image's footprint in the 640x640 letterbox, plus a few points in between.
    pad_x, pad_y = case.det_pad
    right, bottom = pad_x + case.width * case.kxy[0], pad_y + case.height * case.kxy[1]
    lx = np.array([pad_x, pad_x, (pad_x + right) / 2, pad_x + 0.3 * (right - pad_x), right])
    ly = np.array([pad_y, pad_y + 1.0, (pad_y + bottom) / 2, pad_y + 0.7 * (bottom - pad_y), bottom])
    det = rows(np.column_stack([lx, ly, lx + 0.5, ly + 0.5]).clip(0, 640))
    got = to_source_boxes(det, case.width, case.height)

    d = det.astype(np.float64)  # the served float32 values, exactly
    x1, y1 = backward(case, d[:, 0], d[:, 1])
    x2, y2 = backward(case, d[:, 2], d[:, 3])
    expected = np.column_stack(
        [x1.clip(0, case.width), y1.clip(0, case.height), x2.clip(0, case.width), y2.clip(0, case.height)]
    )
    np.testing.assert_allclose(got[:, :4], expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(got[:, 4:], d[:, 4:])
    # The footprint's corners are the image's corners.
    np.testing.assert_allclose(got[0, :2], [0, 0], atol=1e-3 / case.k)
    np.testing.assert_allclose(got[-1, :2], [case.width, case.height], atol=1e-3 / case.k)


@pytest.mark.parametrize("name", CASES)
def test_to_source_boxes_round_trips_when_given_source_boxes(name: str) -> None:
    case = CASES[name]
    src = source_boxes(case, 40, seed=len(name))
    x1, y1 = forward(case, src[:, 0], src[:, 1])
    x2, y2 = forward(case, src[:, 2], src[:, 3])
    got = to_source_boxes(rows(np.column_stack([x1, y1, x2, y2])), case.width, case.height)
    # float32 letterbox coordinates carry ~3e-5 px; divided by k that is well under a source pixel.
    np.testing.assert_allclose(got[:, :4], src, rtol=0, atol=max(0.01, 1e-4 / case.k))


@pytest.mark.parametrize("name", CASES)
def test_to_source_boxes_is_within_a_pixel_of_the_exact_placement(name: str) -> None:
    """Boxes pushed through the per-axis scale the resize really applies come back within a source pixel."""
    case = CASES[name]
    src = source_boxes(case, 40, seed=100 + len(name))
    src = np.vstack([src, [0, 0, case.width, case.height]])  # the whole image: the far edge is the worst case
    x1, y1 = forward(case, src[:, 0], src[:, 1])
    x2, y2 = forward(case, src[:, 2], src[:, 3])
    got = to_source_boxes(rows(np.column_stack([x1, y1, x2, y2])), case.width, case.height)
    err = np.abs(got[:, :4] - src).max()
    assert err < 1.0, f"{name}: {err:.3f} source px off"


# Sizes whose W*s or H*s was rounded (hand-derived: 1001*2160/777 = 2782.70 -> 2783; 8000 x 6001: s = 2160/6001,
# 8000*s = 2879.52 -> 2880; 5117 x 7892: s = 2160/7892, 5117*s = 1400.497 -> 1400).
ROUNDED = {
    "1001x777": CASES["1001x777"],
    "8000x6001": Case(8000, 6001, 2160 / 6001, (480, 0), (2880, 2160)),
    "5117x7892": Case(5117, 7892, 2160 / 7892, (1220, 0), (1400, 2160)),
}


@pytest.mark.parametrize("name", ROUNDED)
def test_rounded_table_is_the_decoders_placement(name: str) -> None:
    """The table above checked against the decoder's own numbers (the images are too big to render here)."""
    case = ROUNDED[name]
    box = frame_letterbox(case.width, case.height)
    assert (box.scale, (box.pad_x, box.pad_y), (box.new_w, box.new_h)) == (
        case.frame_scale,
        case.frame_pad,
        case.frame_size,
    )


@pytest.mark.parametrize("name", ROUNDED)
def test_to_source_boxes_is_exact_when_an_axis_was_rounded(name: str) -> None:
    case = ROUNDED[name]
    src = np.array([[0.25, 0.25, 0.5, 0.5], [0.1, 0.6, 0.999, 0.999]]) * np.array([case.width, case.height] * 2)
    x1, y1 = forward(case, src[:, 0], src[:, 1])
    x2, y2 = forward(case, src[:, 2], src[:, 3])
    got = to_source_boxes(rows(np.column_stack([x1, y1, x2, y2])), case.width, case.height)
    # float32 letterbox coordinates resolve ~6e-5 px there: 2e-4 frame px, under 1e-3 source px even at s = 0.27.
    np.testing.assert_allclose(got[:, :4], src, rtol=0, atol=0.01)


def test_to_source_boxes_drops_rows_without_score_and_keeps_order() -> None:
    case = CASES["1920x1080"]
    det = np.zeros((300, 6), np.float32)  # served rows are zero padded
    src = np.array([[100, 200, 300, 400], [0, 0, 1920, 1080], [1000, 500, 1010, 530]], np.float64)
    x1, y1 = forward(case, src[:, 0], src[:, 1])
    x2, y2 = forward(case, src[:, 2], src[:, 3])
    det[[5, 17, 250]] = rows(np.column_stack([x1, y1, x2, y2]), np.array([0.3, 0.9, 0.5]), np.array([2, 0, 1]))
    det[40] = [100, 200, 300, 400, 0.0, 3]  # a box with score 0 is padding too
    got = to_source_boxes(det, 1920, 1080)
    assert got.shape == (3, 6) and got.dtype == np.float64
    np.testing.assert_allclose(got[:, :4], src, atol=1e-3)
    np.testing.assert_allclose(got[:, 4], [0.3, 0.9, 0.5], atol=1e-7)
    np.testing.assert_array_equal(got[:, 5], [2, 0, 1])
    assert to_source_boxes(np.zeros((300, 6), np.float32), 1920, 1080).shape == (0, 6)


@pytest.mark.parametrize("name", ["1080x1920", "3000x1000", "4000x3000"])
def test_to_source_boxes_clips_to_image_when_box_reaches_into_padding(name: str) -> None:
    case = CASES[name]
    # The whole 640x640 letterbox, and boxes straddling each edge of the image's footprint.
    pad_x, pad_y = case.det_pad
    right, bottom = pad_x + case.width * case.kxy[0], pad_y + case.height * case.kxy[1]
    mid_x, mid_y = (pad_x + right) / 2, (pad_y + bottom) / 2
    det = rows(
        np.array(
            [
                [0, 0, 640, 640],
                [max(pad_x - 20, 0), mid_y, mid_x, mid_y + 10],
                [mid_x, max(pad_y - 20, 0), mid_x + 10, mid_y],
                [mid_x, mid_y, min(right + 20, 640), min(bottom + 20, 640)],
            ]
        )
    )
    got = to_source_boxes(det, case.width, case.height)
    assert np.all(got[:, [0, 2]] >= 0) and np.all(got[:, [0, 2]] <= case.width)
    assert np.all(got[:, [1, 3]] >= 0) and np.all(got[:, [1, 3]] <= case.height)
    np.testing.assert_allclose(got[0, :4], [0, 0, case.width, case.height])
    assert got[1, 0] == 0 and got[2, 1] == 0
    assert got[3, 2] == case.width and got[3, 3] == case.height
    # The unclipped coordinates are the hand-derived ones.
    d = det.astype(np.float64)
    cx, cy = backward(case, d[1:, 2], d[1:, 3])
    np.testing.assert_allclose(got[1:3, 2], cx[:2].clip(0, case.width), atol=1e-6)
    np.testing.assert_allclose(got[1:3, 3], cy[:2].clip(0, case.height), atol=1e-6)


@pytest.mark.parametrize(
    "size,box,scale,pad,new",
    [
        # the detector letterbox: 640/3840 = 1/6 < 640/2160 = 0.296, so s = 1/6 -> 640x360, (640-360)/2 = 140
        ((3840, 2160), (640, 640), 1 / 6, (0, 140), (640, 360)),
        ((1920, 1080), (3840, 2160), 2.0, (0, 0), (3840, 2160)),
        ((4000, 3000), (3840, 2160), 0.72, (480, 0), (2880, 2160)),
        ((1080, 1920), (3840, 2160), 1.125, (1312, 0), (1215, 2160)),
        ((3000, 1000), (3840, 2160), 1.28, (0, 440), (3840, 1280)),
        ((1001, 777), (3840, 2160), 2160 / 777, (528, 0), (2783, 2160)),
        # a portrait into a square: 640/1000 = 0.64 > 640/2000 = 0.32 -> 320x640, (640-320)/2 = 160
        ((1000, 2000), (640, 640), 0.32, (160, 0), (320, 640)),
    ],
)
def test_letterbox_fit_when_given_sizes(size, box, scale, pad, new) -> None:
    lb = Letterbox.fit(*size, *box)
    assert lb.scale == pytest.approx(scale, rel=1e-12)
    assert (lb.pad_x, lb.pad_y) == pad
    assert (lb.new_w, lb.new_h) == new


def test_letterbox_to_source_when_given_points() -> None:
    lb = DET_LETTERBOX
    assert (lb.scale, lb.pad_x, lb.pad_y, lb.new_w, lb.new_h) == (1 / 6, 0, 140, 640, 360)
    assert lb.to_source(0, 140) == (0, 0)
    assert lb.to_source(640, 500) == pytest.approx((3840, 2160))
    assert lb.to_source(320, 320) == pytest.approx((1920, 1080))
    assert lb.to_source(0, 0) == pytest.approx((0, -840))  # in the band above the frame: unclipped
    xs, ys = lb.to_source(np.array([10.0, 100.5]), np.array([150.0, 499.0]))  # vectorised, as to_source_boxes uses it
    np.testing.assert_allclose(xs, [60, 603])
    np.testing.assert_allclose(ys, [60, 2154])
    pillar = Letterbox.fit(4000, 3000, 3840, 2160)  # 0.72, pad_x 480
    assert pillar.to_source(480, 0) == (0, 0)
    assert pillar.to_source(3360, 2160) == pytest.approx((4000, 3000))


def test_letterbox_keeps_a_side_that_rounds_to_zero_one_pixel_wide() -> None:
    """A 1x10000 strip: 1 * 0.216 rounds to 0 columns; the one rule keeps it 1 column, centred."""
    box = frame_letterbox(1, 10000)
    assert (box.new_w, box.new_h, box.pad_x, box.pad_y) == (1, 2160, 1919, 0)
    assert Letterbox.fit(1, 10000, 3840, 2160) == box
