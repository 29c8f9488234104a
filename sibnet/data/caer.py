"""CAER-S (Lee et al., 2019), the single-label benchmark of paper §4.1: 7 classes, overall sample accuracy.

On disk: ``<root>/train/<Class>/<name>.png`` and ``<root>/test/<Class>/<name>.png`` (``.jpg``/``.jpeg`` too;
split folders matched case-insensitively). Class folders are mapped through
:func:`sibnet.labels.canonical_caer_class`, so the release's ``Angry`` in one split and ``Anger`` in the other
are one class; any other folder name raises a :class:`DatasetError` naming it.

CAER-S has no validation folder. The paper splits 70/10/20; we carve a stratified validation split from
``train`` (``val_fraction``, default 0.1, ``sklearn.model_selection.train_test_split`` with ``stratify``,
seeded by ``val_seed``) and keep ``test`` untouched, so checkpoints are picked on ``val``, never on ``test``
(DESIGN.md §1). ``val_seed`` is separate from the crop ``seed`` so the three training seeds the paper averages
over all see the same validation images.

Face and body boxes come from the box cache (``python -m sibnet.data.boxes --dataset caer``: MTCNN faces,
YOLO persons, the principal person per frame). A frame missing from the cache gets
:func:`~sibnet.data.masking.make_triple`'s fallback (body = whole frame, face estimated from its top) and is
counted in :meth:`CaerDataset.summary`. A frame the cache marks ``"unreadable"`` is dropped and listed in
``skipped`` with ``skip_unreadable=True``, and refused when the split is opened without it
(:mod:`sibnet.data.base`). Every CAER-S frame has a label (its folder), so none is left out for want of one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sibnet.boxes import Box
from sibnet.data.base import Skipped, TripleDataset, refuse_unreadable
from sibnet.data.boxcache import BoxJob, caer_key, resolve_box_cache
from sibnet.data.masking import InputTransform
from sibnet.errors import DatasetError
from sibnet.labels import CAER_CLASSES, canonical_caer_class

SPLITS: tuple[str, ...] = ("train", "val", "test")
IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg"})


@dataclass(frozen=True, eq=False)
class CaerRecord:
    """One CAER-S frame as the dataset serves it."""

    path: Path
    key: str  # path relative to the data root, the box-cache key
    folder: str  # the class folder's name on disk (e.g. "Angry")
    label_name: str  # canonical class (e.g. "Anger")
    label: int  # index into CAER_CLASSES
    face_box: Box | None  # None: not in the box cache (make_triple's fallback applies)
    body_box: Box | None
    face_source: str  # cache's face_source, or "missing"
    body_source: str
    target: np.ndarray  # float32 (7,) one-hot


def _split_dir(data_root: Path, name: str) -> Path:
    exact = data_root / name
    if exact.is_dir():
        return exact
    for child in data_root.iterdir():
        if child.is_dir() and child.name.lower() == name:
            return child
    raise FileNotFoundError(f"CAER-S split folder {exact} does not exist (expected {exact}/<Class>/*.png)")


def list_caer_images(data_root: str | Path, split: str) -> list[tuple[Path, str]]:
    """``(path, class folder name)`` of every image of an on-disk split (``"train"`` or ``"test"``), sorted.

    Raises:
        FileNotFoundError: the data root or the split folder is missing.
        DatasetError: a class folder is not a known class or alias, or the split holds no images.
    """
    data_root = Path(data_root)
    if split not in ("train", "test"):
        raise ValueError(f"CAER-S has on-disk splits 'train' and 'test', not {split!r}")
    if not data_root.is_dir():
        raise FileNotFoundError(f"CAER-S data root {data_root} does not exist or is not a folder")
    folder = _split_dir(data_root, split)
    images: list[tuple[Path, str]] = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            canonical_caer_class(sub.name)
        except ValueError as err:
            raise DatasetError(f"class folder {sub}: {err}") from None
        files = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        images.extend((p, sub.name) for p in files)
    if not images:
        raise DatasetError(f"no images in {folder} (expected {folder}/<Class>/*.png or .jpg)")
    return images


def stratified_val_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices ``(train, val)`` of a stratified, seeded split (sklearn's ``train_test_split``).

    Raises:
        DatasetError: a class has too few images to appear on both sides.
    """
    # Imported here: scikit-learn takes seconds to import and only this function needs it.
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    if val_fraction <= 0:
        return indices, indices[:0]
    try:
        train_idx, val_idx = train_test_split(
            indices, test_size=val_fraction, stratify=labels, random_state=seed, shuffle=True
        )
    except ValueError as err:
        counts = dict(Counter(CAER_CLASSES[i] for i in labels))
        raise DatasetError(
            f"cannot carve a stratified validation split of {val_fraction:g} from {len(labels)} training "
            f"images (per class: {counts}): {err}"
        ) from err
    return np.sort(train_idx), np.sort(val_idx)


