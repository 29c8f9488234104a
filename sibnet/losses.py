"""Training losses: BCE on the fused score and the Biased Context Module (paper §3.4).

BCM gives each branch a *distribution label*: the ground truth y with every 0 replaced by a fresh draw of
N(mean 0.4, variance 0.1), clipped to [0, 1] — "there is no absolute emotion category after masking some
context regions". The paper's choice (``ldl*``) does not normalise the result; ``ldl`` (classic label
distribution learning) normalises it to sum 1. The branch scores σ(s_t) are fitted to these labels with L1
(the paper's choice, tighter convergence bound [25]) or BCE. Total loss = BCE(s, y) + Σ_t L(σ(s_t), y_t),
the two terms in the ratio 1:1 (§4.2).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

BCM_LABELS = ("ldl", "ldl*")
BCM_LOSSES = ("l1", "bce")
FUSED_LOSSES = ("bce", "ce")


@dataclass(frozen=True)
class LossConfig:
    """How a model is trained (stored in the checkpoint's training metadata)."""

    fused: str = "bce"  # loss on the fused score s: 'bce' (paper, both datasets) or 'ce' (softmax CE)
    bcm: str | None = None  # distribution labels for the branch heads: 'ldl*' (paper), 'ldl', None = no BCM
    bcm_loss: str = "l1"  # loss between σ(s_t) and y_t: 'l1' (paper) or 'bce'
    bcm_weight: float = 1.0  # ratio of the BCM term to the fused term (paper: 1:1)
    bcm_mean: float = 0.4  # Gaussian that replaces the zeros of y (paper: mean 0.4 ...)
    bcm_variance: float = 0.1  # ... and variance 0.1, i.e. std ≈ 0.316

    def __post_init__(self) -> None:
        if self.fused not in FUSED_LOSSES:
            raise ValueError(f"fused loss must be one of {FUSED_LOSSES}, got {self.fused!r}")
        if self.bcm is not None and self.bcm not in BCM_LABELS:
            raise ValueError(f"bcm must be one of {BCM_LABELS} or None, got {self.bcm!r}")
        if self.bcm_loss not in BCM_LOSSES:
            raise ValueError(f"bcm_loss must be one of {BCM_LOSSES}, got {self.bcm_loss!r}")
        if self.bcm_variance < 0:
            raise ValueError("bcm_variance must be non-negative")

    @property
    def describe(self) -> str:
        if self.bcm is None:
            return self.fused.upper()
        return f"{self.fused.upper()} + BCM({self.bcm.upper()}+{self.bcm_loss.upper()})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def distribution_labels(
    target: torch.Tensor,
    mode: str = "ldl*",
    mean: float = 0.4,
    variance: float = 0.1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """BCM's distribution labels y_t for a one-hot / multi-hot ``target`` (B, K).

    Zeros become fresh N(mean, variance) samples clipped to [0, 1]; ones stay 1 (``ldl*``). ``ldl`` then
    normalises each row to sum 1. Drawn anew on every call (the caller calls once per branch per step).
    """
    if mode not in BCM_LABELS:
        raise ValueError(f"mode must be one of {BCM_LABELS}, got {mode!r}")
    noise = torch.randn(target.shape, generator=generator, dtype=torch.float32, device="cpu")
    noise = (noise * math.sqrt(variance) + mean).clamp_(0.0, 1.0).to(device=target.device, dtype=target.dtype)
    labels = torch.where(target > 0.5, torch.ones_like(target), noise)
    if mode == "ldl":
        labels = labels / labels.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    return labels


class LossBreakdown(NamedTuple):
    total: torch.Tensor
    fused: torch.Tensor
    branch: torch.Tensor  # sum over the branches (0 without BCM)


class ContextLoss(nn.Module):
    """Fused BCE (or CE) plus, when configured and the model has branch heads, the BCM term."""

    def __init__(self, config: LossConfig | None = None) -> None:
        super().__init__()
        self.config = config or LossConfig()

    def fused_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The fused term alone: BCE (or CE against the argmax of ``target``) of the fused score ``s``."""
        logits, target = logits.float(), target.float()
        if self.config.fused == "bce":
            return F.binary_cross_entropy_with_logits(logits, target)
        return F.cross_entropy(logits, target.argmax(dim=1))

    def forward(
        self,
        logits: torch.Tensor,
        target: torch.Tensor,
        branch_logits: tuple[torch.Tensor, ...] | None = None,
        generator: torch.Generator | None = None,
    ) -> LossBreakdown:
        """``target`` is multi-hot / one-hot float (B, K)."""
        cfg = self.config
        logits = logits.float()
        target = target.to(logits.dtype)
        fused = self.fused_loss(logits, target)
        branch = logits.new_zeros(())
        if cfg.bcm is not None:
            if not branch_logits:
                raise ValueError("BCM needs a model with branch heads (e.g. 'sibnet', 'concat_bcm')")
            for s_t in branch_logits:
                y_t = distribution_labels(target, cfg.bcm, cfg.bcm_mean, cfg.bcm_variance, generator)
                s_t = s_t.float()
                if cfg.bcm_loss == "l1":
                    branch = branch + F.l1_loss(torch.sigmoid(s_t), y_t)
                else:
                    branch = branch + F.binary_cross_entropy_with_logits(s_t, y_t)
        return LossBreakdown(fused + cfg.bcm_weight * branch, fused, branch)
