"""Train any row of the paper's Tables 1 and 2 with the recipe of §4.2, on one device or many (``torchrun``).

::

    python -m sibnet.train --dataset emotic --data-root data/emotic --variant 'baseline+S (GRU)' --out runs
    python -m sibnet.train --dataset caer --data-root data/caer --model sibnet --seeds 0 1 2 --out runs
    torchrun --nproc_per_node 4 -m sibnet.train --dataset emotic --data-root data/emotic --model sibnet --out runs
    python -m sibnet.train --dataset emotic --data-root anywhere --model sibnet --dry-run   # needs no data

Recipe (§4.2; every value a flag): Adam; lr 1e-4 for the backbone parameters (the three ResNet-18 trunks,
``model.branches``) and 1e-3 for everything else (SCM, ICM, fusion and classifiers); both multiplied by 0.1 at
50 %, 75 % and 87.5 % of the training, counted in optimizer steps so that "7.5 of 10 epochs" is exact;
batch 32 for 10 epochs on EMOTIC, 64 for 20 epochs on CAER-S; the loss of the variant's Table-2 row (BCE on
the fused score, plus BCM 1:1 for the rows with B); ImageNet-pretrained trunks. The paper averages three runs:
``--seeds 0 1 2`` trains one per seed and reports mean ± std.

Model selection uses the validation split only (EMOTIC ``val``; CAER-S ``val`` carved from ``train/``). The
authors' released code selected the checkpoint with the best *test* score, which overstates test results; we
never look at test until the selected checkpoint is final.

Output layout::

    <out>/<run-name>/
        summary.json                 per-seed selected epoch, val and test metric; mean ± std over seeds
        seed<k>/
            metrics.jsonl            one JSON object per finished epoch: epoch, step, lrs (per group, first
                                     and last step), train losses, val metric and loss, best so far,
                                     seconds, triples/s
            last.pt                  resume state: model, optimizer, scheduler, scaler, epoch, step,
                                     best-so-far, RNG states, epoch history (torch.save of tensors and
                                     plain containers only; read with torch.load(weights_only=True))
            best/                    the selected checkpoint (sibnet.load_model): config.json +
                                     model.safetensors, training metadata under config.json["training"]
            digest-rank<r>.json      only with --write-digests: hashes of each rank's final weights

A run resumes from ``last.pt`` automatically (or with ``--resume``, which insists on one): a killed run
continues after its last finished epoch, bit-for-bit on CPU. ``last.pt`` is written after every epoch
(atomically) and the log is rewritten from the history it holds, so the log never shows an epoch twice.
Multi-process runs need the output folder on a filesystem every rank can read (resume reads it everywhere).
"""

from __future__ import annotations

import argparse
import bisect
import functools
import hashlib
import json
import math
import os
import random
import re
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.auto import tqdm

from sibnet.config import ModelConfig
from sibnet.distributed import (
    DistContext,
    all_reduce_sum,
    amp_dtype,
    autocast,
    barrier,
    broadcast_buffers,
    broadcast_object,
    init_distributed,
    resolve_device,
    shutdown,
    unwrap,
)
from sibnet.evaluate import (
    DATASETS,
    check_labels,
    error_message,
    eval_loader,
    evaluate_model,
    open_dataset,
    predict,
    user_errors,
)
from sibnet.labels import LABEL_SETS, MULTI_LABEL
from sibnet.losses import ContextLoss, LossConfig
from sibnet.metrics import PRIMARY_METRIC, compute_metrics

STATE_FORMAT = "sibnet-train-state"
STATE_VERSION = 1
LAST_NAME = "last.pt"
BEST_NAME = "best"
LOG_NAME = "metrics.jsonl"
SUMMARY_NAME = "summary.json"


@dataclass(frozen=True)
class DatasetRecipe:
    """The per-dataset part of §4.2's recipe."""

    batch_size: int
    epochs: int


# §4.2: "a batch size of 32 for EMOTIC and a batch size of 64 for CAER-S ... 10 epochs for EMOTIC and 20
# epochs for CAER-S".
DATASET_RECIPES: dict[str, DatasetRecipe] = {
    "emotic": DatasetRecipe(batch_size=32, epochs=10),
    "caer": DatasetRecipe(batch_size=64, epochs=20),
}
LR_BACKBONE = 1e-4  # §4.2: "the backbone's parameters ... 0.0001"
LR_MODULES = 1e-3  # §4.2: "the classifier's and the modules' parameters ... 0.001"
LR_MILESTONES: tuple[float, ...] = (0.5, 0.75, 0.875)  # §4.2: "× 0.1 at the 0.5, 0.75 and 0.875 phase"
LR_GAMMA = 0.1


