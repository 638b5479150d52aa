"""Locust user for the vision pipeline: binary FP32 frames to `ensemble`, or encoded bytes to `ensemble_jpeg`.

    python -m locust -f loadtests/locust_vision.py --headless -u 1 -r 1 -t 30s --host http://127.0.0.1:8000 \
        --vision-entry ensemble_jpeg --vision-image synthetic

Options (flag, or the environment variable beside it):
  --vision-entry     LOCUST_VISION_ENTRY     ensemble | ensemble_jpeg | both (alternate), default ensemble_jpeg
  --vision-image     LOCUST_VISION_IMAGE     a JPEG/PNG file, or "synthetic" (default)
  --vision-frames    LOCUST_VISION_FRAMES    how many distinct synthetic frames to cycle through (default 1)

A 4K frame costs about 0.5-1 s per request on a 2-core CPU, so keep users few. Every response is checked:
outputs present, shaped [1,300,6] / [1,3,384,384] / [1,1], finite and in range, and the answer itself: the
oil level within 1 point of the reference and the same detections (IoU >= 0.9, score within 0.05). The
reference comes from --answers (LOCUST_ANSWERS), or is computed at start in-process from weights/clo
(loadtests/references.py). Anything else, a wrong answer included, is a failure.
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `locust -f` imports this file by path

import tritonclient.http as httpclient
from locust import User, constant, events, task

from clients.lib import images, payloads
from loadtests import locust_common as common
from loadtests import references
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


_payloads: dict[str, list] = {}  # entry -> [(sha256 of the source, InferInput)], shared by every user (read-only)
_sources: dict[tuple[str, int], list[bytes]] = {}


def sources(image: str, count: int) -> list[bytes]:
    """The encoded images sent (and answered by the reference), made once per process."""
    if (image, count) not in _sources:
        _sources[(image, count)] = references.frame_sources(image, count)
    return _sources[(image, count)]


def prepared_inputs(entry: str, image: str, count: int) -> list:
    """(source digest, InferInput) for `entry`, built once per process: the 99.5 MB FP32 conversion is not
    what we measure."""
    if entry not in _payloads:
        inputs = []
        for data in sources(image, count):
            if entry == "ensemble":
                inp = payloads.frame_input(httpclient, images.to_frame(images.decode(data)))
            else:
                inp = payloads.image_input(httpclient, data)
            inputs.append((references.digest(data), inp))
        _payloads[entry] = inputs
    return _payloads[entry]


def _reference(environment) -> dict:
    """The reference answers for the frames sent: from --answers, or computed once per process."""
    opts = environment.parsed_options
    return common.answers(
        environment, "vision", lambda: references.vision_answers(sources(opts.vision_image, opts.vision_frames))
    )


@events.init.add_listener
def _reference_before_the_run(environment, **_kwargs) -> None:
    """Load or compute the reference at init, so that computing it does not eat into the run time (-t)."""
    if environment.parsed_options is not None:
        _reference(environment)


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
            [(e, *item) for e in entries for item in prepared_inputs(e, opts.vision_image, opts.vision_frames)]
        )
        self.outputs = payloads.outputs(httpclient)
        self.answers = _reference(self.environment)

    def on_stop(self) -> None:
        self.client.close()

    @task
    def infer(self) -> None:
        entry, source, inp = next(self.work)
        start = time.perf_counter()
        error: Exception | None = None
        try:
            result = self.client.infer(entry, [inp], outputs=self.outputs)
            outputs = {t.name: result.as_numpy(t.name) for t in PIPELINE_OUTPUTS}
            common.check_vision_outputs(outputs)
            expected = self.answers["frames"].get(source)
            if expected is None:
                raise common.ResponseError(f"no reference answer for frame {source[:12]} in --answers")
            references.check_vision_answer(outputs, expected, self.answers["tolerance"])
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
