"""Tests for builders.nets.efficientnet_v2 (torchvision-compatible EfficientNetV2-S and the oil regressor)."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from builders.errors import BuildError
from builders.nets.efficientnet_v2 import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EfficientNetV2S,
    OilLevelRegressor,
    build_oil_regressor,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    """A small batch of RGB images in 0..1 at the model's serving resolution."""
    return torch.rand(2, 3, 384, 384, generator=torch.Generator().manual_seed(123))


def _predict(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def test_efficientnetv2s_matches_torchvision_layout_when_built_with_1000_classes() -> None:
    model = EfficientNetV2S(num_classes=1000)
    assert sum(p.numel() for p in model.parameters()) == 21_458_488  # torchvision's documented count
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert shapes["features.0.0.weight"] == [24, 3, 3, 3]
    assert shapes["features.0.1.running_var"] == [24]
    assert shapes["features.1.0.block.0.0.weight"] == [
        24,
        24,
        3,
        3,
    ]  # FusedMBConv, expand 1: one conv
    assert shapes["features.2.0.block.1.0.weight"] == [
        48,
        96,
        1,
        1,
    ]  # FusedMBConv project
    assert shapes["features.4.0.block.1.0.weight"] == [256, 1, 3, 3]  # MBConv depthwise
    assert shapes["features.4.0.block.2.fc1.weight"] == [
        16,
        256,
        1,
        1,
    ]  # SE squeeze = block input // 4
    assert shapes["features.6.14.block.3.1.weight"] == [256]
    assert shapes["features.7.0.weight"] == [1280, 256, 1, 1]
    assert shapes["classifier.1.weight"] == [1000, 1280]
    assert len(shapes) == 782


def test_oillevelregressor_outputs_percentages_when_given_random_images(
    image: torch.Tensor,
) -> None:
    model = OilLevelRegressor().eval()
    out = _predict(model, image)
    assert out.shape == (2, 1)
    assert torch.all((out >= 0) & (out <= 100))
    assert model.state_dict().keys() == EfficientNetV2S(num_classes=1).state_dict().keys()


def test_oillevelregressor_reads_the_pooled_crop_when_input_px_is_below_384(image: torch.Tensor) -> None:
    small, full = OilLevelRegressor(128).eval(), OilLevelRegressor().eval()
    full.load_state_dict(small.state_dict())
    pooled = torch.nn.functional.avg_pool2d(image, 3)  # 384 -> 128 by the area average, by hand
    assert torch.allclose(_predict(small, image), _predict(full, pooled), atol=1e-4)
    assert small.state_dict().keys() == full.state_dict().keys()  # same torchvision names either way


@pytest.mark.parametrize("side", [100, 16, 768])
def test_oillevelregressor_raises_when_input_px_does_not_divide_the_crop(side: int) -> None:
    with pytest.raises(BuildError, match="must divide the 384 px crop"):
        OilLevelRegressor(side)


def test_build_oil_regressor_is_deterministic_when_given_same_seed(
    image: torch.Tensor,
) -> None:
    a, desc = build_oil_regressor(None, seed=7)
    b, _ = build_oil_regressor(None, seed=7)
    assert not a.training and "random" in desc
    assert torch.equal(_predict(a, image), _predict(b, image))


def test_build_oil_regressor_round_trips_when_loading_saved_regressor(tmp_path: Path, image: torch.Tensor) -> None:
    src, _ = build_oil_regressor(None, seed=1)
    path = tmp_path / "oil.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, path)
    loaded, desc = build_oil_regressor(path, seed=2)
    assert str(path) in desc
    assert torch.equal(_predict(src, image), _predict(loaded, image))


def test_build_oil_regressor_keeps_random_head_when_loading_imagenet_checkpoint(
    tmp_path: Path,
) -> None:
    torch.manual_seed(3)
    imagenet = EfficientNetV2S(num_classes=1000).state_dict()
    path = tmp_path / "imagenet.pth"
    torch.save(imagenet, path)
    model, desc = build_oil_regressor(path, seed=0)
    assert "random" in desc and "classifier.1" in desc
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in imagenet.items() if not k.startswith("classifier.1."))
    assert loaded["classifier.1.weight"].shape == (1, 1280)