class TrainingError(RuntimeError):
    """A run cannot proceed (diverged loss, incompatible resume state, too small a split)."""


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
    max_steps_per_epoch: int | None = None
    seeds: tuple[int, ...] = (0,)
    device: str | None = None
    workers: int = 4
    amp: str = "auto"
    annotations: Path | None = None
    boxes: Path | None = None
    val_fraction: float = 0.1
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
    def metric(self) -> str:
        return PRIMARY_METRIC[self.model.multi_label]

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
        }

    def layout(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "summary": str(self.run_dir / SUMMARY_NAME),
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
                "val_fraction": self.val_fraction if self.dataset == "caer" else None,
                "selection_split": "val",
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
    from sibnet.models.registry import TABLE1, TABLE2

    emotic = TABLE2[variant].emotic_map if variant in TABLE2 else None
    caer = None
    for t1_model, _loss, t1_emotic, t1_caer in TABLE1.values():
        if t1_model == model and (variant not in TABLE2 or TABLE2[variant].loss == _loss):
            emotic = t1_emotic if emotic is None else emotic
            caer = t1_caer
    return {"emotic_map": emotic, "caer_osa": caer}


# ----------------------------------------------------------------------------------------------------------
# Command line → TrainConfig


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sibnet.train",
        description="Train a SIB-Net variant (paper Table 1/2) with the recipe of §4.2. Defaults are the paper's; "
        "every value can be overridden. Launch with torchrun for several GPUs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("what to train")
    g.add_argument("--dataset", required=True, choices=DATASETS)
    g.add_argument("--data-root", required=True, type=Path, help="dataset folder")
    which = g.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--model", help="registered model name (sibnet.list_models()); loss of its Table-2 row"
    )
    which.add_argument("--variant", help="Table-2 row label, e.g. 'baseline+S (GRU)' (spacing/case ignored)")
    g.add_argument("--annotations", type=Path, default=None, help="EMOTIC annotation file/folder")
    g.add_argument(
        "--boxes", type=Path, default=None, help="box cache (default <data-root>/sibnet_boxes_*.jsonl)"
    )
    g.add_argument("--val-fraction", type=float, default=0.1, help="CAER-S: share of train/ held out as val")
    g.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed; mean ± std reported")

    g = p.add_argument_group("recipe (defaults: paper §4.2)")
    g.add_argument("--epochs", type=int, default=None, help="default: 10 (EMOTIC), 20 (CAER-S)")
    g.add_argument(
        "--batch-size", type=int, default=None, help="global batch; default: 32 (EMOTIC), 64 (CAER-S)"
    )
    g.add_argument("--eval-batch-size", type=int, default=None, help="default: the training batch size")
    g.add_argument("--lr-backbone", type=float, default=LR_BACKBONE, help="Adam lr of the ResNet trunks")
    g.add_argument("--lr-modules", type=float, default=LR_MODULES, help="Adam lr of SCM/ICM/heads")
    g.add_argument(
        "--lr-milestones", type=float, nargs="*", default=list(LR_MILESTONES), help="fractions of training"
    )
    g.add_argument("--lr-gamma", type=float, default=LR_GAMMA)
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument("--max-steps-per-epoch", type=int, default=None, help="cap (quick runs and tests)")
    g.add_argument(
        "--no-pretrained", action="store_true", help="random trunks instead of ImageNet ResNet-18 weights"
    )

    g = p.add_argument_group("model overrides")
    g.add_argument("--input-size", type=int, default=None, help="crop side (default 224)")
    g.add_argument("--resize", type=int, default=None, help="resize side before cropping (default 230)")
    g.add_argument("--layer4-stride", type=int, choices=(1, 2), default=None, help="default: the model's (2)")

    g = p.add_argument_group("loss overrides (default: the variant's Table-2 row)")
    g.add_argument("--fused-loss", choices=("bce", "ce"), default=None)
    g.add_argument("--bcm", choices=("ldl*", "ldl", "none"), default=None)
    g.add_argument("--bcm-loss", choices=("l1", "bce"), default=None)
    g.add_argument("--bcm-weight", type=float, default=None)

    g = p.add_argument_group("run")
    g.add_argument("--out", type=Path, default=Path("runs"), help="output root")
    g.add_argument("--run-name", default=None, help="default: <dataset>-<model>[-<loss>]")
    g.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    g.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="DataLoader workers")
    g.add_argument(
        "--amp", default="auto", choices=("auto", "bf16", "fp16", "off"), help="auto: bf16/fp16 on CUDA"
    )
    g.add_argument(
        "--resume", action="store_true", help="require a resume state (resuming is automatic anyway)"
    )
    g.add_argument("--overwrite", action="store_true", help="discard existing seed folders and start over")
    g.add_argument("--no-test", action="store_true", help="do not score the selected checkpoint on test")
    g.add_argument(
        "--write-digests",
        action="store_true",
        help="every rank writes seed<k>/digest-rank<r>.json (SHA-256 of its final weights; DDP checks)",
    )
    g.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    g.add_argument("--dry-run", action="store_true", help="print the resolved configuration as JSON and exit")
    return p


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Turn parsed flags into a :class:`TrainConfig` (needs no data on disk).

    Raises:
        ValueError: an unknown variant or an inconsistent combination (the message says which).
    """
    from sibnet.models.registry import model_config, resolve_variant

    row = resolve_variant(args.model or args.variant)
    canonical = resolve_variant(row.model).loss
    loss = row.loss
    loss_changes: dict[str, Any] = {}
    if args.fused_loss is not None:
        loss_changes["fused"] = args.fused_loss
    if args.bcm is not None:
        loss_changes["bcm"] = None if args.bcm == "none" else args.bcm
    if args.bcm_loss is not None:
        loss_changes["bcm_loss"] = args.bcm_loss
    if args.bcm_weight is not None:
        loss_changes["bcm_weight"] = args.bcm_weight
    loss = replace(loss, **loss_changes)

    overrides: dict[str, Any] = {
        "labels": LABEL_SETS[args.dataset],
        "multi_label": MULTI_LABEL[args.dataset],
    }
    for key, value in (
        ("input_size", args.input_size),
        ("resize", args.resize),
        ("layer4_stride", args.layer4_stride),
    ):
        if value is not None:
            overrides[key] = value
    if args.input_size is not None and args.resize is None:
        # Keep §4.2's 230/224 margin for a smaller crop (e.g. 64 → 66) rather than resizing to 230.
        overrides["resize"] = args.input_size + max(round(args.input_size * 6 / 224), 1)
    cfg = model_config(row.model, **overrides)
    if loss.bcm is not None and not cfg.branch_heads:
        raise ValueError(
            f"BCM ({loss.describe}) needs per-branch classifiers, which {row.model!r} lacks; "
            "pick a model with branch heads (concat_bcm, concat_scm_gru_bcm, sibnet) or --bcm none"
        )
    recipe = DATASET_RECIPES[args.dataset]
    batch = args.batch_size or recipe.batch_size
    epochs = args.epochs or recipe.epochs
    for name, value in (("--batch-size", batch), ("--epochs", epochs)):
        if value < 1:
            raise ValueError(f"{name} must be positive, got {value}")
    if args.max_steps_per_epoch is not None and args.max_steps_per_epoch < 1:
        raise ValueError("--max-steps-per-epoch must be positive")
    if any(not 0 < m < 1 for m in args.lr_milestones):
        raise ValueError(f"--lr-milestones are fractions of the training in (0, 1), got {args.lr_milestones}")
    if len(set(args.seeds)) != len(args.seeds):
        raise ValueError(f"--seeds must be distinct, got {args.seeds}")
    if args.workers < 0:
        raise ValueError("--workers must be >= 0")
    return TrainConfig(
        dataset=args.dataset,
        data_root=args.data_root,
        out=args.out,
        run_name=args.run_name or default_run_name(args.dataset, row.model, loss, canonical),
        variant=row.label,
        model=cfg,
        loss=loss,
        paper=paper_numbers(row.label, row.model),
        pretrained=not args.no_pretrained,
        epochs=epochs,
        batch_size=batch,
        eval_batch_size=args.eval_batch_size or batch,
        lr_backbone=args.lr_backbone,
        lr_modules=args.lr_modules,
        lr_milestones=tuple(sorted(args.lr_milestones)),
        lr_gamma=args.lr_gamma,
        weight_decay=args.weight_decay,
        max_steps_per_epoch=args.max_steps_per_epoch,
        seeds=tuple(args.seeds),
        device=args.device,
        workers=args.workers,
        amp=args.amp,
        annotations=args.annotations,
        boxes=args.boxes,
        val_fraction=args.val_fraction,
        evaluate_test=not args.no_test,
        resume=args.resume,
        overwrite=args.overwrite,
        write_digests=args.write_digests,
        progress=not args.no_progress,
    )


def dry_run_report(cfg: TrainConfig) -> dict[str, Any]:
    """The resolved configuration plus parameter counts (the model is built on the CPU, untrained)."""
    from sibnet.models.registry import build_model

    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = build_model(cfg.model, pretrained=False)
    backbone, modules = parameter_groups(model)
    return {
        **cfg.to_dict(),
        "parameters": {
            "backbone": sum(p.numel() for p in backbone),
            "modules_and_heads": sum(p.numel() for p in modules),
        },
    }


# ----------------------------------------------------------------------------------------------------------
# Optimisation


def parameter_groups(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(backbone, rest): the ResNet trunks (``model.branches``) and everything else (SCM, ICM, heads)."""
    model = unwrap(model)
    backbone = list(model.branches.parameters())
    ids = {id(p) for p in backbone}
    return backbone, [p for p in model.parameters() if id(p) not in ids]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Adam:
    """Adam over two parameter groups, ``backbone`` (lr_backbone) and ``modules`` (lr_modules).

    The fused implementation (one kernel over all tensors; 2-4x faster steps on the CPU too, where the 35-53 M
    parameters of the three-trunk models make the step a large share of the time) when the build has it.
    """
    backbone, modules = parameter_groups(model)
    groups = [
        {"params": backbone, "lr": cfg.lr_backbone, "name": "backbone"},
        {"params": modules, "lr": cfg.lr_modules, "name": "modules"},
    ]
    try:
        return torch.optim.Adam(groups, weight_decay=cfg.weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):  # older torch, or a device without fused kernels
        return torch.optim.Adam(groups, weight_decay=cfg.weight_decay)


