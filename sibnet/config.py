"""The one configuration object of a model (nanoGPT style): every architectural choice of paper §3 and
Table 2 is a field here, the checkpoint's ``config.json`` stores it, and the model rebuilds from it alone.

Defaults are the decisions of DESIGN.md §1 (the paper leaves them open). Loss choices (BCM, §3.4) are
training-time and live in :class:`sibnet.losses.LossConfig`, not here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from sibnet.data.masking import BRANCHES, InputTransform
from sibnet.labels import EMOTIC_CATEGORIES

FUSIONS: tuple[str, ...] = ("concat", "attention")
STAGES: tuple[int, ...] = (1, 2, 3, 4)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a three-branch (or single-branch) context model."""

    name: str = "sibnet"  # registered builder this config came from (see sibnet.list_models())
    labels: tuple[str, ...] = EMOTIC_CATEGORIES  # class names in logit order; num_classes = len(labels)
    multi_label: bool = True  # sigmoid scores + mAP (EMOTIC) or softmax + accuracy (CAER-S)
    branches: tuple[str, ...] = BRANCHES  # which masked images the model sees, in SCM order face→body→scene
    fusion: str = "concat"  # 'concat' (paper's baseline and SIB-Net) or 'attention' (the attention baseline)
    scm: str | None = (
        None  # SCM cell after each stage in scm_stages: 'gru' (Eq. 2), 'rnn', 'lstm'; None = off
    )
    scm_stages: tuple[int, ...] = STAGES  # paper §3.1: "we make all layers' features as SCM's input"
    icm: str | None = None  # ICM variant: 'gclf' (paper), 'clf' (shared, non-local style), 'lf'; None = off
    icm_stages: tuple[int, ...] = (2, 4)  # paper §3.1: "the 2nd and 4th layers' features as ICM's input"
    icm_expansion: int = 2  # inner width dC = icm_expansion * C (the paper's factor d)
    # Initial γ of each ICM block's output BatchNorm. The paper does not say; the authors' released ICM
    # (FFM_v4) keeps PyTorch's default γ = 1, and the paper's numbers came from that code. γ = 0 (the Non-local
    # "start as identity" init) gives the Q/K/V convs exactly zero gradient at the first step. Only new models
    # read it: a checkpoint's weights replace it.
    icm_bn_init: float = 1.0
    branch_heads: bool = False  # per-branch classifiers s_f, s_b, s_s (needed by BCM, §3.4)
    layer4_stride: int = 2  # 2: torchvision ResNet-18 (7x7 maps); 1: authors' code (14x14, ~1.8x FLOPs)
    fused_hidden: int = 512  # hidden width of the fused MLP classifier ("MLPs", §3.1)
    dropout: float = 0.0  # dropout before the fused classifier's last layer
    attention_reduction: int = 16  # bottleneck ratio of the attention baseline's 1x1 convs
    input_size: int = 224  # side of each branch tensor (random/center crop, §4.2)
    resize: int = 230  # side each masked image is resized to before cropping (§4.2)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # (x - mean) / std maps [0, 1] to [-1, 1] (§4.2)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    extra: dict[str, Any] = field(default_factory=dict, compare=False)  # free-form notes, kept in config.json

    def __post_init__(self) -> None:
        # Tuples, not lists, whatever JSON gave us (frozen dataclass: set through object.__setattr__).
        for key in ("labels", "branches", "scm_stages", "icm_stages", "mean", "std"):
            object.__setattr__(self, key, tuple(getattr(self, key)))
        self.validate()

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def num_branches(self) -> int:
        return len(self.branches)

    @property
    def transform(self) -> InputTransform:
        """The input recipe this model was built for (masking, resize, crop, normalisation), as one object."""
        return InputTransform(self.input_size, self.resize, self.mean, self.std)

    def validate(self) -> None:
        """Raise ValueError naming the field and its valid values for any inconsistent setting."""
        if not self.labels:
            raise ValueError("labels must name at least one class")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels must be unique, got {self.labels}")
        bad = [b for b in self.branches if b not in BRANCHES]
        if bad or not self.branches or len(set(self.branches)) != len(self.branches):
            raise ValueError(f"branches must be distinct names from {BRANCHES}, got {self.branches}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if (self.scm or self.icm or self.fusion == "attention") and self.branches != BRANCHES:
            raise ValueError("SCM, ICM and attention fusion need all three branches (face, body, scene)")
        for key, stages in (("scm_stages", self.scm_stages), ("icm_stages", self.icm_stages)):
            if any(s not in STAGES for s in stages):
                raise ValueError(f"{key} must be drawn from {STAGES}, got {stages}")
        if self.layer4_stride not in (1, 2):
            raise ValueError(f"layer4_stride must be 1 or 2, got {self.layer4_stride}")
        if not 0.0 <= self.icm_bn_init <= 1.0:
            raise ValueError(f"icm_bn_init must be in [0, 1], got {self.icm_bn_init}")
        if self.icm_expansion < 1 or self.attention_reduction < 1 or self.fused_hidden < 1:
            raise ValueError("icm_expansion, attention_reduction and fused_hidden must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.input_size < 32 or self.resize < self.input_size:
            raise ValueError(
                f"need 32 <= input_size <= resize, got input_size={self.input_size}, resize={self.resize}"
            )
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std are three numbers each, std positive")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys are an error (a newer or foreign checkpoint)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}; known keys: {sorted(names)}")
        return cls(**data)

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)
