"""Evaluate a checkpoint on a split of EMOTIC (mAP) or CAER-S (overall sample accuracy), paper §4.1.

::

    python -m sibnet.evaluate --checkpoint runs/emotic-sibnet/seed0/best --dataset emotic \\
        --data-root data/emotic --split test --json results/emotic-sibnet-seed0-test.json

The model's own input recipe (``model.config.transform``, from its ``config.json``) builds the evaluation
crops (center crops, §4.2); its label list must equal the dataset's. Metrics: :mod:`sibnet.metrics`. Under ``torchrun`` every
rank scores a shard and the scores are gathered before the metric is computed.

Scores are float32 (``--amp off``, the default): reduced-precision logits tie and bias mAP. People left out
are reported, never silently dropped: images that cannot be decoded (skipped, unless ``--strict``; see
:mod:`sibnet.data.base`) under ``skipped`` with their files, and EMOTIC people without any label (excluded
from the metric, :mod:`sibnet.data.emotic`) under ``unlabeled``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.auto import tqdm

from sibnet.data.base import TripleDataset
from sibnet.data.masking import BRANCHES, InputTransform
from sibnet.data.registry import get_dataset, list_datasets
from sibnet.distributed import DistContext, all_gather_cat, amp_dtype, autocast, init_distributed, shutdown
from sibnet.errors import USER_ERRORS, DatasetError, LabelMismatchError, error_message
from sibnet.metrics import MultiLabelMetrics, SingleLabelMetrics, compute_metrics, format_report


def open_dataset(
    dataset: str,
    data_root: str | Path,
    split: str,
    *,
    transform: InputTransform | None = None,
    train: bool | None = None,
    seed: int = 0,
    boxes: str | Path | None = None,
    **options: Any,
) -> TripleDataset:
    """Open a split of a registered benchmark with a model's input recipe (:meth:`DatasetSpec.open`)."""
    return get_dataset(dataset).open(
        data_root, split, transform=transform, train=train, seed=seed, boxes=boxes, **options
    )


def check_labels(
    model_labels: Sequence[str], dataset_labels: Sequence[str], where: str = "checkpoint"
) -> None:
    """Raise :class:`LabelMismatchError` unless the two label lists are equal, in order."""
    if tuple(model_labels) == tuple(dataset_labels):
        return
    missing = [x for x in dataset_labels if x not in model_labels]
    extra = [x for x in model_labels if x not in dataset_labels]
    detail = (
        f"missing {missing}, extra {extra}"
        if missing or extra
        else "same names in a different order (the logits would be read against the wrong classes)"
    )
    raise LabelMismatchError(
        f"the {where} predicts {len(model_labels)} labels that do not match the dataset's {len(dataset_labels)}: "
        f"{detail}"
    )


@dataclass
class Predictions:
    """Scores of a whole split, one row per dataset item, in item order."""

    logits: np.ndarray  # (N, K) float32
    targets: np.ndarray  # (N, K) float32 multi-hot / one-hot
    indices: np.ndarray  # (N,) dataset item indices of the scored items, ascending
    unreadable: dict[int, str] = field(default_factory=dict)  # item index → decoder error (left out)


def gather_objects(ctx: DistContext, obj: Any) -> list[Any]:
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    torch.distributed.all_gather_object(out, obj)
    return out


