"""EfficientNetV2-S in plain torch, plus the oil-level regressor built on it.

torchvision cannot be imported here (its wheel is a CUDA build, torch is CPU-only), so the network is
re-implemented. Module and parameter names match ``torchvision.models.efficientnet_v2_s`` exactly, so a
torchvision state_dict loads with ``strict=True``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from builders import progress
from builders.errors import BuildError
from tritonyard_contract import CROP_SIZE

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (fused, expand_ratio, kernel, stride, in_channels, out_channels, num_layers): Table 4 of the
# EfficientNetV2 paper, as torchvision's _efficientnet_conf("efficientnet_v2_s") lists it.
_V2_S_STAGES = (
    (True, 1, 3, 1, 24, 24, 2),
    (True, 4, 3, 2, 24, 48, 4),
    (True, 4, 3, 2, 48, 64, 4),
    (False, 4, 3, 2, 64, 128, 6),
    (False, 6, 3, 1, 128, 160, 9),
    (False, 6, 3, 2, 160, 256, 15),
)
_LAST_CHANNELS = 1280
_STOCHASTIC_DEPTH_PROB = 0.2


def _conv_bn_act(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    """Conv-BN(-SiLU) as a Sequential, so children are named 0/1/2 like torchvision's Conv2dNormActivation."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout, eps=1e-3),  # V2 uses eps=1e-3, not BatchNorm's default 1e-5
    ]
    if act:
        layers.append(nn.SiLU(inplace=True))
    return nn.Sequential(*layers)


class SqueezeExcitation(nn.Module):
    """Channel attention; attribute names match torchvision.ops.SqueezeExcitation."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = nn.SiLU(inplace=True)
        self.scale_activation = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        scale = self.fc2(self.activation(self.fc1(self.avgpool(x))))
        return x * self.scale_activation(scale)


class StochasticDepth(nn.Module):
    """Per-sample ("row") residual-branch dropout; identity in eval mode, which is all we export."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        return x * x.new_empty((x.shape[0], 1, 1, 1)).bernoulli_(keep).div_(keep)


