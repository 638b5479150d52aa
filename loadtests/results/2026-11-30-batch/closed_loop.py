"""The closed loop beside the README's batch run: the bench's harness (loadtests.bench_vision.closed_loop),
ensemble_jpeg, the same good frames cycled, on the same server, after the batch run. Writes JSON to stdout."""

import itertools
import json
import sys
import threading
from pathlib import Path

from clients.batch import header_size
from clients.clo import CloClient
from loadtests.bench_vision import Sender, closed_loop

url, folder = sys.argv[1], Path(sys.argv[2])
frames = [p.read_bytes() for p in sorted(folder.rglob("frame-0[0-2]*")) if p.name != "frame-030.jpg"]
sizes = [header_size(d) for d in frames]
cycle = itertools.cycle(range(len(frames)))
lock = threading.Lock()


def factory() -> Sender:
    client = CloClient(url)

    def send() -> None:
        with lock:
            i = next(cycle)
        client.infer_encoded(frames[i], sizes[i])

    return Sender(send, client.close)


runs = []
for c in (1, 2, 4, 8):
    run = closed_loop(f"ensemble_jpeg c={c}", factory, c, requests=max(12, 3 * c))
    runs.append(run.as_dict())
    sys.stderr.write(f"closed loop c={c}: {run.throughput:.2f}/s p50 {run.pct_ms(50):.0f} ms errors {run.errors}\n")
json.dump({"frames": len(frames), "runs": runs}, sys.stdout, indent=2)
