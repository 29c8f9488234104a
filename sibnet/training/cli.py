"""``python -m sibnet.train``: the command line of :mod:`sibnet.training` (flags → :class:`TrainConfig` → run)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from sibnet.data.registry import get_dataset, list_datasets
from sibnet.distributed import resolve_device
from sibnet.errors import USER_ERRORS, error_message
from sibnet.models.registry import build_model, model_config, resolve_variant
from sibnet.training.config import (
    DEFAULT_SEEDS,
    LR_BACKBONE,
    LR_GAMMA,
    LR_MILESTONES,
    LR_MODULES,
    TrainConfig,
    default_run_name,
    paper_numbers,
)
from sibnet.training.optim import parameter_groups
from sibnet.training.trainer import train


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sibnet.train",
        description="Train a SIB-Net variant (paper Table 1/2) with the recipe of §4.2. Defaults are the paper's; "
        "every value can be overridden. Launch with torchrun for several GPUs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("what to train")
    g.add_argument("--dataset", required=True, choices=list_datasets())
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
    g.add_argument(
        "--val-fraction",
        type=float,
        default=None,
        help="CAER-S: share of train/ held out as val (default 0.1)",
    )
    g.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=list(DEFAULT_SEEDS),
        help="one run per seed, mean ± std reported (default 0 1 2, §4.2's three; --seeds 0 for one)",
    )

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
    g.add_argument(
        "--neutral-dropout",
        type=float,
        default=0.0,
        metavar="P",
        help="make each branch of each training item the neutral (blank) input with probability P; "
        "not in the paper (default 0); teaches the model that a blank region is no evidence, which the "
        "demo's branch attributions assume (sibnet.attribution)",
    )
    g.add_argument("--max-steps-per-epoch", type=int, default=None, help="cap (quick runs and tests)")
    g.add_argument(
        "--no-pretrained", action="store_true", help="random trunks instead of ImageNet ResNet-18 weights"
    )

    g = p.add_argument_group("model overrides")
    g.add_argument("--input-size", type=int, default=None, help="crop side (default 224)")
    g.add_argument("--resize", type=int, default=None, help="resize side before cropping (default 230)")
    g.add_argument("--layer4-stride", type=int, choices=(1, 2), default=None, help="default: the model's (2)")
    g.add_argument(
        "--icm-expansion", type=int, default=None, help="ICM inner width dC = d x C (default: the model's, 2)"
    )
    g.add_argument(
        "--icm-bn-init",
        type=float,
        default=None,
        help="initial γ of ICM's output BatchNorm (default 1, the authors' released code; 0: Non-local style)",
    )

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
        "--strict",
        action="store_true",
        help="fail on the first unreadable image (default: skip it, count it, list it in the run folder)",
    )
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
    spec = get_dataset(args.dataset)
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

    overrides: dict[str, Any] = {"labels": spec.labels, "multi_label": spec.multi_label}
    for key, value in (
        ("input_size", args.input_size),
        ("resize", args.resize),
        ("layer4_stride", args.layer4_stride),
        ("icm_expansion", args.icm_expansion),
        ("icm_bn_init", args.icm_bn_init),
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
    batch = args.batch_size or spec.batch_size
    epochs = args.epochs or spec.epochs
    for name, value in (("--batch-size", batch), ("--epochs", epochs)):
        if value < 1:
            raise ValueError(f"{name} must be positive, got {value}")
    if args.max_steps_per_epoch is not None and args.max_steps_per_epoch < 1:
        raise ValueError("--max-steps-per-epoch must be positive")
    if not 0.0 <= args.neutral_dropout < 1.0:
        raise ValueError(f"--neutral-dropout is a probability in [0, 1), got {args.neutral_dropout}")
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
        neutral_dropout=args.neutral_dropout,
        max_steps_per_epoch=args.max_steps_per_epoch,
        seeds=tuple(args.seeds),
        device=args.device,
        workers=args.workers,
        amp=args.amp,
        annotations=args.annotations,
        boxes=args.boxes,
        val_fraction=args.val_fraction,
        strict=args.strict,
        evaluate_test=not args.no_test,
        resume=args.resume,
        overwrite=args.overwrite,
        write_digests=args.write_digests,
        progress=not args.no_progress,
    )


def dry_run_report(cfg: TrainConfig) -> dict[str, Any]:
    """The resolved configuration plus parameter counts (the model is built on the CPU, untrained)."""
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = resolve_config(args)
        if args.dry_run:
            print(json.dumps(dry_run_report(cfg), indent=2))
            return 0
        resolve_device(cfg.device)
        train(cfg)
    except (*USER_ERRORS, ValueError) as err:
        if os.environ.get("SIBNET_DEBUG"):
            raise  # the full traceback, for bug reports
        print(f"error: {error_message(err)}", file=sys.stderr)
        return 2
    return 0