class CaerDataset(TripleDataset):
    """CAER-S frames as SIB-Net inputs (single label over the 7 classes).

    Items are the :class:`~sibnet.data.masking.TripleDataset` dict plus ``"label"`` (the class index); the
    ``"target"`` is the one-hot vector.

    Args:
        data_root: the CAER-S folder holding ``train/`` and ``test/``.
        split: ``"train"``, ``"val"`` (carved from ``train/``) or ``"test"``.
        boxes: the box cache: None → ``<data_root>/sibnet_boxes_caer.jsonl`` if present (else fallbacks, with a
            warning); a path → that file (must exist); False → none.
        transform: the model's input recipe (``model.config.transform``); default the paper's 224/230.
        train: random crops; None → True for the ``train`` split only.
        seed: seed of the per-item crop generators.
        val_fraction: fraction of ``train/`` held out as ``val`` (0 → no validation split).
        val_seed: seed of the validation split.
        skip_unreadable: skip frames that cannot be decoded instead of raising (:mod:`sibnet.data.base`).

    Raises:
        FileNotFoundError: missing data root, split folder or box cache (the message names it).
        DatasetError: unknown class folder, an empty split, or a split that cannot be stratified.
    """

    labels = CAER_CLASSES
    multi_label = False

    def __init__(
        self,
        data_root: str | Path,
        split: str,
        *,
        boxes: str | Path | bool | None = None,
        transform: InputTransform | None = None,
        train: bool | None = None,
        seed: int = 0,
        val_fraction: float = 0.1,
        val_seed: int = 0,
        skip_unreadable: bool = False,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown CAER-S split {split!r}; expected one of {SPLITS}")
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        super().__init__(
            transform=transform,
            train=split == "train" if train is None else train,
            seed=seed,
            skip_unreadable=skip_unreadable,
        )
        self.data_root = Path(data_root)
        self.split = split
        self.val_fraction = val_fraction
        self.val_seed = val_seed
        images = list_caer_images(self.data_root, "test" if split == "test" else "train")
        self.folders = {name: canonical_caer_class(name) for name in sorted({f for _, f in images})}
        labels = np.array([CAER_CLASSES.index(self.folders[f]) for _, f in images])
        self._split_sizes: dict[str, int | None] = {"train": None, "val": None, "test": None}
        if split == "test":
            self._split_sizes["test"] = len(images)
        else:
            train_idx, val_idx = stratified_val_split(labels, val_fraction, val_seed)
            self._split_sizes.update(train=len(train_idx), val=len(val_idx))
            chosen = train_idx if split == "train" else val_idx
            if not len(chosen):
                raise DatasetError(
                    f"the {split!r} split of {self.data_root / 'train'} is empty (val_fraction=0?)"
                )
            images = [images[i] for i in chosen]
            labels = labels[chosen]
        self.box_cache_path, cache = resolve_box_cache(boxes, self.data_root, "caer")

        eye = np.eye(len(CAER_CLASSES), dtype=np.float32)
        records = []
        for (path, folder), label in zip(images, labels):
            key = caer_key(path.relative_to(self.data_root))
            cached = cache.get(key)
            if cached is not None and cached.status == "unreadable":
                self.skipped.append(Skipped(str(path), cached.error or "unreadable", "box cache"))
                continue
            usable = cached is not None and cached.status == "ok"
            records.append(
                CaerRecord(
                    path=path,
                    key=key,
                    folder=folder,
                    label_name=CAER_CLASSES[label],
                    label=int(label),
                    face_box=cached.face if usable else None,
                    body_box=cached.body if usable else None,
                    face_source=(cached.face_source or "missing") if usable else "missing",
                    body_source=(cached.body_source or "missing") if usable else "missing",
                    target=eye[label].copy(),
                )
            )
        if not skip_unreadable:
            refuse_unreadable(self.skipped, split, self.box_cache_path)
        if not records:
            raise DatasetError(
                f"every frame of split {split!r} is unreadable according to {self.box_cache_path}"
            )
        self.records: list[CaerRecord] = records

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = super().__getitem__(index)
        item["label"] = self.records[index].label
        return item

    def split_sizes(self) -> dict[str, int | None]:
        """Sizes of train/val/test; the on-disk split not loaded is counted from its folder (None if absent)."""
        sizes = dict(self._split_sizes)
        try:
            if self.split == "test":
                labels = np.array(
                    [
                        CAER_CLASSES.index(canonical_caer_class(f))
                        for _, f in list_caer_images(self.data_root, "train")
                    ]
                )
                train_idx, val_idx = stratified_val_split(labels, self.val_fraction, self.val_seed)
                sizes.update(train=len(train_idx), val=len(val_idx))
            else:
                sizes["test"] = len(list_caer_images(self.data_root, "test"))
        except (FileNotFoundError, DatasetError):
            pass
        return sizes

    def summary(self) -> dict[str, Any]:
        """Counts: split sizes, frames per class, folder aliases, and where the boxes came from."""
        per_class = Counter(r.label_name for r in self.records)
        return {
            "dataset": "caer",
            "split": self.split,
            "records": len(self.records),
            "split_sizes": self.split_sizes(),
            "val_fraction": self.val_fraction,
            "val_seed": self.val_seed,
            "per_class": {name: per_class.get(name, 0) for name in CAER_CLASSES},
            "folders": dict(self.folders),
            "box_cache": str(self.box_cache_path) if self.box_cache_path else None,
            "train_mode": self.train,
            "face_sources": dict(Counter(r.face_source for r in self.records)),
            "body_sources": dict(Counter(r.body_source for r in self.records)),
            "missing_from_cache": sum(r.face_source == "missing" for r in self.records),
            "skipped_unreadable": len(self.skipped),
        }


def box_jobs(data_root: Path, annotations: str | Path | None = None) -> tuple[list[BoxJob], list[str]]:
    """Every frame of ``train/`` and ``test/``, for the box-cache builder (CAER-S has no annotation file)."""
    data_root = Path(data_root)
    jobs = []
    notices = []
    for split in ("train", "test"):
        try:
            images = list_caer_images(data_root, split)
        except FileNotFoundError as err:
            notices.append(f"split {split} skipped: {err}")
            continue
        for path, _ in images:
            rel = caer_key(path.relative_to(data_root))
            jobs.append(BoxJob(rel, rel, path))
    if not jobs:
        raise FileNotFoundError(f"no CAER-S images found in {data_root}: " + "; ".join(notices))
    return jobs, notices
