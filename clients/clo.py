"""CLO client: send a frame through the vision pipeline and print what came back.

python -m clients.clo --synthetic
python -m clients.clo frame.jpg --entry ensemble_jpeg --protocol grpc --save out.png
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from builders.contract import CROP, DET_LETTERBOX, DETECTIONS, FRAME, IMAGE_BYTES, OIL_PCT, PIPELINE_OUTPUTS
from clients import retry
from clients.synthetic import synthetic_scene
from python_backends.image_decoder import frames
from training.scenes import Scene, iou

ENTRIES = ("ensemble", "ensemble_jpeg")
MAX_BYTES, MAX_PIXELS = 1 << 40, 1 << 40  # the server enforces the real caps


@dataclass
class Result:
    """One pipeline response; boxes are in the source image's pixels."""

    boxes: np.ndarray  # [N, 6]: x1, y1, x2, y2, score, class
    detections: np.ndarray  # [300, 6] as served: letterbox (640x640) pixels, zero padded
    crop: np.ndarray  # [3, 384, 384] in 0..1
    oil_pct: float
    latency_s: float


def to_source_boxes(detections: np.ndarray, width: int, height: int) -> np.ndarray:
    """Map detections from letterbox pixels (640x640) to the source image (width x height)."""
    kept = detections[detections[:, 4] > 0].astype(np.float64)
    _, pad_x, pad_y, new_w, new_h = frames.fit_geometry(width, height)
    # The decoder resized to round(width*scale) x round(height*scale): each axis has its own exact scale.
    scale_x, scale_y = new_w / width, new_h / height
    for cols in ((0, 1), (2, 3)):
        x, y = DET_LETTERBOX.to_source(kept[:, cols[0]], kept[:, cols[1]])  # -> 3840x2160 frame pixels
        kept[:, cols[0]] = np.clip((x - pad_x) / scale_x, 0, width)
        kept[:, cols[1]] = np.clip((y - pad_y) / scale_y, 0, height)
    return kept


class CloClient:
    """Calls `ensemble` (FP32 frame, optionally through system shared memory) or `ensemble_jpeg`.

    A request the server refuses for lack of capacity (UNAVAILABLE) is retried per `retry_policy`.
    """

    def __init__(
        self,
        url: str,
        protocol: str = "http",
        shm: bool = False,
        headers: dict | None = None,
        retry_policy: retry.RetryPolicy = retry.DEFAULT,
    ) -> None:
        if protocol == "http":
            import tritonclient.http as api
        else:
            import tritonclient.grpc as api
        self.api, self.protocol = api, protocol
        self.client = api.InferenceServerClient(url)
        self.headers = headers or None  # e.g. the ingress Host header in front of KServe
        self.retry_policy = retry_policy
        self.shm_name: str | None = None
        if shm:
            self._register_shm()

    def _register_shm(self) -> None:
        import tritonclient.utils.shared_memory as shm

        size = int(np.prod(FRAME.dims)) * 4
        self.shm_name = f"clo_frame_{uuid.uuid4().hex[:8]}"
        self.shm_handle = shm.create_shared_memory_region(self.shm_name, f"/{self.shm_name}", size)
        self.client.register_system_shared_memory(self.shm_name, f"/{self.shm_name}", size)

    def close(self) -> None:
        if self.shm_name:
            import tritonclient.utils.shared_memory as shm

            self.client.unregister_system_shared_memory(self.shm_name)
            shm.destroy_shared_memory_region(self.shm_handle)
            self.shm_name = None
        self.client.close()

    def _outputs(self) -> list:
        if self.protocol == "http":
            return [self.api.InferRequestedOutput(t.name, binary_data=True) for t in PIPELINE_OUTPUTS]
        return [self.api.InferRequestedOutput(t.name) for t in PIPELINE_OUTPUTS]

    def _infer(self, model: str, inp, size: tuple[int, int]) -> Result:
        start = time.perf_counter()
        res = retry.call(
            lambda: self.client.infer(model, [inp], outputs=self._outputs(), headers=self.headers),
            self.retry_policy,
            what=model,
        )
        latency = time.perf_counter() - start  # retries included: what the caller waited
        det = res.as_numpy(DETECTIONS.name)[0]
        oil = float(res.as_numpy(OIL_PCT.name)[0, 0])
        return Result(to_source_boxes(det, *size), det, res.as_numpy(CROP.name)[0], oil, latency)

    def infer_frame(self, frame: np.ndarray, size: tuple[int, int]) -> Result:
        """Send an FP32 [3,2160,3840] frame to `ensemble`; `size` is the source image's (width, height)."""
        batch = frame[np.newaxis]
        inp = self.api.InferInput(FRAME.name, list(batch.shape), "FP32")
        if self.shm_name:
            import tritonclient.utils.shared_memory as shm

            shm.set_shared_memory_region(self.shm_handle, [batch])
            inp.set_shared_memory(self.shm_name, batch.nbytes)
        elif self.protocol == "http":
            inp.set_data_from_numpy(batch, binary_data=True)
        else:
            inp.set_data_from_numpy(batch)
        return self._infer("ensemble", inp, size)

    def infer_encoded(self, data: bytes, size: tuple[int, int]) -> Result:
        """Send encoded JPEG/PNG bytes to `ensemble_jpeg`, which decodes server-side."""
        batch = np.array([[data]], dtype=np.object_)
        inp = self.api.InferInput(IMAGE_BYTES.name, [1, 1], "BYTES")
        if self.protocol == "http":
            inp.set_data_from_numpy(batch, binary_data=True)
        else:
            inp.set_data_from_numpy(batch)
        return self._infer("ensemble_jpeg", inp, size)


