"""ResNet-18 branch trunks (paper §4.2: "three ResNet-18 as the backbone", ImageNet-pretrained by default).

Each branch is torchvision's ``resnet18`` without its pooling and classifier, split into the stem and the four
stages so that SCM and ICM can act between stages. ``layer4_stride=1`` removes the last down-sampling (the
authors' released code does this: 14x14 final maps at 224 px, sharper CAMs, about 1.8x the FLOPs); the
default keeps torchvision's stride 2, the network the paper describes and the one its ImageNet weights were
trained as.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

from sibnet.errors import PretrainedWeightsUnavailable

STAGE_CHANNELS: tuple[int, int, int, int] = (64, 128, 256, 512)
IMAGENET_WEIGHTS = ResNet18_Weights.IMAGENET1K_V1
_PROBE_TIMEOUT_S = 10.0


class ResNetTrunk(nn.Module):
    """ResNet-18 up to layer4: ``stem`` then ``layers[0..3]`` (C = 64, 128, 256, 512)."""

    def __init__(self, layer4_stride: int = 2, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        net = resnet18(weights=None)
        if state_dict is not None:
            net.load_state_dict(state_dict, strict=True)
        if layer4_stride == 1:
            # "Last stride 1": same weights, no down-sampling in the first block of layer4.
            net.layer4[0].conv1.stride = (1, 1)
            net.layer4[0].downsample[0].stride = (1, 1)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layers = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - the network drives the stages
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x)
        return x


def _cached_weights_path() -> Path:
    filename = os.path.basename(IMAGENET_WEIGHTS.url)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _offline_requested() -> bool:
    return any(
        os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("SIBNET_OFFLINE", "HF_HUB_OFFLINE")
    )


def imagenet_state_dict() -> dict[str, torch.Tensor]:
    """torchvision's ImageNet ResNet-18 weights, from the torch hub cache or downloaded once.

    Offline, this fails at once (a DNS failure or a 10 s connect timeout at most) with a message saying how to
    proceed; it never falls back to random weights.

    Raises:
        PretrainedWeightsUnavailable: not cached and not downloadable.
    """
    cached = _cached_weights_path()
    if not cached.is_file():
        advice = (
            f"ImageNet ResNet-18 weights are not cached at {cached} and cannot be downloaded ({{why}}). "
            f"Either copy {cached.name} (from {IMAGENET_WEIGHTS.url}) into {cached.parent}, or point TORCH_HOME "
            "at a torch cache that holds it, or train from scratch with pretrained=False (--no-pretrained)."
        )
        if _offline_requested():
            raise PretrainedWeightsUnavailable(advice.format(why="offline mode is set"))
        try:  # a short probe, so an unreachable network fails fast instead of hanging in the download
            with urllib.request.urlopen(
                urllib.request.Request(IMAGENET_WEIGHTS.url, method="HEAD"), timeout=_PROBE_TIMEOUT_S
            ):
                pass
        except (urllib.error.URLError, OSError) as err:
            raise PretrainedWeightsUnavailable(advice.format(why=f"{type(err).__name__}: {err}")) from err
    try:
        # weights_only: the cache is a file on the user's disk; never unpickle arbitrary objects from it.
        return IMAGENET_WEIGHTS.get_state_dict(
            progress=not cached.is_file(), check_hash=True, weights_only=True
        )
    except Exception as err:
        raise PretrainedWeightsUnavailable(f"could not load ImageNet ResNet-18 weights: {err}") from err
