"""Command lines of the short training runs the training tests share."""

from __future__ import annotations

import json
from pathlib import Path

SIZE = 32  # the smallest input ModelConfig accepts: these tests check plumbing, not learning


def train_args(dataset: str, root: Path, out: Path, *extra: str, model: str = "face") -> list[str]:
    return [
        "--dataset", dataset, "--data-root", str(root), "--model", model, "--out", str(out),
        "--no-pretrained", "--input-size", str(SIZE), "--batch-size", "4", "--epochs", "1",
        "--max-steps-per-epoch", "2", "--workers", "0", "--no-progress", "--seeds", "0", *extra,
    ]  # fmt: skip


def caer_args(root: Path, out: Path, *extra: str, model: str = "face") -> list[str]:
    return [*train_args("caer", root, out, *extra, model=model), "--val-fraction", str(1 / 3)]


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]