def save_visual(path: Path, image: Image.Image, result: Result) -> None:
    """The source image with boxes drawn, and the 384x384 crop beside it."""
    view = image.copy()
    view.thumbnail((1280, 1280))
    k = view.width / image.width
    draw = ImageDraw.Draw(view)
    for x1, y1, x2, y2, score, cls in result.boxes:
        draw.rectangle([x1 * k, y1 * k, x2 * k, y2 * k], outline=(255, 40, 40), width=3)
        draw.text((x1 * k + 4, y1 * k + 4), f"{int(cls)} {score:.2f}", fill=(255, 40, 40))
    crop = Image.fromarray((np.clip(result.crop, 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0))
    canvas = Image.new("RGB", (view.width + crop.width + 16, max(view.height, crop.height + 24)), (255, 255, 255))
    canvas.paste(view, (0, 0))
    canvas.paste(crop, (view.width + 16, 24))
    ImageDraw.Draw(canvas).text((view.width + 16, 4), f"crop -> oil {result.oil_pct:.1f}%", fill=(0, 0, 0))
    canvas.save(path)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m clients.clo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("image", nargs="?", type=Path, help="JPEG or PNG of any size (fitted into 3840x2160)")
    p.add_argument(
        "--synthetic",
        action="store_true",
        help="use a generated 4K frame whose truth is known (one oiler at --level); print the truth beside the answer",
    )
    p.add_argument(
        "--level", type=float, default=62.0, help="--synthetic: the oiler's true oil level in %% (default 62)"
    )
    p.add_argument(
        "--entry",
        choices=ENTRIES,
        default="ensemble",
        help="ensemble: FP32 frame decoded here (99.5 MB); ensemble_jpeg: encoded bytes decoded by the server",
    )
    p.add_argument("--protocol", choices=("http", "grpc"), default="http")
    p.add_argument("--url", help="server address (default $TRITON_HTTP_URL / $TRITON_GRPC_URL or localhost:8000/8001)")
    p.add_argument(
        "--shm", action="store_true", help="send the FP32 frame through system shared memory (ensemble only, same host)"
    )
    p.add_argument("--repeat", type=int, default=1, help="send the frame N times and report latency statistics")
    p.add_argument("--save", type=Path, help="write a PNG with the boxes drawn and the 384x384 crop beside them")
    p.add_argument("--header", action="append", default=[], help='extra request header "Name: value" (repeatable)')
    p.add_argument(
        "--retries", type=int, default=3, help="retries of a request the server refuses as overloaded (default 3)"
    )
    return p


def parse_headers(values: list[str]) -> dict[str, str]:
    """'Name: value' strings to a dict; raises ValueError naming the bad one."""
    headers = {}
    for value in values:
        name, sep, rest = value.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"--header {value!r}: expected 'Name: value'")
        headers[name.strip()] = rest.strip()
    return headers


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.synthetic == (args.image is not None):
        sys.stderr.write("error: give an image file or --synthetic (one of them)\n")
        return 2
    if args.shm and args.entry != "ensemble":
        sys.stderr.write("error: --shm carries the FP32 frame, so it needs --entry ensemble\n")
        return 2
    if args.repeat < 1:
        sys.stderr.write("error: --repeat must be at least 1\n")
        return 2
    if args.retries < 0:
        sys.stderr.write("error: --retries must be at least 0\n")
        return 2
    try:
        headers = parse_headers(args.header)
    except ValueError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    default_url = (
        os.environ.get("TRITON_HTTP_URL", "localhost:8000")
        if args.protocol == "http"
        else os.environ.get("TRITON_GRPC_URL", "localhost:8001")
    )
    if not 0 <= args.level <= 100:
        sys.stderr.write("error: --level must be within 0..100\n")
        return 2
    scene = synthetic_scene(oil_level=args.level / 100) if args.synthetic else None
    try:
        if scene is not None:
            buf = io.BytesIO()
            scene.image.save(buf, "JPEG", quality=92)
            data = buf.getvalue()
        else:
            data = args.image.read_bytes()
        image = frames.decode(data, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    except (OSError, frames.ImageError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2

    from tritonclient.utils import InferenceServerException

    policy = retry.RetryPolicy(retries=args.retries)
    client = CloClient(args.url or default_url, args.protocol, shm=args.shm, headers=headers, retry_policy=policy)
    try:
        frame = frames.to_frame(image) if args.entry == "ensemble" else None
        results = [
            client.infer_frame(frame, image.size) if frame is not None else client.infer_encoded(data, image.size)
            for _ in range(args.repeat)
        ]
    except InferenceServerException as exc:
        sys.stderr.write(f"error: the server refused the request: {exc}\n")
        return 1
    finally:
        client.close()
    _report(args, image, results, scene)
    return 0


def _report(args: argparse.Namespace, image: Image.Image, results: list[Result], truth: Scene | None) -> None:
    last = results[-1]
    transport = f"{args.protocol}{' + shm' if args.shm else ''}"
    lines = [f"{args.entry} over {transport}: source {image.width}x{image.height}, {len(last.boxes)} detection(s)"]
    for x1, y1, x2, y2, score, cls in last.boxes[:10]:
        lines.append(f"  class {int(cls)} score {score:.3f} box ({x1:.0f}, {y1:.0f}) - ({x2:.0f}, {y2:.0f}) px")
    if not len(last.boxes):
        lines.append("  no detections: the crop is the centred square of the frame")
    for o in truth.oilers if truth else ():
        x1, y1, x2, y2 = o.box
        best = max((iou(tuple(b[:4]), o.box) for b in last.boxes), default=0.0)
        lines.append(f"  truth: oiler ({x1:.0f}, {y1:.0f}) - ({x2:.0f}, {y2:.0f}) px, best IoU {best:.2f}")
    if truth and truth.oilers and len(last.boxes):
        level = truth.best_level(tuple(last.boxes[int(np.argmax(last.boxes[:, 4]))][:4]))
        known = "the best box overlaps no oiler" if level is None else f"{100 * level:.2f} %"
        lines.append(f"estimated oil level: {last.oil_pct:.2f} %  (true level {known})")
    else:
        lines.append(f"estimated oil level: {last.oil_pct:.2f} %")
    ms = np.array([r.latency_s for r in results]) * 1000
    if len(ms) == 1:
        lines.append(f"latency: {ms[0]:.0f} ms")
    else:
        lines.append(
            f"latency over {len(ms)} requests: mean {ms.mean():.0f} ms, p50 {np.percentile(ms, 50):.0f} ms, "
            f"max {ms.max():.0f} ms"
        )
    if args.save:
        save_visual(args.save, image, last)
        lines.append(f"saved {args.save}")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
