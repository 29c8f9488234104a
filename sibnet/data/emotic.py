"""EMOTIC (Kosti et al., 2019), the multi-label benchmark of paper §4.1: 26 categories, mAP.

The annotation files (the official ``Annotations.mat`` and the preprocessed CSVs) are read by
:mod:`sibnet.data.emotic_annotations`.

One record per annotated person. Face boxes come from the box cache (``python -m sibnet.data.boxes
--dataset emotic``, :mod:`sibnet.data.boxes`); a person missing from it gets the face estimated from the top
of the body box by :func:`~sibnet.data.masking.make_triple`, and is counted in :meth:`EmoticDataset.summary`.
Persons whose categories include a name outside the 26 raise a :class:`DatasetError` naming the entry; when
``val``/``test`` persons lack ``combined_categories``, the union over annotators is used.

**People without labels.** EMOTIC's test split holds people whose consensus (``combined_categories``) is
empty — in the ``.mat`` an empty array, in mat2py's CSV ``[]``. An all-zero target is not "none of the 26":
nobody labelled them. They are left out of every split (so out of every mAP and of training), and counted:
:attr:`EmoticDataset.unlabeled`, ``summary()["unlabeled_people"]``, the evaluation report and the training
summary. The metric is then over the labelled people only.

**Unreadable images** (:mod:`sibnet.data.base`): with ``skip_unreadable=True`` the people whose image the box
cache marks ``"unreadable"`` are dropped and listed in :attr:`~sibnet.data.base.TripleDataset.skipped`;
without it, opening the split raises a :class:`DatasetError` naming them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sibnet.boxes import Box, clip_box, is_empty
from sibnet.data.base import Skipped, TripleDataset, refuse_unreadable
from sibnet.data.boxcache import FALLBACK_SOURCES, BoxJob, EmoticCacheIndex, emotic_key, resolve_box_cache
from sibnet.data.emotic_annotations import (
    SPLITS,
    EmoticAnnotation,
    check_split,
    find_emotic_annotations,
    read_emotic_annotations,
)
from sibnet.data.masking import InputTransform
from sibnet.errors import DatasetError
from sibnet.labels import EMOTIC_CATEGORIES

_CATEGORY_INDEX = {name: i for i, name in enumerate(EMOTIC_CATEGORIES)}
# Image folders live under the data root, or under <data_root>/emotic as the official archive unpacks.
IMAGE_SUBDIRS: tuple[str, ...] = ("", "emotic")


@dataclass(frozen=True, eq=False)
class EmoticRecord:
    """One person as the dataset serves it: annotation, resolved image path, boxes and target."""

    annotation: EmoticAnnotation
    path: Path
    body_box: Box
    face_box: Box | None  # None: not in the box cache; make_triple estimates it from the body
    face_source: str  # cache's face_source, or "missing" when not cached
    target: np.ndarray  # float32 (26,) multi-hot over EMOTIC_CATEGORIES


class EmoticImageRoot:
    """Resolves ``folder/filename`` to a file: ``<data_root>/<folder>/`` or ``<data_root>/emotic/<folder>/``
    (how the official archive unpacks), decided once per folder."""

    def __init__(self, data_root: str | Path) -> None:
        self.data_root = Path(data_root)
        self._bases: dict[str, Path] = {}

    def path(self, folder: str, filename: str) -> Path:
        folder = folder.strip("/")
        base = self._bases.get(folder)
        if base is None:
            base = next(
                (self.data_root / sub for sub in IMAGE_SUBDIRS if (self.data_root / sub / folder).is_dir()),
                self.data_root,
            )
            self._bases[folder] = base
        return base / folder / filename


def multi_hot(categories: Sequence[str]) -> np.ndarray:
    """The float32 (26,) multi-hot target of category names (in ``EMOTIC_CATEGORIES`` order)."""
    target = np.zeros(len(EMOTIC_CATEGORIES), dtype=np.float32)
    for name in categories:
        target[_CATEGORY_INDEX[name]] = 1.0
    return target


class EmoticDataset(TripleDataset):
    """EMOTIC persons as SIB-Net inputs (multi-label over the 26 categories).

    Args:
        data_root: the EMOTIC folder (images under ``<folder>/`` or ``emotic/<folder>/`` inside it).
        split: ``"train"``, ``"val"`` or ``"test"``.
        annotations: None (auto-detect, see :func:`find_emotic_annotations`), a ``.mat``/``.csv`` file or a
            folder holding them.
        boxes: the face-box cache: None → ``<data_root>/sibnet_boxes_emotic.jsonl`` if present (else faces are
            estimated, with a warning); a path → that file (must exist); False → no cache.
        transform: the model's input recipe (``model.config.transform``); default the paper's 224/230.
        train: random crops; None → True for the ``train`` split only.
        seed: seed of the per-item crop generators (see :class:`~sibnet.data.masking.TripleDataset`).
        check_files: verify at construction that every listed image exists (one ``stat`` per image).
        skip_unreadable: skip images that cannot be decoded instead of raising (:mod:`sibnet.data.base`).

    Raises:
        FileNotFoundError: missing data root, annotation file, box cache or images (the message names them).
        DatasetError: malformed annotations, a split without any labelled person, or (without
            ``skip_unreadable``) images the box cache marks unreadable.
    """

    labels = EMOTIC_CATEGORIES
    multi_label = True

    def __init__(
        self,
        data_root: str | Path,
        split: str,
        *,
        annotations: str | Path | None = None,
        boxes: str | Path | bool | None = None,
        transform: InputTransform | None = None,
        train: bool | None = None,
        seed: int = 0,
        check_files: bool = True,
        skip_unreadable: bool = False,
    ) -> None:
        check_split(split)
        super().__init__(
            transform=transform,
            train=split == "train" if train is None else train,
            seed=seed,
            skip_unreadable=skip_unreadable,
        )
        self.data_root = Path(data_root)
        if not self.data_root.is_dir():
            raise FileNotFoundError(f"EMOTIC data root {self.data_root} does not exist or is not a folder")
        self.split = split
        self.annotations_path = find_emotic_annotations(self.data_root, split, annotations)
        people = read_emotic_annotations(self.annotations_path, split)
        labelled = [p for p in people if p.categories]
        self.unlabeled = len(people) - len(labelled)  # left out: see the module docstring
        if not labelled:
            extra = f" ({self.unlabeled} without any category)" if people else ""
            raise DatasetError(f"split {split!r} of {self.annotations_path} has no annotated people{extra}")
        people = labelled
        self.box_cache_path, cache = resolve_box_cache(boxes, self.data_root, "emotic")

        root = EmoticImageRoot(self.data_root)
        index = EmoticCacheIndex(cache)  # the .mat's raw boxes and mat2py's clipped ones find one entry
        records = []
        unreadable: dict[Path, Skipped] = {}
        for person in people:
            cached = index.get(person.folder, person.filename, person.body_box, person.image_size)
            if cached is not None and cached.status == "unreadable":
                path = root.path(person.folder, person.filename)
                unreadable.setdefault(path, Skipped(str(path), cached.error or "unreadable", "box cache"))
                continue
            face = cached.face if cached is not None and cached.status == "ok" else None
            source = (cached.face_source or "missing") if face is not None else "missing"
            records.append(
                EmoticRecord(
                    annotation=person,
                    path=root.path(person.folder, person.filename),
                    body_box=person.body_box,
                    face_box=face,
                    face_source=source,
                    target=multi_hot(person.categories),
                )
            )
        self.skipped = list(unreadable.values())
        if not skip_unreadable:
            refuse_unreadable(self.skipped, split, self.box_cache_path)
        if not records:
            raise DatasetError(
                f"every image of split {split!r} is unreadable according to {self.box_cache_path}"
            )
        self.records: list[EmoticRecord] = records
        if check_files:
            _check_images_exist([r.path for r in records], self.annotations_path, self.data_root)

    def summary(self) -> dict[str, Any]:
        """Counts: people, images, positives per category, where the face boxes came from (``face_sources``
        by cache source; ``faces_estimated_in_cache``: the detector found none; ``faces_missing_from_cache``:
        estimated by :func:`~sibnet.data.masking.make_triple`), and empty annotated body boxes."""
        sources = Counter(r.face_source for r in self.records)
        positives = np.sum([r.target for r in self.records], axis=0)
        empty_bodies = 0
        for r in self.records:
            size = r.annotation.image_size
            box = clip_box(r.body_box, *size) if size else r.body_box
            empty_bodies += is_empty(box)
        return {
            "dataset": "emotic",
            "split": self.split,
            "annotations": str(self.annotations_path),
            "box_cache": str(self.box_cache_path) if self.box_cache_path else None,
            "people": len(self.records),
            "images": len({r.path for r in self.records}),
            "train_mode": self.train,
            "positives": {name: int(n) for name, n in zip(self.labels, positives)},
            "categories_with_positives": int((positives > 0).sum()),
            "face_sources": dict(sources),
            # detected (mtcnn) or ground truth (synthetic) / estimated by the cache builder / not in the cache
            "faces_cached": sum(n for s, n in sources.items() if s not in FALLBACK_SOURCES | {"missing"}),
            "faces_estimated_in_cache": sum(n for s, n in sources.items() if s in FALLBACK_SOURCES),
            "faces_missing_from_cache": sources.get("missing", 0),
            "empty_body_boxes": int(empty_bodies),
            "unlabeled_people": self.unlabeled,  # left out: no category at all
            "skipped_unreadable": len(self.skipped),  # left out: the box cache found the image unreadable
        }


def _check_images_exist(paths: Sequence[Path], listed_in: Path, data_root: Path) -> None:
    unique = list(dict.fromkeys(paths))
    missing = [p for p in unique if not p.is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise FileNotFoundError(
            f"{len(missing)} of {len(unique)} images listed in {listed_in} are missing under {data_root}: {shown}"
        )


def box_jobs(data_root: Path, annotations: str | Path | None = None) -> tuple[list[BoxJob], list[str]]:
    """Every annotated person of every split found, once per cache key, for the box-cache builder."""
    data_root = Path(data_root)
    root = EmoticImageRoot(data_root)
    jobs: dict[str, BoxJob] = {}
    notices: list[str] = []
    found = 0
    for split in SPLITS:
        try:
            path = find_emotic_annotations(data_root, split, annotations)
        except FileNotFoundError as err:
            notices.append(f"split {split} skipped: {err}")
            continue
        if path.suffix.lower() == ".mat" and not _mat_has(path, split):
            notices.append(f"split {split} skipped: {path} has no variable {split!r}")
            continue
        found += 1
        for person in read_emotic_annotations(path, split):
            key = emotic_key(person.folder, person.filename, person.body_box)
            path = root.path(person.folder, person.filename)
            jobs.setdefault(key, BoxJob(key, person.image, path, person.body_box, person.image_size))
    if not found:
        raise FileNotFoundError(f"no EMOTIC annotations found in {data_root}: " + "; ".join(notices))
    return list(jobs.values()), notices


def _mat_has(path: Path, split: str) -> bool:
    """Whether a .mat file holds the split's variable; an unreadable file says yes, so that reading it raises
    the loader's own error naming the file."""
    from scipy.io import whosmat

    try:
        return split in {name for name, _, _ in whosmat(path)}
    except Exception:  # noqa: BLE001 - scipy raises several types for a damaged file; the loader reports it
        return True
