"""Tests for builders.nets.efficientnet_v2 (torchvision-compatible EfficientNetV2-S and the oil regressor)."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from builders.errors import BuildError
from builders.nets.efficientnet_v2 import (
    EfficientNetV2S,
    OilLevelRegressor,
    build_oil_regressor,
)


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