def test_build_oil_regressor_raises_when_checkpoint_has_wrong_key(
    tmp_path: Path,
) -> None:
    state = OilLevelRegressor().state_dict()
    state["features.99.bogus"] = state.pop("features.3.1.block.0.1.bias")
    path = tmp_path / "bad.pt"
    torch.save({"model": state}, path)
    with pytest.raises(BuildError, match="features.99.bogus") as err:
        build_oil_regressor(path)
    assert "features.3.1.block.0.1.bias" in str(err.value) and str(path) in str(err.value)


def test_build_oil_regressor_raises_when_file_is_missing(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="does not exist"):
        build_oil_regressor(tmp_path / "nope.pt")


def test_oillevelregressor_matches_onnxruntime_when_exported(tmp_path: Path, image: torch.Tensor) -> None:
    model, _ = build_oil_regressor(None, seed=0)
    # Random init in eval mode outputs ~50.000 for any input (identity BN stats let activations vanish), which
    # would make a broken graph pass; calibrating BN stats on the batch makes the outputs input-dependent.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 1.0
    with torch.no_grad():
        model.train()(image)
    model.eval()
    expected = _predict(model, image).numpy()
    assert abs(expected[0, 0] - expected[1, 0]) > 0.1
    path = tmp_path / "oil.onnx"
    torch.onnx.export(
        model,
        image[:1],
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["image"],
        output_names=["oil_pct"],
        dynamic_axes={"image": {0: "batch"}, "oil_pct": {0: "batch"}},
    )
    proto = onnx.load(str(path))
    proto.ir_version = min(proto.ir_version, 10)  # keep loadable by older onnxruntime builds
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"image": image.numpy()})  # batch 2 exercises the dynamic axis
    np.testing.assert_allclose(got, expected, atol=1e-3, rtol=0)


# torchvision's own networks, made in a child process: torchvision imports only after training.torchvision_shim
# is installed, and not at all once builders.nets.gpt2 (imported by other test modules) has hidden it, so the
# test process's sys.modules is left alone. The child saves the state_dicts and torchvision's outputs.
_TORCHVISION_SCRIPT = """
import sys
import torch
from training import torchvision_shim

torchvision_shim.install()
import torchvision

out = sys.argv[1]
torch.manual_seed(11)
x = torch.rand(2, 3, 384, 384, generator=torch.Generator().manual_seed(5))
mean = torch.tensor(MEAN).view(1, 3, 1, 1)
std = torch.tensor(STD).view(1, 3, 1, 1)

reg = torchvision.models.efficientnet_v2_s(num_classes=1)
# Fresh BatchNorm statistics make every image score ~50.000; statistics from noise make the output input-dependent.
for m in reg.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
        m.momentum = None
with torch.no_grad():
    reg.train()(torch.rand(4, 3, 384, 384, generator=torch.Generator().manual_seed(6)))
    reg.eval()
    # Rescale the random head so the two images' logits are -0.5 and +0.5: the sigmoid must not saturate.
    head = reg.classifier[1]
    logits = reg((x - mean) / std)[:, 0]
    head.weight /= (logits[0] - logits[1]).abs()
    head.bias -= reg((x - mean) / std)[:, 0].mean()
    oil = torch.sigmoid(reg((x - mean) / std)) * 100.0
torch.save(reg.state_dict(), out + "/tv_regressor.pt")

imagenet = torchvision.models.efficientnet_v2_s()  # the default 1000-class ImageNet head
for m in imagenet.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
        m.momentum = None
with torch.no_grad():
    imagenet.train()(torch.rand(4, 3, 384, 384, generator=torch.Generator().manual_seed(7)))
    imagenet.eval()
    pooled = torch.flatten(imagenet.avgpool(imagenet.features((x - mean) / std)), 1)
torch.save(imagenet.state_dict(), out + "/tv_imagenet.pt")
torch.save({"x": x, "oil": oil, "pooled": pooled, "version": torchvision.__version__}, out + "/tv_reference.pt")
"""