def eval_loader(
    dataset: Dataset, batch_size: int, workers: int, ctx: DistContext | None = None
) -> DataLoader:
    """A sequential loader; under ``torchrun`` each rank gets a shard (padded to equal length by
    ``DistributedSampler``; :func:`predict` drops the duplicates by item index)."""
    ctx = ctx or DistContext()
    sampler = (
        DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=False)
        if ctx.enabled
        else None
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        sampler=sampler,
        num_workers=workers,
        pin_memory=ctx.device.type == "cuda",
    )


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: DataLoader,
    *,
    ctx: DistContext | None = None,
    amp: torch.dtype | None = None,
    progress: bool = False,
    desc: str = "eval",
) -> Predictions:
    """Run ``model`` (eval mode) over ``loader`` and gather the logits of every rank.

    Items a skipping dataset could not decode (``"ok": False``) are left out and returned in
    ``Predictions.unreadable``.

    Args:
        model: the network (not the DDP wrapper: every rank runs its own shard, no gradient sync).
        loader: from :func:`eval_loader`.
        ctx: the distributed context (default: one process on the model's device).
        amp: autocast dtype on CUDA, or None.
        progress: show a tqdm bar (rank 0 only).
        desc: the bar's label.
    """
    ctx = ctx or DistContext(device=next(model.parameters()).device)
    was_training = model.training
    model.eval()
    logits, targets, indices = [], [], []
    unreadable: dict[int, str] = {}
    try:
        for batch in tqdm(loader, desc=desc, disable=not (progress and ctx.is_main), leave=False):
            batch = drop_unreadable(batch, unreadable)
            if batch is None:
                continue
            inputs = [batch[k].to(ctx.device, non_blocking=True) for k in BRANCHES]
            with autocast(ctx.device, amp):
                out = model(*inputs)
            logits.append(out.logits.float())
            targets.append(batch["target"].to(ctx.device).float())
            indices.append(batch["index"].to(ctx.device).long())
    finally:
        model.train(was_training)
    cat = lambda xs, shape: torch.cat(xs) if xs else torch.zeros(shape, device=ctx.device)  # noqa: E731
    k = model.config.num_classes if hasattr(model, "config") else 0
    all_logits = all_gather_cat(ctx, cat(logits, (0, k)))
    all_targets = all_gather_cat(ctx, cat(targets, (0, k)))
    all_indices = all_gather_cat(ctx, cat(indices, (0,)).long())
    idx = all_indices.cpu().numpy()
    # DistributedSampler pads the shards by repeating items: keep each item once, in item order.
    unique, first = np.unique(idx, return_index=True)
    merged = {i: e for part in gather_objects(ctx, unreadable) for i, e in part.items()}
    return Predictions(
        logits=all_logits.cpu().numpy()[first],
        targets=all_targets.cpu().numpy()[first],
        indices=unique,
        unreadable=dict(sorted(merged.items())),
    )


def drop_unreadable(batch: dict[str, Any], found: dict[int, str]) -> dict[str, Any] | None:
    """The batch without the items a skipping dataset could not decode (recorded in ``found``: index →
    error); None when none is left. A batch without ``"ok"`` (a dataset that raises instead) is returned as is."""
    ok = batch.get("ok")
    if ok is None or bool(ok.all()):
        return batch
    for i in (~ok).nonzero().flatten().tolist():
        found[int(batch["index"][i])] = batch["error"][i]
    keep = ok.nonzero().flatten()
    if keep.numel() == 0:
        return None
    return {k: (v[keep] if isinstance(v, torch.Tensor) else v) for k, v in batch.items() if k != "error"}


@dataclass
class Evaluation:
    """A split's metrics and who was left out of them (``to_dict`` merges both)."""

    metrics: MultiLabelMetrics | SingleLabelMetrics
    skipped: list[dict[str, str]] = field(default_factory=list)  # unreadable images: image, reason, found_by
    unlabeled: int = 0  # EMOTIC people without any label, excluded from the metric

    @property
    def metric(self) -> str:
        return self.metrics.metric

    @property
    def value(self) -> float:
        return self.metrics.value

    @property
    def num_samples(self) -> int:
        return self.metrics.num_samples

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.metrics.to_dict(),
            "skipped": {"count": len(self.skipped), "images": self.skipped},
            "unlabeled": self.unlabeled,
        }

    def notes(self) -> list[str]:
        """One line per kind of person left out (none when nobody was)."""
        lines = []
        if self.skipped:
            shown = ", ".join(s["image"] for s in self.skipped[:3]) + (
                " ..." if len(self.skipped) > 3 else ""
            )
            lines.append(f"skipped {len(self.skipped)} people with unreadable images (not scored): {shown}")
        if self.unlabeled:
            lines.append(f"{self.unlabeled} people without any label excluded from the metric")
        return lines


def skipped_entries(dataset: Dataset, unreadable: dict[int, str]) -> list[dict[str, str]]:
    """Everything ``dataset`` left out for unreadable images: found by the box cache when opened, and found
    when read (``unreadable``: item index → error), as ``{"image", "reason", "found_by"}``."""
    out = [
        {"image": s.image, "reason": s.reason, "found_by": s.found_by}
        for s in getattr(dataset, "skipped", [])
    ]
    records = getattr(dataset, "records", None)
    for index, reason in unreadable.items():
        image = str(records[index].path) if records is not None else f"item {index}"
        out.append({"image": image, "reason": reason, "found_by": "loader"})
    return out