def milestone_steps(total_steps: int, fractions: Sequence[float]) -> list[int]:
    """Optimizer steps at which the lr drops: round(f × total) (e.g. 7.5 of 10 epochs is a step count)."""
    return sorted(math.floor(f * total_steps + 0.5) for f in fractions)


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, cfg: TrainConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """Step-wise decay: step ``s`` (0-based) runs at ``lr × gamma^(milestones passed)``.

    ``LambdaLR`` rather than ``MultiStepLR`` because its state dict holds only plain numbers (MultiStepLR keeps a
    ``Counter``), so ``last.pt`` loads with ``torch.load(weights_only=True)``.
    """
    steps = milestone_steps(total_steps, cfg.lr_milestones)
    gamma = cfg.lr_gamma
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: gamma ** bisect.bisect_right(steps, s))


def _group_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    return {g.get("name", str(i)): float(g["lr"]) for i, g in enumerate(optimizer.param_groups)}


# ----------------------------------------------------------------------------------------------------------
# Resume state


def _rng_state(bcm_generator: torch.Generator) -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        # numpy's state holds an ndarray; keep it as a tensor so weights_only loading accepts it.
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": random.getstate(),
        "bcm": bcm_generator.get_state(),
    }


def _set_rng_state(state: dict[str, Any], bcm_generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    bcm_generator.set_state(state["bcm"].cpu())


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)  # a kill mid-write leaves the previous last.pt intact


