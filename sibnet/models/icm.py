"""Interactive Context Module (paper §3.3, Figure 4).

For branch b, ``X = concat(own, other, other)`` (3C channels). Three 1×1 convs give ``Q, K, V ∈ R^{dC×HW}``
(dC = 2C); ``W = softmax(Q Kᵀ / sqrt(dC))`` normalised along its last dimension is a dC×dC *channel*
affinity; ``Y = BN(conv1x1(W V))`` (C channels) is added residually to the branch's map.

Variants (string keys, one constructor contract ``variant(channels, num_branches, expansion)``, called on the
list of branch maps and returning the list of updated maps):

- ``gclf`` — global correlated linear fusion, the paper's choice: one correlated block *per branch* (each
  sees the other two from its own point of view), 3 modules per insertion point.
- ``clf`` — correlated linear fusion with one block shared by the branches (non-local style, [27]): X is the
  three maps concatenated once; the 3C-channel output is split back to the branches.
- ``lf`` — linear fusion: the shared block with two 1×1 convs on X and no correlation.

``forward`` computes ``W V`` with ``torch.nn.functional.scaled_dot_product_attention`` (the channels as the
sequence, the HW positions as the feature dimension, the scale set to 1/sqrt(dC)): the same function as
``affinity(x) @ V`` (a test holds them to float rounding), without materialising W. At layer 4 W is 1024×1024
per item; measured on 2 CPU cores at batch 16 with 1×1 maps, forward+backward of one block took 219 ms with W
materialised and 24 ms fused, and on CUDA the fused kernels also save W's memory. ``affinity`` stays for
inspection.

The final BN's initial scale γ is ``ModelConfig.icm_bn_init``. The paper does not say; the default γ = 1 is
what the authors' released ICM (``FFM_v4``) does (PyTorch's default init), and the paper's numbers came from
that code. γ = 0 (Non-local networks' "start as the identity", Wang et al. 2018, §4.1) leaves the pretrained
backbone undisturbed at step 0 but gives the Q/K/V convolutions exactly zero gradient at the first step, which
can move the lf/clf/gclf ablation (Table 2 gaps of 0.24-0.62 pp); it stays available (``--icm-bn-init 0``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _output_bn(channels: int, gamma: float) -> nn.BatchNorm2d:
    """The block's output BatchNorm with its initial γ (``ModelConfig.icm_bn_init``: 1, the authors' code)."""
    bn = nn.BatchNorm2d(channels)
    nn.init.constant_(bn.weight, gamma)
    return bn


class CorrelatedFusion(nn.Module):
    """Correlated linear fusion block: (B, in, H, W) → (B, out, H, W)."""

    def __init__(
        self, in_channels: int, inner_channels: int, out_channels: int, bn_init: float = 1.0
    ) -> None:
        super().__init__()
        self.query = nn.Conv2d(in_channels, inner_channels, 1)
        self.key = nn.Conv2d(in_channels, inner_channels, 1)
        self.value = nn.Conv2d(in_channels, inner_channels, 1)
        self.out = nn.Conv2d(inner_channels, out_channels, 1, bias=False)  # BN follows: a bias is redundant
        self.bn = _output_bn(out_channels, bn_init)

    def affinity(self, x: torch.Tensor) -> torch.Tensor:
        """The dC×dC channel affinity W = softmax(Q Kᵀ / sqrt(dC)), rows summing to one. Shape (B, dC, dC)."""
        q = self.query(x).flatten(2)  # (B, dC, HW)
        k = self.key(x).flatten(2)  # (B, dC, HW)
        scores = torch.bmm(q, k.transpose(1, 2)) / math.sqrt(q.shape[1])  # (B, dC, dC)
        return torch.softmax(scores, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        # (B, 1, dC, HW): one "head", dC channels attending to each other over HW features.
        q, k, v = (proj(x).flatten(2).unsqueeze(1) for proj in (self.query, self.key, self.value))
        fused = F.scaled_dot_product_attention(q, k, v, scale=1.0 / math.sqrt(q.shape[2]))  # W V, fused
        return self.bn(self.out(fused.view(b, -1, h, w)))  # (B, dC, H, W) → (B, out, H, W)


class LinearFusion(nn.Module):
    """Two 1×1 convs, no correlation: (B, in, H, W) → (B, out, H, W)."""

    def __init__(
        self, in_channels: int, inner_channels: int, out_channels: int, bn_init: float = 1.0
    ) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(in_channels, inner_channels, 1)
        self.out = nn.Conv2d(inner_channels, out_channels, 1, bias=False)
        self.bn = _output_bn(out_channels, bn_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.out(self.reduce(x)))


class GlobalCorrelatedICM(nn.Module):
    """``gclf``: one correlated block per branch over X_b = [own, others...]."""

    def __init__(
        self, channels: int, num_branches: int = 3, expansion: int = 2, bn_init: float = 1.0
    ) -> None:
        super().__init__()
        n, c = num_branches, channels
        self.blocks = nn.ModuleList([CorrelatedFusion(n * c, expansion * c, c, bn_init) for _ in range(n)])

    def forward(self, maps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for b, block in enumerate(self.blocks):
            x = torch.cat([maps[b], *(m for j, m in enumerate(maps) if j != b)], dim=1)  # (B, 3C, H, W)
            out.append(maps[b] + block(x))
        return out


class _SharedICM(nn.Module):
    """One block over the three maps concatenated once, its 3C output split back to the branches."""

    block_type: type[nn.Module]

    def __init__(
        self, channels: int, num_branches: int = 3, expansion: int = 2, bn_init: float = 1.0
    ) -> None:
        super().__init__()
        n, c = num_branches, channels
        self.block = self.block_type(n * c, expansion * c, n * c, bn_init)

    def forward(self, maps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        y = self.block(torch.cat(list(maps), dim=1)).chunk(len(maps), dim=1)
        return [m + d for m, d in zip(maps, y)]


class SharedCorrelatedICM(_SharedICM):
    """``clf``: a single non-local-style correlated block shared by the branches."""

    block_type = CorrelatedFusion


class SharedLinearICM(_SharedICM):
    """``lf``: linear fusion of the concatenated maps, no correlation."""

    block_type = LinearFusion


ICM_VARIANTS: dict[str, Callable[..., nn.Module]] = {
    "gclf": GlobalCorrelatedICM,
    "clf": SharedCorrelatedICM,
    "lf": SharedLinearICM,
}


def create_icm(
    variant: str, channels: int, num_branches: int = 3, expansion: int = 2, bn_init: float = 1.0
) -> nn.Module:
    if variant not in ICM_VARIANTS:
        raise ValueError(f"unknown ICM variant {variant!r}; valid variants: {sorted(ICM_VARIANTS)}")
    return ICM_VARIANTS[variant](channels, num_branches, expansion, bn_init)


def icm_parameter_count(variant: str, channels: int, num_branches: int = 3, expansion: int = 2) -> int:
    """Closed-form parameter count of one ICM insertion point (tests check the modules against it)."""
    n, c, d = num_branches, channels, expansion * channels
    if variant == "gclf":  # per branch: Q,K,V (nC→dC, bias) + out (dC→C) + BN(C)
        return n * (3 * (n * c * d + d) + d * c + 2 * c)
    if variant == "clf":  # shared: Q,K,V (nC→dC, bias) + out (dC→nC) + BN(nC)
        return 3 * (n * c * d + d) + d * n * c + 2 * n * c
    if variant == "lf":  # shared: reduce (nC→dC, bias) + out (dC→nC) + BN(nC)
        return (n * c * d + d) + d * n * c + 2 * n * c
    raise ValueError(f"unknown ICM variant {variant!r}; valid variants: {sorted(ICM_VARIANTS)}")
