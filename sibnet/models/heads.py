"""Classifier heads: what turns the branches' final maps into scores.

- Fused classifier (paper §3.1): the pooled 512-d features of the branches are fused and classified by an MLP,
  giving the score ``s`` trained with BCE. ``concat`` fusion concatenates them (the paper's baseline, and the
  fusion SIB-Net keeps); ``attention`` weights each branch's channels first (the attention baseline of Table 1:
  per-branch channel logits from GAP → 1×1 conv bottleneck, softmax across the three branches per channel).
- Branch classifiers (§3.4): one linear layer per branch on its own pooled feature, giving ``s_f, s_b, s_s``
  for the Biased Context Module's distribution-label loss.

The whole head is one module (``ContextHead``) that starts from the final maps, so the CAM engine can run it on
cached maps alone: gradients of a score with respect to the maps never pass through the backbone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn


class ModelOutput(NamedTuple):
    """What a model returns. A NamedTuple so DDP, tracing and plain unpacking all work."""

    logits: torch.Tensor  # (B, K) fused scores s
    branch_logits: tuple[torch.Tensor, ...] | None = (
        None  # (B, K) per branch (s_f, s_b, s_s), if the model has them
    )


class MLPClassifier(nn.Module):
    def __init__(self, in_features: int, hidden: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConcatFusion(nn.Module):
    """[p_1, ..., p_n] (each (B, C)) → concatenation (B, nC) → MLP → (B, K)."""

    def __init__(
        self, channels: int, num_branches: int, num_classes: int, hidden: int, dropout: float
    ) -> None:
        super().__init__()
        self.classifier = MLPClassifier(num_branches * channels, hidden, num_classes, dropout)

    def forward(self, pooled: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.classifier(torch.cat(list(pooled), dim=1))


class AttentionFusion(nn.Module):
    """Channel attention across branches: weights w_b (B, C) with Σ_b w_b = 1 per channel, then weighted concat."""

    def __init__(
        self,
        channels: int,
        num_branches: int,
        num_classes: int,
        hidden: int,
        dropout: float,
        reduction: int = 16,
    ) -> None:
        super().__init__()
        inner = max(channels // reduction, 1)
        self.bottlenecks = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Conv2d(channels, inner, 1), nn.ReLU(inplace=True), nn.Conv2d(inner, channels, 1)
                )
                for _ in range(num_branches)
            ]
        )
        self.classifier = MLPClassifier(num_branches * channels, hidden, num_classes, dropout)

    def weights(self, pooled: Sequence[torch.Tensor]) -> torch.Tensor:
        """Attention weights, shape (B, n, C), softmax over the branch dimension."""
        logits = [net(p[:, :, None, None]).flatten(1) for net, p in zip(self.bottlenecks, pooled)]
        return torch.softmax(torch.stack(logits, dim=1), dim=1)

    def forward(self, pooled: Sequence[torch.Tensor]) -> torch.Tensor:
        w = self.weights(pooled)  # (B, n, C)
        return self.classifier(torch.cat([p * w[:, i] for i, p in enumerate(pooled)], dim=1))


class ContextHead(nn.Module):
    """Final maps → GAP → fused logits (+ branch logits)."""

    def __init__(
        self,
        channels: int,
        num_branches: int,
        num_classes: int,
        fusion: str = "concat",
        hidden: int = 512,
        dropout: float = 0.0,
        branch_heads: bool = False,
        attention_reduction: int = 16,
    ) -> None:
        super().__init__()
        if fusion == "concat":
            self.fusion: nn.Module = ConcatFusion(channels, num_branches, num_classes, hidden, dropout)
        elif fusion == "attention":
            self.fusion = AttentionFusion(
                channels, num_branches, num_classes, hidden, dropout, attention_reduction
            )
        else:
            raise ValueError(f"unknown fusion {fusion!r}; valid: ['attention', 'concat']")
        self.branch_classifiers = (
            nn.ModuleList([nn.Linear(channels, num_classes) for _ in range(num_branches)])
            if branch_heads
            else None
        )

    def forward(self, maps: Sequence[torch.Tensor]) -> ModelOutput:
        pooled = [m.mean(dim=(2, 3)) for m in maps]  # (B, C) each; the "last pooling layers" of §4.2
        logits = self.fusion(pooled)  # (B, K)
        if self.branch_classifiers is None:
            return ModelOutput(logits)
        return ModelOutput(logits, tuple(head(p) for head, p in zip(self.branch_classifiers, pooled)))