def load_resume_state(path: Path, device: torch.device) -> dict[str, Any]:
    """Read a ``last.pt`` written by this module (tensors and plain containers only).

    Raises:
        TrainingError: not readable with ``weights_only=True`` or not our format.
    """
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:
        raise TrainingError(
            f"cannot read resume state {path} ({type(err).__name__}: {error_message(err)}); delete it or pass --overwrite"
        ) from err
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise TrainingError(f"{path} is not a sibnet training state; delete it or pass --overwrite")
    if state.get("version", 0) > STATE_VERSION:
        raise TrainingError(f"{path} was written by a newer sibnet (state version {state['version']})")
    return state


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix.rstrip('.')}: {b!r} in the state, {a!r} now"]


def state_digest(module: nn.Module) -> dict[str, str]:
    """SHA-256 of the parameters and of the buffers, in state-dict order (DDP replicas must agree)."""
    params, buffers = hashlib.sha256(), hashlib.sha256()
    names = {n for n, _ in module.named_parameters()}
    for name, tensor in module.state_dict().items():
        h = params if name in names else buffers
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return {"parameters": params.hexdigest(), "buffers": buffers.hexdigest()}


# ----------------------------------------------------------------------------------------------------------
# One seed


@dataclass
class SeedResult:
    """What one seed's run ended with (a row of summary.json)."""

    seed: int
    best_epoch: int
    val: float
    test: float | None
    epochs_done: int
    best_dir: str
    test_report: dict[str, Any] | None = field(default=None, repr=False)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Trains one seed of a :class:`TrainConfig`: data, model, optimiser, epochs, selection, resume."""

    def __init__(self, cfg: TrainConfig, seed: int, ctx: DistContext) -> None:
        self.cfg = cfg
        self.seed = seed
        self.ctx = ctx
        self.dir = cfg.seed_dir(seed)
        self.amp = amp_dtype(ctx.device, cfg.amp)
        self.history: list[dict[str, Any]] = []
        self.best_value = -math.inf
        self.best_epoch = 0
        self.epoch = 0  # finished epochs
        self.step = 0  # optimizer steps taken

    # -- set-up --------------------------------------------------------------------------------------------
    def _open(self, split: str, train: bool) -> Dataset:
        c = self.cfg
        ds = open_dataset(
            c.dataset,
            c.data_root,
            split,
            size=c.model.input_size,
            resize=c.model.resize,
            train=train,
            seed=self.seed,
            annotations=c.annotations,
            boxes=c.boxes,
            val_fraction=c.val_fraction,
        )
        check_labels(c.model.labels, ds.labels, where=f"model {c.model.name!r}")
        return ds

    def setup(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        if cfg.batch_size % ctx.world_size:
            raise ValueError(f"--batch-size {cfg.batch_size} does not split over {ctx.world_size} processes")
        self.train_set = self._open("train", train=True)
        self.val_set = self._open("val", train=False)
        self.test_set: Dataset | None = None
        self.test_skipped: str | None = None
        if cfg.evaluate_test:
            try:
                self.test_set = self._open("test", train=False)
            except user_errors() as err:  # a dataset without a test split still trains
                self.test_skipped = error_message(err)
                self._print(f"note: no test evaluation ({self.test_skipped})")
        per_rank = cfg.batch_size // ctx.world_size
        # The same (seed, epoch) shuffle on every rank, each rank taking its own slice; a single process is
        # the world-size-1 case, so the data order never depends on the launch mode's RNG use.
        self.sampler = DistributedSampler(
            self.train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=self.seed
        )
        self.train_loader = DataLoader(
            self.train_set,
            batch_size=per_rank,
            sampler=self.sampler,
            num_workers=cfg.workers,
            pin_memory=ctx.device.type == "cuda",
            drop_last=True,  # a last batch of one would break BatchNorm statistics
        )
        self.steps_per_epoch = len(self.train_loader)
        if cfg.max_steps_per_epoch is not None:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.max_steps_per_epoch)
        if self.steps_per_epoch < 1:
            raise TrainingError(
                f"the train split has {len(self.train_set)} items, fewer than one batch of {cfg.batch_size}; "
                "lower --batch-size"
            )
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.val_loader = eval_loader(self.val_set, cfg.eval_batch_size, cfg.workers, ctx)

        _seed_everything(self.seed)
        self.model = self._build_model().to(ctx.device)
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, self.total_steps, cfg)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == torch.float16 else None
        self.loss_fn = ContextLoss(cfg.loss)
        # BCM's distribution labels are drawn from their own generator, per rank, saved in last.pt.
        self.bcm_generator = torch.Generator().manual_seed(
            int(np.random.SeedSequence([self.seed, ctx.rank, 0xBC]).generate_state(1)[0])
        )
        net = self.model
        if ctx.enabled:
            # Branch heads that no loss term uses (a BCM model trained with --bcm none) get no gradient.
            unused = cfg.model.branch_heads and cfg.loss.bcm is None
            net = DistributedDataParallel(
                self.model,
                device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
                find_unused_parameters=unused,
            )
        self.net = net
        self.fingerprint = json.dumps(
            {
                "variant": cfg.variant,
                "model": cfg.model.to_dict(),
                "loss": cfg.loss.to_dict(),
                "dataset": cfg.dataset,
                "recipe": cfg.recipe(),
                "seed": self.seed,
                "steps_per_epoch": self.steps_per_epoch,
            },
            sort_keys=True,
        )

    def _build_model(self) -> nn.Module:
        from sibnet.models.registry import build_model

        # Only rank 0 fetches ImageNet weights; DDP copies rank 0's parameters to the others when it wraps the
        # model. The outcome is broadcast so a failure stops every rank instead of leaving them waiting.
        error, model = None, None
        if self.ctx.is_main:
            try:
                model = build_model(self.cfg.model, pretrained=self.cfg.pretrained)
            except user_errors() as err:
                error = error_message(err)
        error = broadcast_object(self.ctx, error)
        if error is not None:
            raise TrainingError(error)
        return model if model is not None else build_model(self.cfg.model, pretrained=False)

    def _print(self, text: str) -> None:
        if self.ctx.is_main:
            print(text, flush=True)

    # -- resume -------------------------------------------------------------------------------------------
    def maybe_resume(self) -> None:
        last = self.dir / LAST_NAME
        if self.cfg.overwrite:
            if self.ctx.is_main and self.dir.exists():
                shutil.rmtree(self.dir)
            barrier(self.ctx)
        elif last.is_file():
            self._resume(last)
        elif self.cfg.resume:
            raise TrainingError(f"--resume: no resume state at {last}")
        if self.ctx.is_main:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._write_log()
        barrier(self.ctx)

    def _resume(self, path: Path) -> None:
        state = load_resume_state(path, self.ctx.device)
        differences = _diff(json.loads(self.fingerprint), json.loads(state["fingerprint"]))
        if differences:
            raise TrainingError(
                f"{path} belongs to a run with another configuration ({'; '.join(differences[:4])}); use another "
                "--out/--run-name, or --overwrite to start over"
            )
        unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.best_value, self.best_epoch = float(state["best_value"]), int(state["best_epoch"])
        self.history = [json.loads(line) for line in state["history"]]
        rng = state["rng"][self.ctx.rank] if self.ctx.rank < len(state["rng"]) else state["rng"][0]
        _set_rng_state(rng, self.bcm_generator)
        self._print(f"resumed {path}: {self.epoch}/{self.cfg.epochs} epochs done, best {self._best_text()}")

    def _save_state(self) -> None:
        # Every rank's RNG state goes into the file (gathered to rank 0) so each resumes its own stream.
        rngs = [_rng_state(self.bcm_generator)]
        if self.ctx.enabled:
            gathered: list[Any] = [None] * self.ctx.world_size
            torch.distributed.all_gather_object(gathered, rngs[0])
            rngs = gathered
        if not self.ctx.is_main:
            return
        state = {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "fingerprint": self.fingerprint,
            "epoch": self.epoch,
            "step": self.step,
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "history": [json.dumps(r) for r in self.history],
            "rng": rngs,
        }
        _atomic_torch_save(state, self.dir / LAST_NAME)

    def _write_log(self) -> None:
        """Rewrite metrics.jsonl from the history (the resume state is the source of truth)."""
        path = self.dir / LOG_NAME
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in self.history))
        os.replace(tmp, path)

    # -- epochs -------------------------------------------------------------------------------------------
    def _best_text(self) -> str:
        if self.best_epoch == 0:
            return "none yet"
        return f"val {self.cfg.metric} {100 * self.best_value:.2f}% at epoch {self.best_epoch}"

    def train_one_epoch(self, epoch: int) -> dict[str, Any]:
        """One pass (at most ``steps_per_epoch`` steps) over the training split; returns the epoch's losses."""
        cfg, ctx = self.cfg, self.ctx
        self.net.train()
        self.sampler.set_epoch(epoch)
        if hasattr(self.train_set, "set_epoch"):
            self.train_set.set_epoch(epoch)  # reproducible random crops (same on every rank and worker)
        lrs_start = lrs_last = _group_lrs(self.optimizer)
        sums = [0.0, 0.0, 0.0, 0.0]  # total, fused, branch (each × batch), samples
        bar = tqdm(
            total=self.steps_per_epoch,
            desc=f"seed {self.seed} epoch {epoch}/{cfg.epochs}",
            disable=not (cfg.progress and ctx.is_main),
            leave=False,
        )
        started = time.perf_counter()
        for i, batch in enumerate(self.train_loader):
            if i >= self.steps_per_epoch:
                break
            inputs = [batch[k].to(ctx.device, non_blocking=True) for k in ("face", "body", "scene")]
            target = batch["target"].to(ctx.device, non_blocking=True)
            with autocast(ctx.device, self.amp):  # bf16 (or fp16 + GradScaler) on CUDA, fp32 on CPU
                out = self.net(*inputs)
            losses = self.loss_fn(out.logits, target, out.branch_logits, generator=self.bcm_generator)
            if not torch.isfinite(losses.total):
                raise TrainingError(
                    f"loss became {losses.total.item()} at epoch {epoch}, step {i + 1}; lower the learning rates "
                    f"(the run resumes from epoch {self.epoch} once fixed)"
                )
            self.optimizer.zero_grad(set_to_none=True)
            lrs_last = _group_lrs(self.optimizer)  # the lr this step runs at
            if self.scaler is not None:
                self.scaler.scale(losses.total).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                losses.total.backward()
                self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            n = target.shape[0]
            sums[0] += losses.total.item() * n
            sums[1] += losses.fused.item() * n
            sums[2] += losses.branch.item() * n
            sums[3] += n
            bar.update(1)
            bar.set_postfix(loss=f"{sums[0] / sums[3]:.4f}")
        bar.close()
        seconds = time.perf_counter() - started
        total, fused, branch, samples = all_reduce_sum(ctx, sums)
        return {
            # [lr of the epoch's first step, lr of its last step], per parameter group
            "lrs": {k: [lrs_start[k], lrs_last[k]] for k in lrs_start},
            "train": {"loss": total / samples, "fused": fused / samples, "branch": branch / samples},
            "samples": int(samples),
            "train_seconds": seconds,
        }

    def validate(self) -> dict[str, Any]:
        """The validation metric (and fused loss) of the current weights, scores gathered over all ranks."""
        model = unwrap(self.model)
        broadcast_buffers(self.ctx, model)  # rank 0's BatchNorm statistics everywhere (see distributed.py)
        preds = predict(
            model, self.val_loader, ctx=self.ctx, amp=self.amp, progress=self.cfg.progress, desc="val"
        )
        report = compute_metrics(
            preds.targets, preds.logits, list(self.val_set.labels), self.cfg.model.multi_label
        )
        logits, targets = torch.from_numpy(preds.logits), torch.from_numpy(preds.targets)
        if self.cfg.loss.fused == "bce":
            loss = F.binary_cross_entropy_with_logits(logits, targets)
        else:
            loss = F.cross_entropy(logits, targets.argmax(dim=1))
        return {"metric": report.metric, "value": report.value, "loss": float(loss), "n": report.num_samples}

    def _training_metadata(self, epoch: int, val: dict[str, Any]) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "variant": cfg.variant,
            "loss": cfg.loss.to_dict(),
            "dataset": cfg.dataset,
            "epoch": epoch,
            "epochs": cfg.epochs,
            "val_metric": {"name": val["metric"], "value": val["value"], "split": "val"},
            "seed": self.seed,
            "recipe": {
                **cfg.recipe(),
                "steps_per_epoch": self.steps_per_epoch,
                "world_size": self.ctx.world_size,
            },
            "paper": cfg.paper,
        }

    def fit(self) -> SeedResult:
        cfg = self.cfg
        self.setup()
        self.maybe_resume()
        best_dir = self.dir / BEST_NAME
        if self.epoch >= cfg.epochs:
            self._print(f"seed {self.seed}: all {cfg.epochs} epochs done already; best {self._best_text()}")
        for epoch in range(self.epoch + 1, cfg.epochs + 1):
            started = time.perf_counter()
            record = self.train_one_epoch(epoch)
            val_started = time.perf_counter()
            val = self.validate()
            val_seconds = time.perf_counter() - val_started
            # Selection on the validation split only. (The authors' released code kept the epoch with the
            # best *test* score; test is scored here once, after training, on the selected checkpoint.)
            is_best = val["value"] > self.best_value
            if is_best:
                self.best_value, self.best_epoch = val["value"], epoch
                if self.ctx.is_main:
                    unwrap(self.model).save_pretrained(best_dir, training=self._training_metadata(epoch, val))
            self.epoch = epoch
            seconds = time.perf_counter() - started
            self.history.append(
                {
                    "epoch": epoch,
                    "step": self.step,
                    "lrs": record["lrs"],
                    "train": record["train"],
                    "val": val,
                    "is_best": is_best,
                    "best": {"epoch": self.best_epoch, "value": self.best_value},
                    "seconds": {"train": record["train_seconds"], "val": val_seconds, "epoch": seconds},
                    "triples_per_s": record["samples"] / max(record["train_seconds"], 1e-9),
                    "samples": record["samples"],
                }
            )
            self._save_state()  # first the state, then the log rewritten from it
            if self.ctx.is_main:
                self._write_log()
            self._print(
                f"seed {self.seed} epoch {epoch}/{cfg.epochs}: loss {record['train']['loss']:.4f}, val "
                f"{val['metric']} {100 * val['value']:.2f}%{' (best)' if is_best else ''}, "
                f"{self.history[-1]['triples_per_s']:.1f} triples/s, {seconds:.1f} s"
            )
        if cfg.write_digests:
            broadcast_buffers(self.ctx, unwrap(self.model))
            digest = {
                "rank": self.ctx.rank,
                "world_size": self.ctx.world_size,
                **state_digest(unwrap(self.model)),
            }
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / f"digest-rank{self.ctx.rank}.json").write_text(json.dumps(digest) + "\n")
        barrier(self.ctx)
        test_value, test_report = None, None
        if self.test_set is not None:
            if not (best_dir / "model.safetensors").is_file():
                raise TrainingError(f"no selected checkpoint at {best_dir}; the run folder is incomplete")
            from sibnet.checkpoints import load_model

            best = load_model(best_dir, device=self.ctx.device)
            report = evaluate_model(
                best,
                self.test_set,
                batch_size=cfg.eval_batch_size,
                workers=cfg.workers,
                ctx=self.ctx,
                amp=self.amp,
                progress=cfg.progress,
                desc="test",
            )
            test_value, test_report = report.value, report.to_dict()
            self._print(
                f"seed {self.seed}: selected epoch {self.best_epoch} (val {100 * self.best_value:.2f}%), "
                f"test {report.metric} {100 * report.value:.2f}%"
            )
        return SeedResult(
            seed=self.seed,
            best_epoch=self.best_epoch,
            val=self.best_value,
            test=test_value,
            epochs_done=self.epoch,
            best_dir=str(best_dir),
            test_report=test_report,
        )


