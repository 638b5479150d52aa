"""Make `import torchvision` work with the CPU torch wheel, for ultralytics' trainer, validator and predictor.

PyPI's torchvision 0.28 is a CUDA build: loading its `_C.so` fails against the CPU torch wheel, and then its
Python code, which registers fake kernels for `torchvision::nms` and `torchvision::qnms` unconditionally, stops
with "operator torchvision::nms does not exist". ultralytics imports torchvision in its trainer, validator and
predictor, and calls `torchvision.ops.nms` once it is imported.

`install()` defines those two operators first, through `torch.library`, with ultralytics' own pure-torch
`TorchNMS.nms` as the CPU kernel (it matches torchvision's results), and tells torchvision its ops are present.
Only training and tests use this module; nothing that serves imports it.
"""

from __future__ import annotations

import sys

import torch

_LIBRARY: torch.library.Library | None = None  # kept alive: dropping it unregisters the operators


def install() -> None:
    """Idempotent. Call before anything imports torchvision."""
    global _LIBRARY
    if _LIBRARY is not None:
        return
    if "torchvision" in sys.modules:
        raise RuntimeError("training.torchvision_shim.install() must run before torchvision is imported")
    from ultralytics.utils.nms import TorchNMS

    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.impl("nms", lambda dets, scores, iou: TorchNMS.nms(dets, scores, iou), "CPU")
    _LIBRARY = lib

    import torchvision.extension

    torchvision.extension._has_ops = lambda: True
