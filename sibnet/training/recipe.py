"""``python -m sibnet.recipe``: the paper's Figure-5 set, from a dataset to a weights folder the app loads.

::

    python -m sibnet.recipe --dataset emotic --data-root data/emotic                  # → weights/emotic/
    python -m sibnet.recipe --dataset emotic --data-root data/emotic --estimate-only  # the time it expects

One command trains SIB-Net, the concatenation baseline and the attention baseline with the recipe of §4.2
(:mod:`sibnet.training`: Adam, the paper's learning rates and decay, batch and epochs per dataset, three
seeds, the best validation epoch of each seed), scores each seed's selected checkpoint once on test, and
assembles ``<weights>/{sibnet,concat,attention}/``, each the checkpoint of the seed with the best
*validation* score, with a model card (``README.md``) and the run's results in ``config.json``
(:mod:`sibnet.training.cards`), plus a card for the folder as a whole. ``python -m sibnet.publish`` pushes
that folder to the Hub.

Rerunning the command continues where it stopped: a finished run (its ``summary.json`` matches the
configuration) is not touched, an interrupted one resumes after its last finished epoch (the trainer's
resume state), and the assembly rewrites each model folder in a temporary folder swapped in at the end,
so it can be interrupted and repeated at will and gives the same files every time.

Before training it prints the time it expects on the current device: a few training steps of each model on
random tensors are timed on that device (compute only: data loading is assumed to keep up), and the FLOP
model of :mod:`sibnet.training.reproduce` gives the same for one A100-class GPU as a reference.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sibnet.distributed import amp_dtype, autocast, resolve_device
from sibnet.errors import USER_ERRORS, TrainingError, error_message
from sibnet.losses import ContextLoss
from sibnet.models.registry import build_model
from sibnet.models.serialization import CONFIG_NAME, WEIGHTS_NAME, read_config
from sibnet.training.cards import (
    FIGURE5,
    RESULTS_KEY,
    describe_results,
    model_card,
    repo_card,
    results_record,
)
from sibnet.training.cli import build_parser as train_parser
from sibnet.training.cli import resolve_config
from sibnet.training.config import BEST_NAME, DEFAULT_SEEDS, LOG_NAME, SUMMARY_NAME, TrainConfig
from sibnet.training.optim import build_optimizer
from sibnet.training.reproduce import GPU_EFFECTIVE_FLOPS, forward_flops
from sibnet.training.trainer import train

CARD_NAME = "README.md"
PUBLISHED_FILES = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME)  # what a published model folder holds, nothing else
# Flags of python -m sibnet.train the recipe sets itself, per model.
_OWN_FLAGS = ("--model", "--variant", "--run-name", "--dry-run")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sibnet.recipe",
        description="Train SIB-Net, concatenation and attention (the paper's Figure 5) with the recipe of §4.2, "
        "three seeds each, and assemble the weights folder the demo loads (sibnet/, concat/, attention/: "
        "each the best seed by validation, with a model card). Rerun to resume.",
        epilog="Every other flag of `python -m sibnet.train` (--epochs, --batch-size, --lr-*, --no-pretrained, "
        "--input-size, --max-steps-per-epoch, --annotations, --boxes, --val-fraction, --device, --workers, "
        "--amp, --overwrite, --no-progress, ...) is passed to the three training runs.",
        allow_abbrev=False,  # an abbreviated training flag must reach the training parser untouched
    )
    p.add_argument("--dataset", required=True, help="emotic or caer")
    p.add_argument("--data-root", required=True, type=Path, help="dataset folder")
    p.add_argument(
        "--out", type=Path, default=Path("runs"), help="training runs root (shared with sibnet.train)"
    )
    p.add_argument(
        "--weights", type=Path, default=None, help="weights folder to assemble (default weights/<dataset>)"
    )
    p.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS), help="seeds of every model")
    p.add_argument("--license", default="mit", help="licence identifier written into the model cards")
    p.add_argument(
        "--estimate",
        choices=("measure", "flops", "none"),
        default="measure",
        help="measure: time a few steps on this device; flops: the FLOP model only; none: skip",
    )
    p.add_argument("--estimate-only", action="store_true", help="print the expected time and exit")
    p.add_argument("--assemble-only", action="store_true", help="only assemble the weights of finished runs")
    return p


def resolve_configs(args: argparse.Namespace, rest: Sequence[str]) -> dict[str, TrainConfig]:
    """One :class:`TrainConfig` per Figure-5 model, resolved by the training command line itself.

    Raises:
        ValueError: a flag the recipe sets itself, or an invalid training flag (argparse's message).
    """
    own = [flag for flag in rest if flag.split("=", 1)[0] in _OWN_FLAGS]
    if own:
        raise ValueError(f"{', '.join(own)}: the recipe chooses the models and run names itself")
    common = [
        "--dataset", args.dataset, "--data-root", str(args.data_root), "--out", str(args.out),
        "--seeds", *map(str, args.seeds), *rest,
    ]  # fmt: skip
    parser = train_parser()
    configs = {}
    for key in FIGURE5:
        try:
            ns = parser.parse_args(["--model", key, *common])
        except SystemExit as exit_:  # argparse printed its message already
            raise ValueError(f"invalid training flags {' '.join(rest)!r}") from exit_
        if ns.model != key or ns.dry_run:
            raise ValueError("the recipe chooses the models itself; drop --model/--variant/--dry-run")
        configs[key] = resolve_config(ns)
    return configs


# ---- resume ------------------------------------------------------------------------------------------------


def epochs_done(cfg: TrainConfig, seed: int) -> int:
    """Finished epochs of one seed (its log is rewritten from the resume state after every epoch)."""
    log = cfg.seed_dir(seed) / LOG_NAME
    if cfg.overwrite or not log.is_file():
        return 0
    return min(sum(1 for line in log.read_text().splitlines() if line.strip()), cfg.epochs)


def finished_summary(cfg: TrainConfig) -> dict[str, Any] | None:
    """The run's ``summary.json`` when it is complete for exactly this configuration, else None.

    Complete: same model, loss, recipe and seeds, every seed trained for all epochs, every selected
    checkpoint on disk (and scored on test when asked). Anything else goes back to the trainer, which
    resumes it (or refuses a run folder of another configuration, naming the difference).
    """
    path = cfg.run_dir / SUMMARY_NAME
    if cfg.overwrite or not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text())
        same = (
            summary["model"] == cfg.model.name
            and summary["loss"] == cfg.loss.to_dict()
            and summary["recipe"] == cfg.recipe()
            and [s["seed"] for s in summary["seeds"]] == list(cfg.seeds)
            and all(s["epochs_done"] == cfg.epochs for s in summary["seeds"])
            and (summary["test"] is not None or not cfg.evaluate_test)
        )
        if not same:
            return None
        for seed in cfg.seeds:
            config, _ = read_config(cfg.seed_dir(seed) / BEST_NAME / CONFIG_NAME)
            if config != cfg.model or not (cfg.seed_dir(seed) / BEST_NAME / WEIGHTS_NAME).is_file():
                return None
    except (OSError, ValueError, KeyError, TypeError):  # unreadable or foreign: let the trainer decide
        return None
    return summary


# ---- time estimate -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """How many triples one model's remaining training pushes through the network."""

    train: int  # training triples (forward + backward)
    evaluate: int  # validation and test triples (forward only)


def split_sizes(cfg: TrainConfig) -> tuple[dict[str, int], str]:
    """Items per split (opened from disk; the release's sizes when the data cannot be read) and a note."""
    sizes: dict[str, int] = {}
    try:
        for split in ("train", "val", "test") if cfg.evaluate_test else ("train", "val"):
            ds = cfg.spec.open(
                cfg.data_root, split, transform=cfg.model.transform, boxes=cfg.boxes, **cfg.dataset_options()
            )
            sizes[split] = len(ds)
        return sizes, "split sizes read from the data"
    except (*USER_ERRORS, ValueError) as err:
        spec = cfg.spec
        note = f"the release's split sizes, test not counted (data not readable: {error_message(err)})"
        return {"train": spec.train_items, "val": spec.val_items, "test": 0}, note


def workload(cfg: TrainConfig, sizes: Mapping[str, int]) -> Workload:
    """The triples still to process: remaining epochs of every seed, plus its test pass."""
    if finished_summary(cfg) is not None:
        return Workload(0, 0)
    steps = sizes["train"] // cfg.batch_size  # the trainer drops the last partial batch
    if cfg.max_steps_per_epoch is not None:
        steps = min(steps, cfg.max_steps_per_epoch)
    train_n = evaluate_n = 0
    for seed in cfg.seeds:
        left = cfg.epochs - epochs_done(cfg, seed)
        train_n += left * steps * cfg.batch_size
        evaluate_n += left * sizes["val"] + (sizes.get("test", 0) if cfg.evaluate_test else 0)
    return Workload(train_n, evaluate_n)


def measure_seconds_per_triple(cfg: TrainConfig, device: torch.device) -> float:
    """Seconds per training triple on ``device``: a few Adam steps of the model on random tensors.

    The model, optimiser, loss and mixed precision are the trainer's; the batch is the run's on CUDA and at
    most 4 on the CPU (where time grows linearly with the batch, and a 224 px batch of 32 takes ~15 s).
    """
    batch = cfg.batch_size if device.type == "cuda" else min(cfg.batch_size, 4)
    warmup, timed = (3, 5) if device.type == "cuda" else (1, 2)
    size, k = cfg.model.input_size, cfg.model.num_classes
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    # Forked RNG: measuring must not change what the training runs draw afterwards.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        model = build_model(cfg.model, pretrained=False).to(device).train()
        optimizer = build_optimizer(model, cfg)
        loss_fn = ContextLoss(cfg.loss)
        amp = amp_dtype(device, cfg.amp)
        inputs = [
            torch.randn(batch, 3, size, size, device=device) for _ in range(3)
        ]  # every model takes three
        target = torch.nn.functional.one_hot(torch.arange(batch) % k, k).float().to(device)
        generator = torch.Generator().manual_seed(0)
        started = 0.0
        for step in range(warmup + timed):
            if step == warmup:
                sync()
                started = time.perf_counter()
            with autocast(device, amp):
                out = model(*inputs)
            losses = loss_fn(out.logits, target, out.branch_logits, generator=generator)
            optimizer.zero_grad(set_to_none=True)
            losses.total.backward()
            optimizer.step()
        sync()
        seconds = (time.perf_counter() - started) / (timed * batch)
        del model, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return seconds


def format_seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def estimate_text(configs: Mapping[str, TrainConfig], device: torch.device, mode: str) -> str:
    """What :func:`main` prints before training: the expected time per model, its basis and assumptions."""
    first = next(iter(configs.values()))
    sizes, note = split_sizes(first)
    loads = {key: workload(cfg, sizes) for key, cfg in configs.items()}
    steps = sizes["train"] // first.batch_size
    if first.max_steps_per_epoch is not None:
        steps = min(steps, first.max_steps_per_epoch)
    lines = [
        f"Expected time ({len(configs)} models × {len(first.seeds)} seeds, {first.epochs} epochs of {steps} steps "
        f"of {first.batch_size}, {first.model.input_size} px; {note}: train {sizes['train']}, val "
        f"{sizes['val']}, test {sizes.get('test', 0)}):"
    ]
    if all(w.train == 0 and w.evaluate == 0 for w in loads.values()):
        return lines[0] + " nothing left to train."
    if mode == "measure":
        per_model = {}
        for key, cfg in configs.items():
            if loads[key].train or loads[key].evaluate:
                t = measure_seconds_per_triple(cfg, device)
                # Evaluation is a forward pass, about a third of a training step (forward + backward).
                per_model[key] = t * (loads[key].train + loads[key].evaluate / 3)
            else:
                per_model[key] = 0.0
        name = (
            torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else f"{torch.get_num_threads()} threads"
        )
        lines.append(
            f"  this device ({device}, {name}; measured: a few Adam steps per model on random tensors): "
            + ", ".join(f"{key} {format_seconds(s)}" for key, s in per_model.items())
            + f"; total {format_seconds(sum(per_model.values()))}"
        )
    gpu = {
        key: forward_flops(cfg.model) * (3 * loads[key].train + loads[key].evaluate) / GPU_EFFECTIVE_FLOPS
        for key, cfg in configs.items()
    }
    lines.append(
        f"  one A100-class GPU (FLOP model: 3 × forward FLOPs per training triple, "
        f"{GPU_EFFECTIVE_FLOPS / 1e12:.0f} TFLOP/s effective with bf16): "
        + ", ".join(f"{key} {format_seconds(s)}" for key, s in gpu.items())
        + f"; total {format_seconds(sum(gpu.values()))}"
    )
    lines.append(
        "  Assumes the data loader keeps up (--workers; a triple costs a few ms of CPU per core), nothing else "
        "on the device, and that finished epochs are not redone; checkpoints and start-up are not counted."
    )
    return "\n".join(lines)


# ---- assembly ----------------------------------------------------------------------------------------------


def _replace_dir(tmp: Path, dest: Path) -> None:
    """Swap ``tmp`` in as ``dest``; an interruption leaves ``dest`` old or new and a leftover the next run removes."""
    old = dest.with_name(f".{dest.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old.exists():
        shutil.rmtree(old)


def assemble(
    runs: Mapping[str, tuple[TrainConfig, Mapping[str, Any]]], weights: Path, *, license: str = "mit"
) -> dict[str, dict[str, Any]]:
    """Write ``weights/<key>/`` per model (the best-validation seed's checkpoint, its results, its card) and
    ``weights/README.md``; returns the results record per model.

    Idempotent: every folder is written beside its destination and swapped in, so repeating the assembly
    (after an interruption or not) gives the same files; other files in ``weights`` are left alone.

    Raises:
        TrainingError: a run's selected checkpoint is missing, or the models disagree on their labels.
    """
    weights.mkdir(parents=True, exist_ok=True)
    for leftover in [*weights.glob(".*.tmp"), *weights.glob(".*.old")]:  # an interrupted assembly's
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover)
        else:
            leftover.unlink()
    records: dict[str, dict[str, Any]] = {}
    entries = []
    labels = set()
    for key, (cfg, summary) in runs.items():
        probe = results_record(summary, key, cfg.model)
        best = (
            cfg.seed_dir(probe["selected"]["seed"]) / BEST_NAME
        )  # from the config: the folder may have moved
        if not (best / WEIGHTS_NAME).is_file():
            raise TrainingError(f"the selected checkpoint {best} is missing; rerun the recipe to retrain it")
        config, _ = read_config(best / CONFIG_NAME)
        labels.add(tuple(config.labels))
        record = results_record(summary, key, config)
        meta = json.loads((best / CONFIG_NAME).read_text())
        meta.setdefault("training", {})[RESULTS_KEY] = record
        tmp = weights / f".{key}.tmp"
        tmp.mkdir()
        shutil.copyfile(best / WEIGHTS_NAME, tmp / WEIGHTS_NAME)
        (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")
        model_card(summary, record, config, license=license).save(tmp / CARD_NAME)
        _replace_dir(tmp, weights / key)
        records[key] = record
        entries.append((summary, record))
    if len(labels) > 1:
        raise TrainingError("the three runs were trained with different label sets; the app needs one")
    card = weights / f".{CARD_NAME}.tmp"
    repo_card(entries, license=license).save(card)
    os.replace(card, weights / CARD_NAME)
    return records


# ---- the command -------------------------------------------------------------------------------------------


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 estimates and assembles


def main(argv: Sequence[str] | None = None) -> int:
    args, rest = build_parser().parse_known_args(argv)
    try:
        configs = resolve_configs(args, rest)
        weights = args.weights or Path("weights") / args.dataset
        device = resolve_device(next(iter(configs.values())).device)
        if args.estimate != "none" and _is_main_process() and not args.assemble_only:
            print(estimate_text(configs, device, args.estimate), flush=True)
        if args.estimate_only:
            return 0
        runs = {}
        for key, cfg in configs.items():
            summary = finished_summary(cfg)
            if summary is not None:
                print(f"{key}: {cfg.run_dir} is finished; not retrained", flush=True)
            elif args.assemble_only:
                raise TrainingError(
                    f"{cfg.run_dir} is not a finished run of this configuration; train it first"
                )
            else:
                print(f"{key}: training {cfg.run_dir} ({len(cfg.seeds)} seeds)", flush=True)
                summary = train(cfg)
            runs[key] = (cfg, summary)
        if not _is_main_process():
            return 0
        records = assemble(runs, weights, license=args.license)
    except (*USER_ERRORS, ValueError) as err:
        if os.environ.get("SIBNET_DEBUG"):
            raise
        print(f"error: {error_message(err)}", file=sys.stderr)
        return 2
    print(f"wrote {weights}/ (sibnet/, concat/, attention/, each with {CARD_NAME}):")
    for record in records.values():
        print(f"  {describe_results(record)}  (seed {record['selected']['seed']})")
    print(f"next: python -m sibnet.publish --weights {weights} --repo <you>/<name> [--dry-run]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
