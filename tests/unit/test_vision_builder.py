"""Builder unit tests: generated configs parse back into Triton's ModelConfig and chain correctly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from builders import onnx_export, repository, vision
from builders.errors import BuildError
from builders.triton_config import (
    Ensemble,
    EnsembleStep,
    ModelConfig,
    OnnxModel,
    QueueLimits,
    Target,
    model_config,
    read_config,
)
from tritonyard_contract import FRAME, FRAME_U8, OIL_PCT, TensorSpec

ONNX_MODELS = ["preprocessing", "yolov8", "postprocessing", "efficientnet_v2", "preprocessing_u8", "postprocessing_u8"]
MODELS = [*ONNX_MODELS, "image_decoder", "ensemble", "ensemble_jpeg"]
CHECKED = ONNX_MODELS[:4]  # the steps that take client tensors; decoded bytes cannot be NaN


def parsed(repo: Path) -> dict[str, ModelConfig]:
    return {name: read_config(repo / name / "config.pbtxt") for name in MODELS}


def test_vision_build_writes_every_model_when_target_is_cpu(model_repo: Path) -> None:
    assert set(MODELS) <= {p.name for p in model_repo.iterdir()}
    for name, cfg in parsed(model_repo).items():
        assert cfg.name == name and cfg.max_batch_size > 0
        if cfg.platform == "ensemble":
            assert list((model_repo / name / "1").iterdir()) == []  # no weights, empty version folder
            continue
        assert cfg.backend == "python"
        assert cfg.HasField("dynamic_batching") and cfg.dynamic_batching.max_queue_delay_microseconds > 0
        assert [g.kind for g in cfg.instance_group] == [cfg.instance_group[0].KIND_CPU]
        assert (model_repo / name / "1" / "model.py").is_file()
    for name in ONNX_MODELS:
        assert (model_repo / name / "1" / "model.onnx").is_file()
        assert int(parsed(model_repo)[name].parameters["intra_op_threads"].string_value) >= 1
    assert (model_repo / "image_decoder" / "1" / "tritonyard_contract" / "images.py").is_file()


def _dtype_dims(t) -> tuple[int, list[int]]:
    return t.data_type, list(t.dims)


def test_vision_ensembles_chain_names_dims_dtypes_when_configs_are_parsed_back(model_repo: Path) -> None:
    configs = parsed(model_repo)
    for ens_name in ("ensemble", "ensemble_jpeg"):
        ens = configs[ens_name]
        tensors = {t.name: _dtype_dims(t) for t in ens.input}
        for step in ens.ensemble_scheduling.step:
            model = configs[step.model_name]
            inputs = {t.name: _dtype_dims(t) for t in model.input}
            outputs = {t.name: _dtype_dims(t) for t in model.output}
            assert set(step.input_map) == set(inputs), f"{ens_name}: {step.model_name} inputs not all fed"
            for model_tensor, ens_tensor in step.input_map.items():
                assert tensors[ens_tensor] == inputs[model_tensor], f"{ens_name}: {ens_tensor} -> {model_tensor}"
            for model_tensor, ens_tensor in step.output_map.items():
                tensors[ens_tensor] = outputs[model_tensor]
        assert {t.name: _dtype_dims(t) for t in ens.output} == {t.name: tensors[t.name] for t in ens.output}
        assert [t.name for t in ens.output] == ["yolo_detections", "processed_image_384_384", "estimated_oil_pct"]


def test_vision_configs_use_onnxruntime_on_gpu_when_target_is_gpu() -> None:
    target = Target("gpu", tensorrt_fp16=True)
    for spec in vision.specs(vision.VisionConfig(device="gpu")):
        cfg = text_format.Parse(text_format.MessageToString(model_config(spec, target)), ModelConfig())
        if isinstance(spec, OnnxModel):
            assert cfg.platform == "onnxruntime_onnx" and not cfg.backend
            assert [g.kind for g in cfg.instance_group] == [cfg.instance_group[0].KIND_GPU]
            accel = cfg.optimization.execution_accelerators.gpu_execution_accelerator
            assert accel[0].name == "tensorrt" and accel[0].parameters["precision_mode"] == "FP16"
            assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 8]
        assert cfg.max_batch_size == 8


def test_target_refuses_tensorrt_when_device_is_cpu() -> None:
    with pytest.raises(BuildError, match="DEVICE=gpu"):
        Target("cpu", tensorrt_fp16=True)


def test_model_config_omits_dynamic_batching_when_disabled() -> None:
    spec = OnnxModel("m", (FRAME,), (OIL_PCT,))
    assert not model_config(spec, Target("cpu", dynamic_batching=False)).HasField("dynamic_batching")
    assert model_config(spec, Target("cpu")).HasField("dynamic_batching")


def test_check_ensembles_raises_when_dims_do_not_chain() -> None:
    wrong = TensorSpec(FRAME.name, "TYPE_FP32", (3, 1080, 1920))
    specs = [
        OnnxModel("m", (wrong,), (OIL_PCT,)),
        Ensemble(
            "e", (FRAME,), (OIL_PCT,), (EnsembleStep("m", {FRAME.name: FRAME.name}, {OIL_PCT.name: OIL_PCT.name}),)
        ),
    ]
    with pytest.raises(BuildError, match="does not chain"):
        repository.check_ensembles(specs)


def test_onnx_check_raises_when_export_differs_from_source() -> None:
    a = np.zeros((2, 3), np.float32)
    assert onnx_export.check("m", [a], [a + 1e-6], 1e-5) <= 1e-5
    with pytest.raises(BuildError, match="differs from its torch source"):
        onnx_export.check("m", [a], [a + 1], 1e-3)
    with pytest.raises(BuildError, match="differs"):
        onnx_export.check("m", [a + np.nan], [a], 1e-3)


def test_vision_build_leaves_repository_untouched_when_a_step_fails(tmp_path: Path) -> None:
    (tmp_path / "keep" / "1").mkdir(parents=True)
    (tmp_path / "keep" / "config.pbtxt").write_text('name: "keep"')
    with pytest.raises(BuildError, match="does not exist"):
        vision.build(vision.VisionConfig(yolo_weights=tmp_path / "missing.onnx"), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]  # no staging left, nothing half-written


def test_vision_build_configures_pixel_checks_when_target_is_cpu(model_repo: Path) -> None:
    configs = parsed(model_repo)
    for name in CHECKED:
        [check] = json.loads(configs[name].parameters["output_checks"].string_value)
        assert check["output"] == configs[name].output[0].name
        assert check["blame"] in {t.name for t in configs[name].input}
    [pre] = json.loads(configs["preprocessing"].parameters["output_checks"].string_value)
    assert pre["blame"] == FRAME.name and "NaN" in pre["meaning"]


def test_u8_steps_equal_fp32_steps_when_pixels_are_the_same() -> None:
    import torch

    from builders.nets.frame_ops import CropBestBox, CropBestBoxU8, LetterboxFrame, LetterboxFrameU8

    u8 = torch.randint(0, 256, (1, *FRAME_U8.dims), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    fp32 = u8.permute(0, 3, 1, 2).to(torch.float32)
    det = torch.zeros(1, 300, 6)
    det[0, 0] = torch.tensor([0.5, 140.0, 639.5, 500.2, 0.8, 0.0])  # touches the frame's borders
    with torch.no_grad():
        assert torch.equal(LetterboxFrameU8()(u8), LetterboxFrame()(fp32))
        assert (CropBestBoxU8()(u8, det) - CropBestBox()(fp32, det)).abs().max() < 1e-3


def test_vision_specs_use_cpu_threads_when_given() -> None:
    by_name = {s.name: s for s in vision.specs(vision.VisionConfig(cpu_threads=1))}
    for name in ("yolov8", "efficientnet_v2"):
        cfg = model_config(by_name[name], Target("cpu"))
        assert cfg.parameters["intra_op_threads"].string_value == "1"
    with pytest.raises(BuildError, match="--cpu-threads"):
        vision.VisionConfig(cpu_threads=0)


def test_vision_specs_bound_every_step_queue_when_limits_are_given() -> None:
    cfg = vision.VisionConfig(queue=QueueLimits(max_queue_size=3, timeout_ms=250))
    for spec in vision.specs(cfg):
        if isinstance(spec, Ensemble):
            continue  # ensembles have no queue of their own; their steps' queues bound them
        policy = model_config(spec, cfg.target).dynamic_batching.default_queue_policy
        assert (policy.max_queue_size, policy.default_timeout_microseconds) == (3, 250_000), spec.name
