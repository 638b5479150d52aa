"""Target's overload settings: bounded queues that reject (UNAVAILABLE) in every dynamically batched config."""

from __future__ import annotations

import pytest
from google.protobuf import text_format

from builders.contract import CROP, FRAME, OIL_PCT
from builders.errors import BuildError
from builders.triton_config import (
    Ensemble,
    EnsembleStep,
    ModelConfig,
    OnnxModel,
    PythonModel,
    QueueLimits,
    Target,
    model_config,
)

ONNX = OnnxModel("efficientnet_v2", (CROP,), (OIL_PCT,))
PYTHON = PythonModel("decoder", "image_decoder", (FRAME,), (CROP,))


def parsed(spec, target: Target) -> ModelConfig:
    """Render and parse back, as Triton would read config.pbtxt."""
    return text_format.Parse(text_format.MessageToString(model_config(spec, target)), ModelConfig())


@pytest.mark.parametrize("device,size,timeout_us", [("cpu", 16, 5_000_000), ("gpu", 64, 1_000_000)])
def test_model_config_bounds_the_queue_per_device_when_dynamic_batching_is_on(device, size, timeout_us) -> None:
    for spec in (ONNX, PYTHON):
        policy = parsed(spec, Target(device)).dynamic_batching.default_queue_policy
        assert policy.max_queue_size == size and policy.default_timeout_microseconds == timeout_us
        assert policy.timeout_action == policy.REJECT and policy.allow_timeout_override


def test_model_config_uses_queue_overrides_when_limits_are_given() -> None:
    target = Target("gpu", queue=QueueLimits(max_queue_size=3, timeout_ms=40))
    policy = parsed(ONNX, target).dynamic_batching.default_queue_policy
    assert (policy.max_queue_size, policy.default_timeout_microseconds) == (3, 40_000)
    only_size = parsed(ONNX, Target("cpu", queue=QueueLimits(max_queue_size=7))).dynamic_batching
    assert only_size.default_queue_policy.max_queue_size == 7
    assert only_size.default_queue_policy.default_timeout_microseconds == 5_000_000


def test_model_config_has_no_queue_policy_when_model_is_an_ensemble_batches_itself_or_batching_is_off() -> None:
    ensemble = Ensemble("ens", (CROP,), (OIL_PCT,), (EnsembleStep(ONNX.name, {CROP.name: CROP.name}, {}),))
    assert not parsed(ensemble, Target("cpu")).HasField("dynamic_batching")  # its steps' queues bound it
    engine = PythonModel("gen", "gpt2_generate", (CROP,), (OIL_PCT,), own_batching=True)
    assert not parsed(engine, Target("cpu")).HasField("dynamic_batching")
    assert parsed(engine, Target("cpu")).max_batch_size == 4  # requests still carry a batch dimension
    assert not parsed(ONNX, Target("cpu", dynamic_batching=False)).HasField("dynamic_batching")


@pytest.mark.parametrize("limits", [{"max_queue_size": 0}, {"timeout_ms": 0}, {"max_queue_size": -1}])
def test_queue_limits_refuse_values_when_not_positive(limits: dict) -> None:
    with pytest.raises(BuildError, match="must be >= 1"):
        QueueLimits(**limits)
