"""The unreadable images of a training run: skipped, counted per split and listed in one file.

Unreadable images never stop a run (unless ``--strict``, which fails on the first): the ones the box cache
marks unreadable are dropped when a split is opened, the ones that fail to decode are left out of their batch
(a step left with fewer than two items, too few for BatchNorm, is skipped on every rank), and all are listed
in ``<run>/skipped_images.tsv`` (split, image, found by, reason), counted in ``summary.json["skipped"]`` and
in one printed line. A split with no readable item is an error. EMOTIC people without any label are left out
by the dataset (:mod:`sibnet.data.emotic`) and counted in ``summary.json["unlabeled"]``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any


class SkipLog:
    """The unreadable images of a run, per split, over every seed and epoch (see the module docstring)."""

    SPLITS = ("train", "val", "test")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.by_split: dict[str, dict[str, dict[str, str]]] = {s: {} for s in self.SPLITS}
        self.unlabeled: dict[str, int] = {}

    def add(self, split: str, entries: list[dict[str, str]]) -> None:
        for entry in entries:
            self.by_split[split].setdefault(entry["image"], entry)

    def counts(self) -> dict[str, int]:
        return {s: len(v) for s, v in self.by_split.items()}

    @property
    def total(self) -> int:
        return sum(self.counts().values())

    def write(self) -> None:
        """Rewrite the listing (only when something was skipped)."""
        if not self.total:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, delimiter="\t", lineterminator="\n")
            writer.writerow(["split", "image", "found_by", "reason"])
            for split, entries in self.by_split.items():
                for e in entries.values():
                    writer.writerow([split, e["image"], e["found_by"], " ".join(e["reason"].split())])
        tmp.replace(self.path)

    def line(self) -> str | None:
        if not self.total:
            return None
        counts = ", ".join(f"{s} {n}" for s, n in self.counts().items())
        return f"skipped {self.total} unreadable image(s) ({counts}), listed in {self.path}"

    def to_dict(self) -> dict[str, Any]:
        return {**self.counts(), "file": str(self.path) if self.total else None}
