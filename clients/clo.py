"""CLO client: send a frame through the vision pipeline and print what came back.

python -m clients.clo --synthetic
python -m clients.clo frame.jpg --entry ensemble_jpeg --protocol grpc --save out.png
python -m clients.clo --batch frames/ --out results.csv     # every image of a folder (clients/batch.py)
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from clients.lib import cli, images, payloads, retry
from clients.lib.shm import SharedRegion
from tritonyard_contract import CROP, DETECTIONS, FRAME, OIL_PCT, to_source_boxes

if TYPE_CHECKING:  # --synthetic only: the batch Job's image carries no training code
    from training.scenes import Scene

ENTRIES = ("ensemble", "ensemble_jpeg")


@dataclass
class Result:
    """One pipeline response; boxes are in the source image's pixels."""

    boxes: np.ndarray  # [N, 6]: x1, y1, x2, y2, score, class
    detections: np.ndarray  # [300, 6] as served: letterbox (640x640) pixels, zero padded
    crop: np.ndarray  # [3, 384, 384] in 0..1
    oil_pct: float
    latency_s: float


class CloClient:
    """Calls `ensemble` (FP32 frame, optionally through system shared memory) or `ensemble_jpeg`.

    A request the server refuses for lack of capacity (UNAVAILABLE) is retried per `retry_policy`;
    `timeout_s` bounds each attempt (None: tritonclient's defaults).
    """

    def __init__(
        self,
        url: str,
        protocol: str = "http",
        shm: bool = False,
        headers: dict | None = None,
        retry_policy: retry.RetryPolicy = retry.DEFAULT,
        timeout_s: float | None = None,
    ) -> None:
        self.api, self.protocol = payloads.api_for(protocol), protocol
        self.timeout_s = timeout_s
        if protocol == "http" and timeout_s is not None:
            self.client = self.api.InferenceServerClient(url, connection_timeout=timeout_s, network_timeout=timeout_s)
        else:
            self.client = self.api.InferenceServerClient(url)
        self.headers = headers or None  # e.g. the ingress Host header in front of KServe
        self.retry_policy = retry_policy
        self.region: SharedRegion | None = None
        if shm:
            try:
                self.region = SharedRegion(self.client, int(np.prod(FRAME.dims)) * 4, prefix="clo_frame")
            except BaseException:
                self.client.close()
                raise

    def close(self) -> None:
        try:
            if self.region is not None:
                self.region.close()
                self.region = None
        finally:
            self.client.close()

    def _infer(self, model: str, inp, size: tuple[int, int]) -> Result:
        kw = {"client_timeout": self.timeout_s} if self.protocol == "grpc" and self.timeout_s else {}
        outputs = payloads.outputs(self.api)
        start = time.perf_counter()
        res = retry.call(
            lambda: self.client.infer(model, [inp], outputs=outputs, headers=self.headers, **kw),
            self.retry_policy,
            what=model,
        )
        latency = time.perf_counter() - start  # retries included: what the caller waited
        det = res.as_numpy(DETECTIONS.name)[0]
        oil = float(res.as_numpy(OIL_PCT.name)[0, 0])
        return Result(to_source_boxes(det, *size), det, res.as_numpy(CROP.name)[0], oil, latency)

    def infer_frame(self, frame: np.ndarray, size: tuple[int, int]) -> Result:
        """Send an FP32 [3,2160,3840] frame to `ensemble`; `size` is the source image's (width, height)."""
        if self.region is None:
            return self._infer("ensemble", payloads.frame_input(self.api, frame), size)
        batch = frame[np.newaxis]
        self.region.write(batch)
        return self._infer(
            "ensemble", payloads.shm_frame_input(self.api, self.region.name, batch.nbytes, batch.shape), size
        )

    def infer_encoded(self, data: bytes, size: tuple[int, int]) -> Result:
        """Send encoded JPEG/PNG bytes to `ensemble_jpeg`, which decodes server-side."""
        return self._infer("ensemble_jpeg", payloads.image_input(self.api, data), size)


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
        help="ensemble: FP32 frame decoded here (99.5 MB); ensemble_jpeg: encoded bytes decoded by the server "
        "(default: ensemble, with --batch ensemble_jpeg)",
    )
    p.add_argument("--protocol", choices=("http", "grpc"), default="http")
    p.add_argument(
        "--shm", action="store_true", help="send the FP32 frame through system shared memory (ensemble only, same host)"
    )
    p.add_argument("--repeat", type=int, default=1, help="send the frame N times and report latency statistics")
    p.add_argument("--save", type=Path, help="write a PNG with the boxes drawn and the 384x384 crop beside them")
    cli.add_server_options(p)
    from clients import batch  # here, not at the top: clients.batch imports this module

    batch.add_options(p)
    return p


