"""A run's summary over its seeds (``summary.json``): per-seed selection and test score, mean ± std."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sibnet.data.registry import get_dataset
from sibnet.training.config import TrainConfig


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
    paper = summary["paper"].get(get_dataset(summary["dataset"]).paper_key)
    if paper is not None:
        lines.append(f"paper (test): {paper:.2f}")
    return "\n".join(lines)
