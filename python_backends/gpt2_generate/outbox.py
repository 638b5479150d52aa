"""The Python backend's blocking calls, kept off the decoder thread.

In Triton 2.51's Python backend, `response_sender.send()` and `request.is_cancelled()` are both round trips to
the server process. The stub writes a message to shared memory, then waits until a server thread has handled it.
Made from the engine thread, they would add a wait between two decoder steps for every token of every sequence.
So one thread sends the responses, in the order the engine produced them (`Outbox`), and another polls the live
requests' cancellation every `poll_s` (`CancelWatch`). The engine only reads a flag.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable


class Outbox:
    """One thread that runs the queued sends in order; a send that raises is logged and does not stop the rest."""

    def __init__(self, log: Callable[[str], None], name: str = "gpt2-outbox") -> None:
        self.log = log
        self.jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.thread.start()

    def put(self, send: Callable[[], None]) -> None:
        self.jobs.put(send)

    def close(self, timeout_s: float = 30.0) -> None:
        """Run every send queued so far, then end the thread."""
        self.jobs.put(None)
        self.thread.join(timeout=timeout_s)

    def _loop(self) -> None:
        while (send := self.jobs.get()) is not None:
            try:
                send()
            except Exception as exc:  # noqa: BLE001 - one request's failed send must not stop the others'
                self.log(f"sending a response failed: {exc}")


class CancelWatch:
    """Polls `probe()` of each watched request every `poll_s` on its own thread; sets the request's flag once
    the probe says it is cancelled.

    A probe runs under the lock that `forget` takes, so once `forget` has returned the request is never probed
    again: the server frees a request's response factory with its final response, and asking about it after
    that would read freed memory in the server process. So forget a request before queueing its final response.
    """

    def __init__(self, poll_s: float, log: Callable[[str], None], name: str = "gpt2-cancel-watch") -> None:
        self.poll_s, self.log = poll_s, log
        self.watched: dict[threading.Event, Callable[[], bool]] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.thread.start()

    def watch(self, probe: Callable[[], bool]) -> threading.Event:
        """A flag that is set once `probe()` returns True; watched until `forget`."""
        flag = threading.Event()
        with self.lock:
            self.watched[flag] = probe
        return flag

    def forget(self, flag: threading.Event) -> None:
        """Stop watching; waits for a probe of this request that is under way."""
        with self.lock:
            self.watched.pop(flag, None)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=max(1.0, 2 * self.poll_s))

    def _loop(self) -> None:
        while not self.stopping.wait(self.poll_s):
            with self.lock:
                flags = list(self.watched)
            for flag in flags:
                with self.lock:  # one probe at a time, so forget() waits for at most one
                    probe = self.watched.get(flag)
                    if probe is not None and self._cancelled(probe):
                        flag.set()
                        del self.watched[flag]

    def _cancelled(self, probe: Callable[[], bool]) -> bool:
        try:
            return bool(probe())
        except Exception as exc:  # noqa: BLE001 - a request that cannot be asked is left running
            self.log(f"checking cancellation failed: {exc}")
            return False
