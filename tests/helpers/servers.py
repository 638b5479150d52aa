"""Tiny model repositories for the tests that start tritonservers of their own (launcher, security, KServe).

Free ports come from `serving.launcher.free_ports`, the launcher's own helper.
"""

from __future__ import annotations

from pathlib import Path

CONFIG = """name: "{name}"
backend: "python"
max_batch_size: 4
input {{ name: "X" data_type: TYPE_FP32 dims: 1 }}
output {{ name: "Y" data_type: TYPE_FP32 dims: 1 }}
instance_group {{ kind: KIND_CPU count: 1 }}
"""
BROKEN_MODEL = """
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("model-exploded-on-purpose")
"""
ECHO_MODEL = """
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy())])
                for r in requests]
"""


def tiny_repo(root: Path, name: str, source: str) -> Path:
    """`root` as a repository of one Python model `name` (FP32 X -> Y) whose model.py is `source`."""
    (root / name / "1").mkdir(parents=True)
    (root / name / "config.pbtxt").write_text(CONFIG.format(name=name))
    (root / name / "1" / "model.py").write_text(source)
    return root