# ----------------------------------------------------------------------------------------------------------
# Several seeds → summary


def _mean_std(values: Sequence[float]) -> dict[str, float | int]:
    # Sample standard deviation (n - 1), 0 for a single run.
    return {
        "mean": float(statistics.fmean(values)),
        "std": float(statistics.stdev(values)) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def summarize(cfg: TrainConfig, results: Sequence[SeedResult]) -> dict[str, Any]:
    tests = [r.test for r in results if r.test is not None]
    return {
        "run": cfg.run_name,
        "variant": cfg.variant,
        "model": cfg.model.name,
        "dataset": cfg.dataset,
        "metric": cfg.metric,
        "selection": "best validation epoch per seed (test never used for selection)",
        "paper": cfg.paper,
        "loss": cfg.loss.to_dict(),
        "recipe": cfg.recipe(),
        "seeds": [
            {
                "seed": r.seed,
                "best_epoch": r.best_epoch,
                "val": r.val,
                "test": r.test,
                "epochs_done": r.epochs_done,
                "best": r.best_dir,
                "test_report": r.test_report,
            }
            for r in results
        ],
        "val": _mean_std([r.val for r in results]),
        "test": _mean_std(tests) if len(tests) == len(results) and tests else None,
    }


def format_summary(summary: dict[str, Any]) -> str:
    metric = summary["metric"]
    lines = [
        f"{summary['run']}: {summary['variant']} on {summary['dataset']} ({metric}, %)",
        f"{'seed':>6}  {'epoch':>5}  {'val':>7}  {'test':>7}",
    ]
    for r in summary["seeds"]:
        test = f"{100 * r['test']:7.2f}" if r["test"] is not None else "      -"
        lines.append(f"{r['seed']:>6}  {r['best_epoch']:>5}  {100 * r['val']:7.2f}  {test}")
    val = summary["val"]
    test = summary["test"]
    test_text = f"{100 * test['mean']:.2f} ± {100 * test['std']:.2f}" if test else "-"
    lines.append(f"{'mean':>6}  {'':>5}  {100 * val['mean']:.2f} ± {100 * val['std']:.2f}  test {test_text}")
    key = "emotic_map" if summary["dataset"] == "emotic" else "caer_osa"
    paper = summary["paper"].get(key)
    if paper is not None:
        lines.append(f"paper (test): {paper:.2f}")
    return "\n".join(lines)


def train(cfg: TrainConfig, ctx: DistContext | None = None) -> dict[str, Any]:
    """Train every seed of ``cfg`` and write ``summary.json``; returns the summary.

    Raises:
        FileNotFoundError, DatasetError, PretrainedWeightsUnavailable, TrainingError, ValueError: see the
        messages; the command line prints them as one ``error:`` line.
    """
    own_ctx = ctx is None
    ctx = ctx or init_distributed(cfg.device)
    try:
        if ctx.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
        results = [Trainer(cfg, seed, ctx).fit() for seed in cfg.seeds]
        summary = summarize(cfg, results)
        if ctx.is_main:
            cfg.run_dir.mkdir(parents=True, exist_ok=True)
            (cfg.run_dir / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n")
            print(format_summary(summary))
            print(f"wrote {cfg.run_dir / SUMMARY_NAME}")
        return summary
    finally:
        if own_ctx:
            shutdown(ctx)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = resolve_config(args)
        if args.dry_run:
            print(json.dumps(dry_run_report(cfg), indent=2))
            return 0
        resolve_device(cfg.device)
        train(cfg)
    except (*user_errors(), TrainingError, ValueError) as err:
        if os.environ.get("SIBNET_DEBUG"):
            raise  # the full traceback, for bug reports
        print(f"error: {error_message(err)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())


# ----------------------------------------------------------------------------------------------------------
# The reproduction table of docs/REPRODUCE.md, generated from the registry

# Training-set sizes used for the time estimates (people for EMOTIC, frames for CAER-S; the splits of the
# datasets' releases, rounded). Validation adds a forward pass over ~1/7 (EMOTIC) or 1/9 (CAER-S) as many.
TRAIN_ITEMS: dict[str, int] = {"emotic": 23_300, "caer": 44_000}
VAL_ITEMS: dict[str, int] = {"emotic": 3_300, "caer": 4_900}
# Effective training throughput assumed for one A100-class GPU with bf16 autocast: ~30 TFLOP/s, what
# ResNet-50 training reaches there (~2,500 img/s x 12.3 GFLOP per image, forward + backward).
GPU_EFFECTIVE_FLOPS = 30e12


@functools.cache
def forward_flops(config: ModelConfig) -> int:
    """FLOPs of one forward pass of one triple (counted on the meta device: no memory, no compute)."""
    from torch.utils.flop_counter import FlopCounterMode

    from sibnet.models.registry import build_model

    with torch.device("meta"):
        model = build_model(config)
        inputs = [torch.empty(1, 3, config.input_size, config.input_size) for _ in range(3)]
    counter = FlopCounterMode(display=False)
    with counter:
        model(*inputs)
    return int(counter.get_total_flops())


def reproduction_rows() -> list[dict[str, Any]]:
    """One entry per number of the paper's Tables 1 and 2: the command that reproduces it and its cost."""
    from sibnet.models.registry import TABLE1, TABLE2, model_config

    common = "--seeds 0 1 2 --out runs"
    rows: list[dict[str, Any]] = []

    def add(table: str, label: str, dataset: str, selector: str, model: str, paper: float) -> None:
        cfg = model_config(model, labels=LABEL_SETS[dataset], multi_label=MULTI_LABEL[dataset])
        recipe = DATASET_RECIPES[dataset]
        fwd = forward_flops(cfg)
        # Training ≈ 3 forward passes (forward + backward); validation once per epoch.
        total = recipe.epochs * (3 * fwd * TRAIN_ITEMS[dataset] + fwd * VAL_ITEMS[dataset])
        rows.append(
            {
                "table": table,
                "label": label,
                "dataset": dataset,
                "model": model,
                "paper": paper,
                "command": f"python -m sibnet.train --dataset {dataset} --data-root data/{dataset} {selector} {common}",
                "gflops_per_triple": fwd / 1e9,
                "gpu_hours_per_seed": total / GPU_EFFECTIVE_FLOPS / 3600,
            }
        )

    for label, row in TABLE2.items():
        add("2", label, "emotic", f"--variant '{label}'", row.model, row.emotic_map)
    for label, (model, loss, emotic, caer) in TABLE1.items():
        same = [r for r in TABLE2.values() if r.model == model and r.loss == loss]
        selector = f"--variant '{same[-1].label}'" if same else f"--model {model}"
        add("1", label, "emotic", selector, model, emotic)
        if caer is not None:
            add("1", label, "caer", f"--model {model}", model, caer)
    return rows


def reproduction_markdown() -> str:
    """The table of docs/REPRODUCE.md (``python -c 'from sibnet.train import reproduction_markdown as m;
    print(m())'``)."""
    lines = [
        "| table | row | dataset | paper | GFLOPs/triple (fwd, 224 px) | est. GPU h per seed | command |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in reproduction_rows():
        metric = "mAP" if r["dataset"] == "emotic" else "OSA"
        lines.append(
            f"| {r['table']} | {r['label']} | {r['dataset']} | {r['paper']:.2f} % {metric} | "
            f"{r['gflops_per_triple']:.1f} | {r['gpu_hours_per_seed']:.2f} | `{r['command']}` |"
        )
    return "\n".join(lines)
