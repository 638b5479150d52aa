"""Every model the builders generate, per target: the one list deployments and checks read."""

from __future__ import annotations

from builders.triton_config import Device, ModelSpec


def all_specs(device: Device) -> list[ModelSpec]:
    """Specs of every pipeline's models for `device`, in build order."""
    from builders import gpt2, vision

    return [*vision.specs(vision.VisionConfig(device=device)), *gpt2.specs(gpt2.Gpt2Config(device=device))]


def model_names(device: Device) -> list[str]:
    """Names of every model in a repository built for `device`."""
    return [s.name for s in all_specs(device)]