def evaluate_model(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 64,
    workers: int = 0,
    ctx: DistContext | None = None,
    amp: torch.dtype | None = None,
    progress: bool = False,
    desc: str = "eval",
) -> Evaluation:
    """Score ``model`` on ``dataset`` with the dataset's metric (mAP if ``dataset.multi_label`` else accuracy),
    in float32 unless ``amp`` says otherwise, over the items that could be read.

    Raises:
        DatasetError: no item of the split could be read.
    """
    ctx = ctx or DistContext(device=next(model.parameters()).device)
    preds = predict(
        model, eval_loader(dataset, batch_size, workers, ctx), ctx=ctx, amp=amp, progress=progress, desc=desc
    )
    if len(preds.indices) + len(preds.unreadable) != len(dataset):
        raise RuntimeError(f"scored {len(preds.indices)} of {len(dataset)} items; the gather lost some")
    skipped = skipped_entries(dataset, preds.unreadable)
    if not len(preds.indices):
        raise DatasetError(
            f"no item of the split could be read ({len(skipped)} unreadable, e.g. {skipped[0]['image']}: "
            f"{skipped[0]['reason']})"
        )
    metrics = compute_metrics(preds.targets, preds.logits, list(dataset.labels), bool(dataset.multi_label))
    return Evaluation(metrics, skipped, int(getattr(dataset, "unlabeled", 0)))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sibnet.evaluate",
        description="Evaluate a SIB-Net checkpoint: EMOTIC mAP (per-class AP) or CAER-S accuracy (per class, "
        "confusion matrix).",
    )
    p.add_argument(
        "--checkpoint", required=True, help="checkpoint folder (config.json + model.safetensors) or Hub id"
    )
    p.add_argument("--dataset", required=True, choices=list_datasets())
    p.add_argument("--data-root", required=True, type=Path)
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--json", type=Path, default=None, help="write the full report here")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    p.add_argument(
        "--amp",
        default="off",
        choices=("auto", "bf16", "fp16", "off"),
        help="scoring precision: off = float32 (default; reduced precision biases mAP by ~0.02 pp)",
    )
    p.add_argument("--annotations", type=Path, default=None, help="EMOTIC annotation file or folder")
    p.add_argument(
        "--boxes", type=Path, default=None, help="box cache (default <data-root>/sibnet_boxes_*.jsonl)"
    )
    p.add_argument(
        "--val-fraction", type=float, default=None, help="CAER-S: validation share of train/ (default 0.1)"
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="fail on the first unreadable image instead of skipping it (skipped ones are listed in the report)",
    )
    p.add_argument("--no-progress", action="store_true")
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate as the command line asks; returns the JSON report (rank 0 prints and writes it)."""
    from sibnet.checkpoints import load_model

    ctx = init_distributed(args.device)
    try:
        model = load_model(args.checkpoint, device=ctx.device)
        cfg = model.config
        spec = get_dataset(args.dataset)
        if cfg.multi_label != spec.multi_label:
            raise LabelMismatchError(
                f"checkpoint {args.checkpoint} is a {'multi' if cfg.multi_label else 'single'}-label model; "
                f"{spec.title} is {'multi' if spec.multi_label else 'single'}-label"
            )
        check_labels(cfg.labels, spec.labels, where=f"checkpoint {args.checkpoint}")
        dataset = spec.open(
            args.data_root,
            args.split,
            transform=cfg.transform,
            train=False,
            boxes=args.boxes,
            skip_unreadable=not args.strict,
            annotations=args.annotations,
            val_fraction=args.val_fraction,
        )
        check_labels(cfg.labels, dataset.labels, where=f"checkpoint {args.checkpoint}")
        started = time.perf_counter()
        report = evaluate_model(
            model,
            dataset,
            batch_size=args.batch_size,
            workers=args.workers,
            ctx=ctx,
            amp=amp_dtype(ctx.device, args.amp),
            progress=not args.no_progress,
            desc=f"{args.dataset} {args.split}",
        )
        seconds = time.perf_counter() - started
        result = {
            "checkpoint": str(args.checkpoint),
            "model": cfg.name,
            "dataset": args.dataset,
            "data_root": str(args.data_root),
            "split": args.split,
            **report.to_dict(),
            "seconds": round(seconds, 3),
            "training": getattr(model, "training_info", {}),
        }
        if ctx.is_main:
            title = f"{cfg.name} on {args.dataset} {args.split} ({report.num_samples} scored)"
            print(format_report(report.metrics, title))
            for line in report.notes():
                print(line)
            if args.json is not None:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(result, indent=2) + "\n")
                print(f"wrote {args.json}")
        return result
    finally:
        shutdown(ctx)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (*USER_ERRORS, ValueError) as err:
        print(f"error: {error_message(err)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