@pytest.fixture(scope="module")
def torchvision_made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with torchvision-made state_dicts (1-output and ImageNet heads) and torchvision's outputs."""
    out = tmp_path_factory.mktemp("torchvision")
    script = _TORCHVISION_SCRIPT.replace("MEAN", repr(IMAGENET_MEAN)).replace("STD", repr(IMAGENET_STD))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    proc = subprocess.run(
        [sys.executable, "-c", script, str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"torchvision child failed:\n{proc.stderr[-3000:]}"
    return out


def test_build_oil_regressor_equals_torchvision_when_given_torchvision_efficientnet_v2_s(
    torchvision_made: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ref = torch.load(torchvision_made / "tv_reference.pt", weights_only=True)
    path = torchvision_made / "tv_regressor.pt"
    saved = torch.load(path, weights_only=True)
    with caplog.at_level(logging.WARNING, logger="tritonyard.build"):
        model, desc = build_oil_regressor(path, seed=9)
    assert desc == f"all weights from {path}"
    assert not caplog.records  # every weight is real: no warning
    loaded = model.state_dict()
    assert loaded.keys() == saved.keys()  # strict: torchvision's names and nothing else
    assert all(torch.equal(loaded[k], v) for k, v in saved.items())
    got = _predict(model, ref["x"])
    assert got.shape == ref["oil"].shape == (2, 1)
    # sigmoid(torchvision(normalised x)) * 100: same kernels, same order of operations.
    torch.testing.assert_close(got, ref["oil"], atol=1e-4, rtol=0)
    assert abs(float(ref["oil"][0, 0] - ref["oil"][1, 0])) > 10, "the reference must depend on the image"


def test_build_oil_regressor_warns_loudly_when_given_torchvision_imagenet_checkpoint(
    torchvision_made: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ref = torch.load(torchvision_made / "tv_reference.pt", weights_only=True)
    path = torchvision_made / "tv_imagenet.pt"
    saved = torch.load(path, weights_only=True)
    assert saved["classifier.1.weight"].shape == (1000, 1280)
    with caplog.at_level(logging.WARNING, logger="tritonyard.build"):
        model, desc = build_oil_regressor(path, seed=0)
    assert "random" in desc and "classifier.1" in desc and "[1000, 1280]" in desc

    warnings = [r for r in caplog.records if r.name == "tritonyard.build" and r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    message = warnings[0].getMessage()
    assert "RANDOM" in message and "regression head" in message and "classifier.1" in message
    assert str(path) in message and "!" * 40 in message  # the banner, not a quiet one-liner

    loaded = model.state_dict()
    backbone = [k for k in saved if not k.startswith("classifier.1.")]
    assert len(backbone) == len(loaded) - 2
    assert all(torch.equal(loaded[k], saved[k]) for k in backbone)
    assert loaded["classifier.1.weight"].shape == (1, 1280) and loaded["classifier.1.bias"].shape == (1,)
    # The random head is the seeded one, not zeros or torchvision's rows.
    fresh, _ = build_oil_regressor(None, seed=0)
    assert torch.equal(loaded["classifier.1.weight"], fresh.state_dict()["classifier.1.weight"])
    # The backbone computes what torchvision's does: pooled features before the head.
    with torch.no_grad():
        x = (ref["x"] - model.mean) / model.std
        pooled = torch.flatten(model.avgpool(model.features(x)), 1)
    torch.testing.assert_close(pooled, ref["pooled"], atol=1e-4, rtol=1e-4)
    out = _predict(model, ref["x"])
    assert out.shape == (2, 1) and torch.all((out >= 0) & (out <= 100))
