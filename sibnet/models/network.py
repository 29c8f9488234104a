"""The three-branch context network of paper §3.1 (Figure 2), configured into any row of Table 2.

``model(face, body, scene)`` runs the three masked images through their own ResNet-18 stages; after each stage
the optional SCM (§3.2) and ICM (§3.3) let the branches exchange information; the head pools and classifies.
``forward_features`` / ``forward_head`` split the network at the final maps (after the SCM/ICM additions):
the CAM engine hooks those maps (``cam_taps``) and backpropagates through the head only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from sibnet.config import BRANCHES, ModelConfig
from sibnet.models.backbone import STAGE_CHANNELS, ResNetTrunk, imagenet_state_dict
from sibnet.models.heads import ContextHead, ModelOutput
from sibnet.models.icm import create_icm
from sibnet.models.scm import SequentialContextModule
from sibnet.models.serialization import save_pretrained


class ContextEmotionNet(nn.Module):
    """Face/body/scene network. Every variant of Table 2 is this class with another :class:`ModelConfig`."""

    def __init__(self, config: ModelConfig, pretrained: bool = False) -> None:
        super().__init__()
        self.config = config
        state = imagenet_state_dict() if pretrained else None  # fetched once, shared by the branches
        self.branches = nn.ModuleList(
            [ResNetTrunk(config.layer4_stride, state) for _ in config.branches]
        )  # one trunk per branch, no weight sharing (§4.2)
        self.scm = nn.ModuleDict(
            {str(s): SequentialContextModule(STAGE_CHANNELS[s - 1], config.scm) for s in config.scm_stages}
            if config.scm
            else {}
        )
        self.icm = nn.ModuleDict(
            {
                str(s): create_icm(
                    config.icm,
                    STAGE_CHANNELS[s - 1],
                    config.num_branches,
                    config.icm_expansion,
                    config.icm_bn_init,
                )
                for s in config.icm_stages
            }
            if config.icm
            else {}
        )
        # Identity modules at each branch's final map: the CAM target layers (hooks go here, not on layer4,
        # so a map includes what SCM and ICM added).
        self.cam_taps = nn.ModuleList([nn.Identity() for _ in config.branches])
        self.head = ContextHead(
            STAGE_CHANNELS[-1],
            config.num_branches,
            config.num_classes,
            fusion=config.fusion,
            hidden=config.fused_hidden,
            dropout=config.dropout,
            branch_heads=config.branch_heads,
            attention_reduction=config.attention_reduction,
        )

    @property
    def labels(self) -> tuple[str, ...]:
        return self.config.labels

    def _branch_inputs(self, inputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        cfg = self.config
        expected = f"3 tensors (face, body, scene), each (B, 3, {cfg.input_size}, {cfg.input_size})"
        if len(inputs) != 3:
            raise ValueError(f"{cfg.name} expects {expected}; got {len(inputs)} input(s)")
        shapes = []
        for name, x in zip(BRANCHES, inputs):
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"{cfg.name} expects {expected}; the {name} input is a {type(x).__name__}")
            shapes.append(tuple(x.shape))
            if x.ndim != 4 or x.shape[1] != 3 or x.shape[2:] != (cfg.input_size, cfg.input_size):
                raise ValueError(
                    f"{cfg.name} expects {expected}; the {name} input has shape {tuple(x.shape)}"
                )
        if len({s[0] for s in shapes}) != 1:
            raise ValueError(f"{cfg.name} expects {expected} with one batch size; got shapes {shapes}")
        by_name = dict(zip(BRANCHES, inputs))
        return [by_name[b] for b in cfg.branches]

    def forward_features(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Final maps of the branches (after SCM/ICM), each (B, 512, h, w)."""
        xs = [trunk.stem(x) for trunk, x in zip(self.branches, self._branch_inputs(inputs))]
        for stage in range(1, 5):
            xs = [trunk.layers[stage - 1](x) for trunk, x in zip(self.branches, xs)]
            key = str(stage)
            if key in self.scm:
                xs = self.scm[key](xs)  # sequential bias, face → body → scene
            if key in self.icm:
                xs = self.icm[key](xs)  # interactive residual
        return tuple(xs)

    def forward_head(self, maps: tuple[torch.Tensor, ...] | list[torch.Tensor]) -> ModelOutput:
        return self.head([tap(m) for tap, m in zip(self.cam_taps, maps)])

    def forward(self, *inputs: torch.Tensor) -> ModelOutput:
        return self.forward_head(self.forward_features(*inputs))

    def save_pretrained(self, directory: str | Path, training: dict[str, Any] | None = None) -> Path:
        """Write ``model.safetensors`` and ``config.json`` (see :func:`sibnet.models.serialization.save_pretrained`)."""
        return save_pretrained(self, directory, training=training)
