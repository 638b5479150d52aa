"""The static model-code checks (tests/helpers/static_checks.py) flag what they must, on small sources."""

from __future__ import annotations

from tests.helpers.static_checks import execute_reach, pickle_uses


def test_pickle_check_flags_code_when_it_unpickles() -> None:
    source = (
        "import numpy as np\nfrom torch import load\nimport pickle\nnp.load(f, allow_pickle=True)\npd.read_pickle(x)"
    )
    assert pickle_uses(source) == ["torch.load", "pickle", "allow_pickle", "read_pickle"]
    assert pickle_uses("import torch\nx = torch.zeros(2)\ny = torch.load(f)") == ["torch.load"]
    assert pickle_uses("import numpy as np\nnp.load(f, allow_pickle=False)\n# import pickle") == []


def test_file_check_flags_execute_when_it_opens_a_path_from_a_request() -> None:
    source = """
class TritonPythonModel:
    def initialize(self, args):
        self.session = InferenceSession(str(Path(args["model_repository"]) / "1" / "model.onnx"))
        threading.Thread(target=self._worker).start()
    def _worker(self):
        while True:
            self.queue.get().path.read_bytes()
    def execute(self, requests):
        return [self._one(r) for r in requests]
    def _one(self, request):
        name = get_input(request, "path")
        img = Image.open(io.BytesIO(b"..."))
        return helper(name)
def helper(name):
    return Image.open(name), np.load(name), open(name).read()
"""
    reached, offending = execute_reach({"model.py": source})
    assert {"execute", "_one", "helper", "_worker"} <= reached and "initialize" not in reached
    assert offending == [
        "_worker: self.queue.get().path.read_bytes()",
        "helper: Image.open(name)",
        "helper: np.load(name)",
        "helper: open(name)",
    ]
