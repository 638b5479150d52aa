"""Model hubs are unreachable where the project builds: the libraries that would reach them are told so first.

ultralytics reads its variables when it is imported (without them it tries to download fonts and weights and to
install packages), so every entry point calls `stay_offline()` before importing it. A user's own values win.
"""

from __future__ import annotations

import os
import tempfile

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False"}


def stay_offline() -> None:
    """Set the offline variables where unset, and give ultralytics a private settings folder (not ~/.config)."""
    for var, value in OFFLINE_ENV.items():
        os.environ.setdefault(var, value)
    if "YOLO_CONFIG_DIR" not in os.environ:
        os.environ["YOLO_CONFIG_DIR"] = tempfile.mkdtemp(prefix="ultralytics-")
