"""Config rendering: target defaults, per-model policies, the cpu runner, and the builder's policy flags."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from builders import catalog, cpu_runner, vision
from builders.errors import BuildError
from builders.triton_config import (
    NO_DYNAMIC_BATCHING,
    Batching,
    Ensemble,
    EnsembleStep,
    ModelConfig,
    ModelSpec,
    OnnxModel,
    OutputCheck,
    Policy,
    PythonModel,
    QueueLimits,
    Target,
    model_config,
    with_policies,
)
from tritonyard_contract import CROP, FRAME, OIL_PCT

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = Path(__file__).resolve().parent / "expected_configs"  # UPDATE_EXPECTED_CONFIGS=1 rewrites them
ONNX = OnnxModel("efficientnet_v2", (CROP,), (OIL_PCT,))
PYTHON = PythonModel("decoder", "image_decoder", (FRAME,), (CROP,))


def parsed(spec: ModelSpec, target: Target) -> ModelConfig:
    """Render and parse back, as Triton would read config.pbtxt."""
    return text_format.Parse(text_format.MessageToString(model_config(spec, target)), ModelConfig())


def groups(config: ModelConfig) -> list[tuple[str, int]]:
    """instance_group as (kind name, count) pairs."""
    return [(model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind), g.count) for g in config.instance_group]


def rendered(specs: list[ModelSpec], target: Target) -> dict[str, ModelConfig]:
    return {s.name: parsed(s, target) for s in specs}


def vision_specs(device: str = "cpu", **policies: Policy) -> list[ModelSpec]:
    return vision.specs(vision.VisionConfig(device=device, policies=policies))


# --- defaults ---


@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_model_config_renders_the_recorded_text_when_every_policy_is_default(device: str) -> None:
    """Every model of both pipelines, byte for byte as recorded before per-model policies existed."""
    target = Target(device)
    text = "".join(
        f"# ---- {s.name}\n" + text_format.MessageToString(model_config(s, target)) for s in catalog.all_specs(device)
    )
    path = EXPECTED / f"{device}.txt"
    if os.environ.get("UPDATE_EXPECTED_CONFIGS") == "1":
        path.write_text(text)
    assert text == path.read_text(), f"configs differ from {path}; review, then UPDATE_EXPECTED_CONFIGS=1"


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
    engine = PythonModel("gen", "gpt2_generate", (CROP,), (OIL_PCT,), policy=NO_DYNAMIC_BATCHING)
    assert not parsed(engine, Target("cpu")).HasField("dynamic_batching")
    assert parsed(engine, Target("cpu")).max_batch_size == 4  # requests still carry a batch dimension
    assert not parsed(ONNX, Target("cpu", dynamic_batching=False)).HasField("dynamic_batching")


@pytest.mark.parametrize("limits", [{"max_queue_size": 0}, {"timeout_ms": 0}, {"max_queue_size": -1}])
def test_queue_limits_refuse_values_when_not_positive(limits: dict) -> None:
    with pytest.raises(BuildError, match="must be >= 1"):
        QueueLimits(**limits)


# --- per-model policies ---


@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_with_policies_changes_only_that_model_when_one_model_is_overridden(device: str) -> None:
    target = Target(device)
    before = rendered(vision_specs(device), target)
    override = Policy(
        instances=3,
        batching=Batching(preferred_batch_sizes=(1, 2), max_queue_delay_us=100),
        queue=QueueLimits(max_queue_size=9, timeout_ms=70),
    )
    after = rendered(vision_specs(device, yolov8=override), target)
    assert [n for n in before if before[n] != after[n]] == ["yolov8"]
    yolo = after["yolov8"]
    assert yolo.instance_group[0].count == 3
    assert list(yolo.dynamic_batching.preferred_batch_size) == [1, 2]
    assert yolo.dynamic_batching.max_queue_delay_microseconds == 100
    queue = yolo.dynamic_batching.default_queue_policy
    assert (queue.max_queue_size, queue.default_timeout_microseconds) == (9, 70_000)
    # What the override leaves None stays the target's.
    assert yolo.max_batch_size == before["yolov8"].max_batch_size and yolo.parameters == before["yolov8"].parameters


@pytest.mark.parametrize("device,onnx_kind", [("cpu", "KIND_CPU"), ("gpu", "KIND_GPU")])
def test_model_config_renders_instance_count_when_policy_sets_instances(device: str, onnx_kind: str) -> None:
    target = Target(device)
    onnx = parsed(OnnxModel("m", (CROP,), (OIL_PCT,), policy=Policy(instances=4)), target)
    python = parsed(PythonModel("p", "image_decoder", (FRAME,), (CROP,), policy=Policy(instances=2)), target)
    assert groups(onnx) == [(onnx_kind, 4)]
    assert groups(python) == [("KIND_CPU", 2)]  # Python models do CPU work on either target
    assert groups(parsed(ONNX, target)) == [(onnx_kind, 1)]  # the target's default


def test_with_policies_keeps_spec_policy_fields_when_override_leaves_them_unset() -> None:
    """gpt2's own 'no dynamic batching' survives an instances override; image_decoder's gpu count an mbs one."""
    spec = PythonModel("gen", "gpt2_generate", (CROP,), (OIL_PCT,), policy=NO_DYNAMIC_BATCHING)
    [layered] = with_policies([spec], {"gen": Policy(instances=2)}, Target("cpu"))
    config = parsed(layered, Target("cpu"))
    assert config.instance_group[0].count == 2 and not config.HasField("dynamic_batching")
    decoder = rendered(vision_specs("gpu", image_decoder=Policy(max_batch_size=2)), Target("gpu"))["image_decoder"]
    assert (decoder.instance_group[0].count, decoder.max_batch_size) == (2, 2)


def test_model_config_batches_one_model_when_its_policy_overrides_the_target_wide_switch() -> None:
    off = Target("cpu", dynamic_batching=False)
    on = parsed(OnnxModel("m", (CROP,), (OIL_PCT,), policy=Policy(batching=Batching(enabled=True))), off)
    assert on.HasField("dynamic_batching") and on.dynamic_batching.default_queue_policy.max_queue_size == 16
    only_off = rendered(vision_specs(yolov8=Policy(batching=Batching(enabled=False))), Target("cpu"))
    assert [n for n, c in only_off.items() if c.platform != "ensemble" and not c.HasField("dynamic_batching")] == [
        "yolov8"
    ]


def test_with_policies_lowers_ensembles_max_batch_size_when_a_step_allows_less() -> None:
    configs = rendered(vision_specs("gpu", yolov8=Policy(max_batch_size=2)), Target("gpu"))
    assert configs["yolov8"].max_batch_size == 2
    assert list(configs["yolov8"].dynamic_batching.preferred_batch_size) == []  # gpu's 4 and 8 do not fit
    assert configs["ensemble"].max_batch_size == configs["ensemble_jpeg"].max_batch_size == 2
    assert configs["efficientnet_v2"].max_batch_size == 8
    raised = rendered(vision_specs("cpu", yolov8=Policy(max_batch_size=6)), Target("cpu"))
    assert raised["ensemble"].max_batch_size == 4  # a larger step leaves the ensemble at the target's


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"yolo": Policy(instances=2)}, r"unknown model 'yolo': this build has preprocessing, yolov8"),
        ({"ensemble": Policy(instances=2)}, "ensemble is an ensemble: it has no policy of its own"),
    ],
)
def test_with_policies_refuses_when_model_is_unknown_or_an_ensemble(overrides: dict, match: str) -> None:
    with pytest.raises(BuildError, match=match):
        vision_specs(**overrides)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: Policy(instances=0), "--instances must be >= 1"),
        (lambda: Policy(max_batch_size=0), "--max-batch-size must be >= 1"),
        (lambda: Batching(preferred_batch_sizes=()), "preferred batch sizes must be >= 1"),
        (lambda: Batching(max_queue_delay_us=-1), "--max-queue-delay-us must be >= 0"),
    ],
)
def test_policy_refuses_values_when_not_positive(make, match: str) -> None:
    with pytest.raises(BuildError, match=match):
        make()


def test_model_config_names_the_model_when_preferred_sizes_exceed_max_batch_size() -> None:
    spec = OnnxModel("m", (CROP,), (OIL_PCT,), policy=Policy(batching=Batching(preferred_batch_sizes=(2, 8))))
    with pytest.raises(BuildError, match=r"m: preferred batch sizes \[2, 8\] exceed max_batch_size 4"):
        model_config(spec, Target("cpu"))


# --- the cpu runner ---


def test_cpu_runner_parameters_appear_only_when_target_is_cpu() -> None:
    check = OutputCheck(OIL_PCT.name, 0.0, 100.0, CROP.name, "values must be finite numbers")
    spec = OnnxModel("m", (CROP,), (OIL_PCT,), cpu_threads=1, concat_batch=False, output_checks=(check,))
    cpu = parsed(spec, Target("cpu"))
    assert cpu.backend == cpu_runner.BACKEND and not cpu.platform
    assert set(cpu.parameters) == {cpu_runner.THREADS, cpu_runner.CONCAT_BATCH, cpu_runner.OUTPUT_CHECKS}
    assert {k: v.string_value for k, v in cpu.parameters.items()} == cpu_runner.parameters(spec)
    for target in (Target("gpu"), Target("gpu", tensorrt_fp16=True)):
        gpu = parsed(spec, target)
        assert (gpu.platform, gpu.backend, dict(gpu.parameters)) == ("onnxruntime_onnx", "", {})
        assert groups(gpu) == [("KIND_GPU", 1)]
    trt_config = parsed(spec, Target("gpu", tensorrt_fp16=True))
    [trt] = trt_config.optimization.execution_accelerators.gpu_execution_accelerator
    assert (trt.name, trt.parameters["precision_mode"]) == ("tensorrt", "FP16")
    assert not parsed(spec, Target("gpu")).HasField("optimization")


def test_cpu_runner_parameters_are_the_ones_model_py_reads_when_compared_with_its_source() -> None:
    """model.py reads each parameter from the `Params` field of the same name (tritonyard_contract.params)."""
    tree = ast.parse((ROOT / "python_backends" / cpu_runner.SOURCE / "model.py").read_text())
    [params] = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "Params"]
    read = {n.target.id for n in params.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    assert read == {cpu_runner.THREADS, cpu_runner.CONCAT_BATCH, cpu_runner.OUTPUT_CHECKS}


# --- builder flags ---


def _cli(argv: str) -> tuple[dict[str, dict[str, Policy]], QueueLimits]:
    from builders.__main__ import _parser, _policies, _queue, _split_policies

    args = _parser().parse_args(argv.split())
    return _split_policies(args, _policies(args)), _queue(args)


def test_cli_flags_set_per_model_policies_when_model_values_are_given() -> None:
    split, queue = _cli(
        "all --instances yolov8=2,efficientnet_v2=1 --instances gpt2_stream=3 --max-batch-size yolov8=2 "
        "--batching gpt2=on,preprocessing=off --max-queue-delay-us yolov8=100 "
        "--max-queue-size 12,yolov8=32 --queue-timeout-ms yolov8=250"
    )
    assert queue == QueueLimits(max_queue_size=12)  # the plain value stays the target-wide default
    assert split["vision"]["yolov8"] == Policy(
        max_batch_size=2,
        instances=2,
        batching=Batching(max_queue_delay_us=100),
        queue=QueueLimits(max_queue_size=32, timeout_ms=250),
    )
    assert split["vision"]["efficientnet_v2"] == Policy(instances=1)
    assert split["vision"]["preprocessing"] == Policy(batching=Batching(enabled=False))
    assert split["gpt2"] == {"gpt2_stream": Policy(instances=3), "gpt2": Policy(batching=Batching(enabled=True))}
    assert _cli("vision --max-queue-size 5 --queue-timeout-ms 40") == ({"vision": {}, "gpt2": {}}, QueueLimits(5, 40))


@pytest.mark.parametrize(
    "argv,match",
    [
        ("vision --instances yolov8=0", "yolov8: --instances must be >= 1, got 0"),
        ("vision --instances yolov8", r"--instances 'yolov8': expected MODEL=VALUE"),
        ("vision --instances yolov8=two", "--instances yolov8=two: not an integer"),
        ("vision --instances gpt2_stream=2", r"unknown model 'gpt2_stream': `vision` builds preprocessing"),
        ("all --instances nope=2", r"unknown model 'nope': `all` builds .*gpt2_stream"),
        ("vision --instances ensemble_jpeg=2", "ensemble_jpeg is an ensemble"),
        ("gpt2 --batching gpt2=maybe", "--batching gpt2=maybe: use on or off"),
        ("vision --max-batch-size yolov8=0", "yolov8: --max-batch-size must be >= 1"),
        ("vision --max-queue-size yolov8=0", "yolov8: --max-queue-size must be >= 1"),
    ],
)
def test_cli_refuses_policy_flags_when_values_are_invalid(argv: str, match: str) -> None:
    with pytest.raises(BuildError, match=match):
        _cli(argv)