class _Block(nn.Module):
    """FusedMBConv (fused=True) or MBConv block; the layers live in ``self.block`` as in torchvision."""

    def __init__(self, fused: bool, expand: int, kernel: int, stride: int, cin: int, cout: int, sd: float) -> None:
        super().__init__()
        mid = cin * expand  # all V2-S widths are multiples of 8, so torchvision's _make_divisible is a no-op
        layers: list[nn.Module]
        if fused and mid == cin:
            layers = [_conv_bn_act(cin, cout, kernel, stride)]
        elif fused:
            layers = [_conv_bn_act(cin, mid, kernel, stride), _conv_bn_act(mid, cout, 1, act=False)]
        else:
            layers = [
                _conv_bn_act(cin, mid, 1),
                _conv_bn_act(mid, mid, kernel, stride, groups=mid),
                SqueezeExcitation(mid, max(1, cin // 4)),  # squeeze width comes from the block *input*
                _conv_bn_act(mid, cout, 1, act=False),
            ]
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(sd)
        self.use_res_connect = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        if self.use_res_connect:
            out = self.stochastic_depth(out) + x  # not in-place, keeps the ONNX trace simple
        return out


class EfficientNetV2S(nn.Module):
    """torchvision-compatible EfficientNetV2-S classifier (21,458,488 parameters at 1000 classes)."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        total_blocks = sum(stage[-1] for stage in _V2_S_STAGES)
        layers: list[nn.Module] = [_conv_bn_act(3, _V2_S_STAGES[0][4], 3, stride=2)]
        block_id = 0
        for fused, expand, kernel, stride, cin, cout, n in _V2_S_STAGES:
            stage = []
            for i in range(n):
                # only a stage's first block changes width/resolution; drop prob grows linearly with depth
                s_in, c_in = (stride, cin) if i == 0 else (1, cout)
                sd = _STOCHASTIC_DEPTH_PROB * block_id / total_blocks
                stage.append(_Block(fused, expand, kernel, s_in, c_in, cout, sd))
                block_id += 1
            layers.append(nn.Sequential(*stage))
        layers.append(_conv_bn_act(_V2_S_STAGES[-1][5], _LAST_CHANNELS, 1))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout, inplace=True), nn.Linear(_LAST_CHANNELS, num_classes))

        # torchvision's init, so randomly initialised outputs are well-scaled
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Map already-normalized images [B,3,H,W] to logits [B,num_classes]."""
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(x)


class OilLevelRegressor(EfficientNetV2S):
    """EfficientNetV2-S with a 1-output regression head: input [B,3,384,384] RGB in 0..1, output [B,1] oil
    percentage = sigmoid(logit)*100.

    Applies ImageNet mean/std normalization inside forward (so it is part of the exported ONNX graph). With
    `input_px` below the contract's 384 the network reads the crop at that side: the crop is average-pooled by
    384 / input_px first (an exact area resize), also inside the graph, so the served input stays [B,3,384,384].
    """

    def __init__(self, input_px: int = CROP_SIZE) -> None:
        if input_px < 32 or CROP_SIZE % input_px:
            raise BuildError(f"the regressor's input side must divide the {CROP_SIZE} px crop (>= 32), got {input_px}")
        super().__init__(num_classes=1)
        self.input_px = input_px
        # non-persistent: the state_dict keys stay exactly torchvision's
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """Map RGB crops in 0..1 [B,3,384,384] to oil percentage [B,1] in 0..100."""
        if self.input_px != CROP_SIZE:
            x = F.avg_pool2d(x, CROP_SIZE // self.input_px)
        return torch.sigmoid(super().forward((x - self.mean) / self.std)) * 100.0


_HEAD = ("classifier.1.weight", "classifier.1.bias")


def _calibrate_batchnorm(model: OilLevelRegressor) -> None:
    """Fill BatchNorm running statistics from one pass over noise.

    Freshly initialised BatchNorm layers are identities in eval mode, so features shrink to ~1e-6 and a random
    model answers 50.000 for every image: useless for the demo and too weak for the export check.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in norms:
        bn.momentum = None  # cumulative average: one batch sets the statistics outright
    with torch.no_grad():
        model.train()(torch.rand(4, 3, CROP_SIZE, CROP_SIZE))
    for bn in norms:
        bn.momentum = 0.1
    model.eval()


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """Load a checkpoint and unwrap it to a plain {name: tensor} dict, or raise BuildError."""
    if not path.is_file():
        raise BuildError(f"weights file {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise BuildError(f"cannot read weights file {path}: {e}") from e
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise BuildError(f"weights file {path} does not hold a state dict of tensors")
    return {str(k).removeprefix("module."): v for k, v in obj.items()}  # DataParallel/DDP checkpoints


def build_oil_regressor(
    weights: Path | None, seed: int = 0, input_px: int = CROP_SIZE
) -> tuple[OilLevelRegressor, str]:
    """Returns the model in eval mode and a one-line human description of where its weights came from.

    `input_px` is the side the weights were trained to read (see OilLevelRegressor); the served input is 384.

    weights None -> deterministic random init (same seed -> bit-identical weights). A weights path may hold a
    raw state_dict or one wrapped in {'state_dict': ...} / {'model': ...}, optionally 'module.'-prefixed.
    A checkpoint whose classifier.1 is not [1,1280] (e.g. ImageNet) loads the backbone strictly and keeps the
    random regression head, with a loud warning on the "tritonyard.build" logger. Any failure raises BuildError
    naming the file and the first offending keys.
    """
    with torch.random.fork_rng(devices=[]):  # seed the init without disturbing the caller's global RNG
        torch.manual_seed(seed)
        model = OilLevelRegressor(input_px)
        if weights is None:
            _calibrate_batchnorm(model)
    if weights is None:
        return model.eval(), f"random init (seed {seed}, BatchNorm calibrated on noise), no weights file given"

    weights = Path(weights)
    state = _read_state_dict(weights)
    expected = model.state_dict()
    head = state.get(_HEAD[0])
    random_head = head is not None and tuple(head.shape) != tuple(expected[_HEAD[0]].shape)
    if random_head:
        state = {k: v for k, v in state.items() if k not in _HEAD}
        expected = {k: v for k, v in expected.items() if k not in _HEAD}

    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    bad_shape = [
        f"{k} {list(state[k].shape)}, want {list(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = [
        f"{name} {keys[:5]}"
        for name, keys in [("missing", missing), ("unexpected", unexpected), ("wrong shape", bad_shape)]
        if keys
    ]
    if problems:
        raise BuildError(f"weights file {weights} does not match EfficientNetV2-S: " + "; ".join(problems))
    try:
        model.load_state_dict(state, strict=not random_head)
    except RuntimeError as e:  # e.g. non-float tensors that cannot be copied into parameters
        raise BuildError(f"cannot load weights file {weights}: {e}") from e

    if random_head:
        source = (
            f"backbone from {weights}; regression head classifier.1 is random (seed {seed}) because the "
            f"checkpoint's head has shape {list(head.shape)}, not [1, 1280]"
        )
        # The backbone is real, so the build looks fine; only this banner says the oil % is noise.
        progress.warn_random_weights("efficientnet_v2 regression head (classifier.1)", source)
        return model.eval(), source
    return model.eval(), f"all weights from {weights}"
