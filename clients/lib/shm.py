"""A system shared-memory region registered with Triton, freed on every path out.

    with SharedRegion(client, nbytes, prefix="clo_frame") as region:
        region.write(batch)
        client.infer(model, [payloads.shm_frame_input(api, region.name, batch.nbytes, batch.shape)])

Creation, registration and use can each fail; whichever does, the region is unregistered (when it was
registered) and destroyed, so no 99.5 MB segment is left in /dev/shm.
"""

from __future__ import annotations

import logging
import uuid

import numpy as np

log = logging.getLogger("tritonyard.client")


class SharedRegion:
    """One region of `nbytes`, created and registered with `client` (tritonclient http or grpc) on entry."""

    def __init__(self, client, nbytes: int, prefix: str = "tritonyard") -> None:
        import tritonclient.utils.shared_memory as shm

        self._shm, self.client, self.nbytes = shm, client, nbytes
        self.name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        self.key = f"/{self.name}"
        self.handle = shm.create_shared_memory_region(self.name, self.key, nbytes)
        self.registered = False
        try:
            client.register_system_shared_memory(self.name, self.key, nbytes)
        except BaseException:
            self.close()  # registration refused (or interrupted): the segment must not outlive it
            raise
        self.registered = True

    def write(self, *arrays: np.ndarray) -> None:
        self._shm.set_shared_memory_region(self.handle, list(arrays))

    def close(self) -> None:
        """Unregister (when registered) and destroy; safe to call twice, and after a failed unregister."""
        if self.handle is None:
            return
        try:
            if self.registered:
                self.registered = False
                self.client.unregister_system_shared_memory(self.name)
        except Exception as exc:  # noqa: BLE001 - the server may be gone; the local segment still goes
            log.warning("could not unregister shared memory %s: %s", self.name, exc)
        finally:
            handle, self.handle = self.handle, None
            self._shm.destroy_shared_memory_region(handle)

    def __enter__(self) -> SharedRegion:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
