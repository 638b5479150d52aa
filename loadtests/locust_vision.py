"""Locust user for the vision pipeline: binary FP32 frames to `ensemble`, or encoded bytes to `ensemble_jpeg`.

    python -m locust -f loadtests/locust_vision.py --headless -u 1 -r 1 -t 30s --host http://127.0.0.1:8000 \
        --vision-entry ensemble_jpeg --vision-image synthetic

Options (flag, or the environment variable beside it):
  --vision-entry     LOCUST_VISION_ENTRY     ensemble | ensemble_jpeg | both (alternate), default ensemble_jpeg
  --vision-image     LOCUST_VISION_IMAGE     a JPEG/PNG file, or "synthetic" (default)
  --vision-frames    LOCUST_VISION_FRAMES    how many distinct synthetic frames to cycle through (default 1)

A 4K frame costs about 0.5-1 s per request on a 2-core CPU, so keep users few. Every response is checked:
outputs present, shaped [1,300,6] / [1,3,384,384] / [1,1], and finite; anything else is a failure.
"""

from __future__ import annotations

import io
import itertools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `locust -f` imports this file by path

import tritonclient.http as httpclient
from locust import User, constant, events, task

from clients.lib import images, payloads
from clients.synthetic import synthetic_frame
from loadtests import locust_common as common
from tritonyard_contract import PIPELINE_OUTPUTS

ENTRIES = {"ensemble": ("ensemble",), "ensemble_jpeg": ("ensemble_jpeg",), "both": ("ensemble", "ensemble_jpeg")}
NETWORK_TIMEOUT_S = 300.0  # a loaded CPU can take many seconds per 4K frame
common.install()


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument(
        "--vision-entry",
        env_var="LOCUST_VISION_ENTRY",
        choices=sorted(ENTRIES),
        default="ensemble_jpeg",
        help="entry point: ensemble (FP32), ensemble_jpeg, or both",
    )
    parser.add_argument(
        "--vision-image",
        env_var="LOCUST_VISION_IMAGE",
        default="synthetic",
        help='JPEG/PNG file to send, or "synthetic" for generated 4K frames',
    )
    parser.add_argument(
        "--vision-frames",
        env_var="LOCUST_VISION_FRAMES",
        type=int,
        default=1,
        help="distinct synthetic frames to cycle through",
    )


_payloads: dict[str, list] = {}  # entry -> prepared InferInputs, shared by every user (read-only)


def _sources(image: str, count: int) -> list[bytes]:
    if image != "synthetic":
        return [Path(image).read_bytes()]
    out = []
    for seed in range(max(1, count)):
        buf = io.BytesIO()
        synthetic_frame(seed=seed).save(buf, "JPEG", quality=92)
        out.append(buf.getvalue())
    return out


def prepared_inputs(entry: str, image: str, count: int) -> list:
    """InferInputs for `entry`, built once per process: the 99.5 MB FP32 conversion is not what we measure."""
    if entry not in _payloads:
        inputs = []
        for data in _sources(image, count):
            if entry == "ensemble":
                inputs.append(payloads.frame_input(httpclient, images.to_frame(images.decode(data))))
            else:
                inputs.append(payloads.image_input(httpclient, data))
        _payloads[entry] = inputs
    return _payloads[entry]


class VisionUser(User):
    """Sends frames back to back (closed loop) and checks every answer."""

    wait_time = constant(0)

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        host, port = common.host_port(self.host)
        self.client = httpclient.InferenceServerClient(
            f"{host}:{port}", connection_timeout=NETWORK_TIMEOUT_S, network_timeout=NETWORK_TIMEOUT_S
        )
        entries = ENTRIES[opts.vision_entry]
        self.work = itertools.cycle(
            [(e, inp) for e in entries for inp in prepared_inputs(e, opts.vision_image, opts.vision_frames)]
        )
        self.outputs = payloads.outputs(httpclient)

    def on_stop(self) -> None:
        self.client.close()

    @task
    def infer(self) -> None:
        entry, inp = next(self.work)
        start = time.perf_counter()
        error: Exception | None = None
        try:
            result = self.client.infer(entry, [inp], outputs=self.outputs)
            common.check_vision_outputs({t.name: result.as_numpy(t.name) for t in PIPELINE_OUTPUTS})
        except Exception as exc:  # noqa: BLE001 - every way a request can go wrong is a locust failure
            error = exc
        self.environment.events.request.fire(
            request_type=common.INFER,
            name=entry,
            response_time=(time.perf_counter() - start) * 1000,
            response_length=0,
            exception=error,
            context={},
        )