def _usage(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments, or None."""
    if args.batch is None and args.out is not None:
        return "--out goes with --batch"
    if args.batch is None and args.synthetic == (args.image is not None):
        return "give an image file, --synthetic or --batch (one of them)"
    if args.shm and args.entry == "ensemble_jpeg":
        return "--shm carries the FP32 frame, so it needs --entry ensemble"
    for name, value, low in (("--repeat", args.repeat, 1), ("--retries", args.retries, 0)):
        if value < low:
            return f"{name} must be at least {low}"
    if not args.timeout > 0:
        return "--timeout must be positive"
    if not 0 <= args.level <= 100:
        return "--level must be within 0..100"
    return None


def _checked(args: argparse.Namespace) -> tuple[str | None, dict[str, str]]:
    """(what is wrong with the arguments or None, the extra headers)."""
    problem = _usage(args)
    try:
        return problem, cli.parse_headers(args.header)
    except ValueError as exc:
        return problem or str(exc), {}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    problem, headers = _checked(args)
    if problem is not None:
        return cli.usage_error(problem)
    if args.batch is not None:
        from clients import batch

        return batch.run_batch(args, headers)
    args.entry = args.entry or "ensemble"
    scene = _synthetic(args.level) if args.synthetic else None
    try:
        if scene is not None:
            buf = io.BytesIO()
            scene.image.save(buf, "JPEG", quality=92)
            data = buf.getvalue()
        else:
            data = args.image.read_bytes()
        image = images.decode(data)
    except (OSError, images.ImageError) as exc:
        return cli.usage_error(str(exc))

    target = cli.Target(cli.default_url(args.protocol, args.url), args.entry, args.retries, args.timeout)

    results: list[Result] = []

    def call(target: cli.Target) -> int:
        policy = retry.RetryPolicy(retries=args.retries)
        client = CloClient(target.url, args.protocol, args.shm, headers, policy, args.timeout)
        try:
            frame = images.to_frame(image) if args.entry == "ensemble" else None
            for _ in range(args.repeat):
                if frame is not None:
                    results.append(client.infer_frame(frame, image.size))
                else:
                    results.append(client.infer_encoded(data, image.size))
        finally:
            client.close()
        return 0

    code = cli.run(call, target)
    if code == 0:
        _report(args, image, results, scene)
    return code


def _synthetic(level: float) -> Scene:
    from clients.synthetic import synthetic_scene

    return synthetic_scene(oil_level=level / 100)


def _report(args: argparse.Namespace, image: Image.Image, results: list[Result], truth: Scene | None) -> None:
    last = results[-1]
    transport = f"{args.protocol}{' + shm' if args.shm else ''}"
    lines = [f"{args.entry} over {transport}: source {image.width}x{image.height}, {len(last.boxes)} detection(s)"]
    for x1, y1, x2, y2, score, cls in last.boxes[:10]:
        lines.append(f"  class {int(cls)} score {score:.3f} box ({x1:.0f}, {y1:.0f}) - ({x2:.0f}, {y2:.0f}) px")
    if not len(last.boxes):
        lines.append("  no detections: the crop is the centred square of the frame")
    if truth is not None:
        lines += _truth_lines(truth, last)
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


def _truth_lines(truth: Scene, last: Result) -> list[str]:
    """The synthetic frame's truth beside the answer: each oiler's box and best IoU, the true level."""
    from training.scenes import iou

    lines = []
    for o in truth.oilers:
        x1, y1, x2, y2 = o.box
        best = max((iou(tuple(b[:4]), o.box) for b in last.boxes), default=0.0)
        lines.append(f"  truth: oiler ({x1:.0f}, {y1:.0f}) - ({x2:.0f}, {y2:.0f}) px, best IoU {best:.2f}")
    if truth.oilers and len(last.boxes):
        level = truth.best_level(tuple(last.boxes[int(np.argmax(last.boxes[:, 4]))][:4]))
        known = "the best box overlaps no oiler" if level is None else f"{100 * level:.2f} %"
        lines.append(f"estimated oil level: {last.oil_pct:.2f} %  (true level {known})")
    else:
        lines.append(f"estimated oil level: {last.oil_pct:.2f} %")
    return lines


if __name__ == "__main__":
    sys.exit(main())
