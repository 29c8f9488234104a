"""The resolved configuration of a training run (``--dry-run`` prints it) and the recipe's constants (§4.2)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sibnet.config import ModelConfig
from sibnet.data.registry import DatasetSpec, get_dataset
from sibnet.losses import LossConfig
from sibnet.models.registry import TABLE1, TABLE2

LR_BACKBONE = 1e-4  # §4.2: "the backbone's parameters ... 0.0001"
LR_MODULES = 1e-3  # §4.2: "the classifier's and the modules' parameters ... 0.001"
LR_MILESTONES: tuple[float, ...] = (0.5, 0.75, 0.875)  # §4.2: "× 0.1 at the 0.5, 0.75 and 0.875 phase"
LR_GAMMA = 0.1
# The per-dataset part of the recipe (batch size, epochs) is the dataset's: sibnet.data.registry.

# The output layout (see sibnet.training).
LAST_NAME = "last.pt"
BEST_NAME = "best"
LOG_NAME = "metrics.jsonl"
SUMMARY_NAME = "summary.json"
SKIPPED_NAME = "skipped_images.tsv"  # the unreadable images a run left out (only when there are any)


# §4.2: "we average the results of three experiments"; a bare run follows it (``--seeds 0`` for one).
DEFAULT_SEEDS: tuple[int, ...] = (0, 1, 2)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run is resolved to (``--dry-run`` prints it)."""

    dataset: str
    data_root: Path
    out: Path
    run_name: str
    variant: str  # Table-2 row label (or the model name for models outside Table 2)
    model: ModelConfig
    loss: LossConfig
    paper: dict[str, float | None]  # the paper's numbers for this row (%), None where not reported
    pretrained: bool = True
    epochs: int = 10
    batch_size: int = 32  # global batch: split evenly over the processes of a torchrun launch
    eval_batch_size: int = 64
    lr_backbone: float = LR_BACKBONE
    lr_modules: float = LR_MODULES
    lr_milestones: tuple[float, ...] = LR_MILESTONES
    lr_gamma: float = LR_GAMMA
    weight_decay: float = 0.0  # §4.2 names none
    # Each branch of each training item made the neutral input with this probability (0: the paper's recipe).
    # A model that has seen a blank branch reads it as "no evidence", which branch attributions assume.
    neutral_dropout: float = 0.0
    max_steps_per_epoch: int | None = None
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    device: str | None = None
    workers: int = 4
    amp: str = "auto"
    annotations: Path | None = None
    boxes: Path | None = None
    val_fraction: float | None = None  # CAER-S: share of train/ held out as val (None: the dataset's 0.1)
    strict: bool = False  # True: the first unreadable image is an error instead of being skipped
    evaluate_test: bool = True
    resume: bool = False  # True: a resume state must exist
    overwrite: bool = False
    write_digests: bool = False
    progress: bool = True

    def seed_dir(self, seed: int) -> Path:
        return self.out / self.run_name / f"seed{seed}"

    @property
    def run_dir(self) -> Path:
        return self.out / self.run_name

    @property
    def spec(self) -> DatasetSpec:
        return get_dataset(self.dataset)

    @property
    def metric(self) -> str:
        return self.spec.metric

    def dataset_options(self) -> dict[str, Any]:
        """The dataset-specific settings passed to :meth:`DatasetSpec.open` (None: the dataset's default)."""
        return {"annotations": self.annotations, "val_fraction": self.val_fraction}

    def recipe(self) -> dict[str, Any]:
        """The optimisation recipe as JSON (stored in checkpoints and compared when resuming)."""
        return {
            "optimizer": "adam",
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr_backbone": self.lr_backbone,
            "lr_modules": self.lr_modules,
            "lr_milestones": list(self.lr_milestones),
            "lr_gamma": self.lr_gamma,
            "weight_decay": self.weight_decay,
            "max_steps_per_epoch": self.max_steps_per_epoch,
            "pretrained": self.pretrained,
            "selection": f"best validation {self.metric}",
            # Only when used: runs and checkpoints of the paper's recipe keep the recipe they were written with.
            **({"neutral_dropout": self.neutral_dropout} if self.neutral_dropout else {}),
        }

    def layout(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "summary": str(self.run_dir / SUMMARY_NAME),
            "skipped_images": str(self.run_dir / SKIPPED_NAME),
            "seeds": {
                f"seed{s}": {
                    "metrics": str(self.seed_dir(s) / LOG_NAME),
                    "resume_state": str(self.seed_dir(s) / LAST_NAME),
                    "best": str(self.seed_dir(s) / BEST_NAME),
                }
                for s in self.seeds
            },
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "paper": self.paper,
            "model": self.model.to_dict(),
            "loss": {**self.loss.to_dict(), "describe": self.loss.describe},
            "recipe": self.recipe(),
            "dataset": {
                "name": self.dataset,
                "data_root": str(self.data_root),
                "present": self.data_root.is_dir(),
                "labels": list(self.model.labels),
                "multi_label": self.model.multi_label,
                "metric": self.metric,
                "annotations": str(self.annotations) if self.annotations else None,
                "boxes": str(self.boxes) if self.boxes else None,
                "val_fraction": self.val_fraction,
                "selection_split": "val",
                "unreadable_images": "error" if self.strict else "skipped and listed",
                "evaluate_test": self.evaluate_test,
            },
            "seeds": list(self.seeds),
            "runtime": {
                "device": self.device or "auto",
                "workers": self.workers,
                "amp": self.amp,
                "eval_batch_size": self.eval_batch_size,
                "distributed": "torchrun --nproc_per_node N -m sibnet.train ... (batch_size is global)",
            },
            "output": self.layout(),
        }


def _slug(text: str) -> str:
    text = text.replace("*", "star").replace("+", "-")
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def default_run_name(dataset: str, model: str, loss: LossConfig, canonical: LossConfig) -> str:
    """``<dataset>-<model>``, plus a loss tag when the loss is not the model's usual one (the three
    'baseline+B' rows share ``concat_bcm``)."""
    name = f"{dataset}-{model}"
    if loss != canonical:
        tag = loss.fused if loss.bcm is None else f"{loss.fused}-{loss.bcm}-{loss.bcm_loss}"
        if loss.bcm_weight != canonical.bcm_weight:
            tag += f"-w{loss.bcm_weight:g}"
        name += "-" + _slug(tag)
    return name


def paper_numbers(variant: str, model: str) -> dict[str, float | None]:
    """The paper's EMOTIC mAP and CAER-S accuracy (%) for a Table-2 label or Table-1 model, None if absent."""
    emotic = TABLE2[variant].emotic_map if variant in TABLE2 else None
    caer = None
    for t1_model, _loss, t1_emotic, t1_caer in TABLE1.values():
        if t1_model == model and (variant not in TABLE2 or TABLE2[variant].loss == _loss):
            emotic = t1_emotic if emotic is None else emotic
            caer = t1_caer
    return {"emotic_map": emotic, "caer_osa": caer}
