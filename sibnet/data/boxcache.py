"""The box-cache format: the face and body boxes a dataset lacks, detected once (paper §4.2, DESIGN.md §1).

:mod:`sibnet.data.boxes` builds the cache (``python -m sibnet.data.boxes``); the datasets read it through
:func:`resolve_box_cache`. This module is the format alone, so readers and the builder share it without the
builder's detectors or the datasets' loaders.

The cache: JSON lines, UTF-8, default ``<data_root>/sibnet_boxes_<dataset>.jsonl``
(:func:`default_cache_path`). The first line is a header ``{"sibnet_box_cache": 1, "dataset": ...}``;
every other line is one item::

    {"key": ..., "image": "<path relative to data_root>", "status": "ok" | "unreadable",
     "face": [x1, y1, x2, y2] | null, "face_source": "mtcnn" | "estimated" | "central" | "synthetic",
     "face_prob": float | null, "body": [x1, y1, x2, y2] | null,
     "body_source": "annotation" | "yolo" | "estimated" | "central" | "synthetic", "error": str?}

Keys: EMOTIC ``"<folder>/<filename>@<x1>,<y1>,<x2>,<y2>"`` (the person's body box as the annotation file that
built the cache states it, ``%g``; :func:`emotic_key`); CAER-S the image path relative to the data root,
``"train/Angry/0001.png"`` (:func:`caer_key`). Coordinates are image pixels, the same raw pixel order the
datasets read (no EXIF rotation, like MATLAB's ``imread``). ``"size": [width, height]`` (optional: caches
written before it have none) is the decoded image's size.

One cache serves both EMOTIC layouts. The ``.mat`` keeps boxes that run past the image edge; mat2py's CSVs
clip them to the image, and their person order need not be the ``.mat``'s, so neither the raw box nor the
person index is a key both layouts share. :class:`EmoticCacheIndex` looks a person up by the exact key first,
then among the entries of the same image by the body box **clipped to the image** (``[0, width] x [0, height]``,
the person's annotated image size, else the entry's ``size``): the entry whose clipped box agrees within
:data:`EMOTIC_BOX_TOLERANCE` px on every coordinate (the closest if several), which also absorbs a clip to
``width - 1`` and the cache's 0.01 px rounding. Two people of one image whose clipped boxes agree to a pixel
would share a face; EMOTIC has none we know of.

A key written twice: the last line wins.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sibnet.boxes import Box, as_box, clip_box, normalize_box
from sibnet.errors import DatasetError

log = logging.getLogger(__name__)

CACHE_VERSION = 1
# Face sources that are a fallback rather than a detection (or the generator's ground truth).
FALLBACK_SOURCES: frozenset[str] = frozenset({"estimated", "central"})
# Two body boxes of one EMOTIC image are the same person when, clipped to the image, every coordinate agrees
# within this many pixels (see the module docstring).
EMOTIC_BOX_TOLERANCE = 1.0


@dataclass(frozen=True)
class BoxJob:
    """One item the builder detects boxes for: an EMOTIC person or a CAER-S frame."""

    key: str  # the cache key (:func:`emotic_key`, :func:`caer_key`)
    image: str  # the image path relative to the data root
    path: Path  # the image file
    body: Box | None = None  # EMOTIC: the annotated body box (faces are searched inside it)
    size: tuple[int, int] | None = None  # EMOTIC: the annotated image size (width, height), if any


def default_cache_path(data_root: str | Path, dataset: str) -> Path:
    """``<data_root>/sibnet_boxes_<dataset>.jsonl``, where the CLI writes and the datasets look."""
    return Path(data_root) / f"sibnet_boxes_{dataset}.jsonl"


def emotic_key(folder: str, filename: str, body_box: Sequence[float]) -> str:
    """Cache key of an EMOTIC person: its image and annotated body box (``%g``, so 86.0 and 86 agree)."""
    coords = ",".join(f"{v:g}" for v in as_box(body_box))
    return f"{folder.strip('/')}/{filename}@{coords}"


def split_emotic_key(key: str) -> tuple[str, Box] | None:
    """``(image, body box)`` of an EMOTIC key, or None for a key of another form."""
    image, sep, coords = key.rpartition("@")
    if not sep:
        return None
    try:
        return image, as_box(coords.split(","))
    except ValueError:
        return None


def caer_key(relative_path: str | Path) -> str:
    """Cache key of a CAER-S frame: its path relative to the data root, with forward slashes."""
    return Path(relative_path).as_posix()


@dataclass(frozen=True)
class CachedBoxes:
    """One item of the box cache."""

    face: Box | None
    body: Box | None
    face_source: str | None = None
    body_source: str | None = None
    face_prob: float | None = None
    status: str = "ok"
    error: str | None = None
    size: tuple[int, int] | None = None  # (width, height) of the decoded image, when the builder recorded it

    @property
    def face_is_fallback(self) -> bool:
        return self.face_source in FALLBACK_SOURCES


def _box_or_none(value: Any) -> Box | None:
    return None if value is None else as_box(value)


def _size_or_none(value: Any) -> tuple[int, int] | None:
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    return None


class EmoticCacheIndex:
    """EMOTIC lookups in a read cache that survive mat2py's clipping (see the module docstring)."""

    def __init__(self, entries: dict[str, CachedBoxes]) -> None:
        self.entries = entries
        self._by_image: dict[str, list[tuple[Box, str]]] = {}
        for key in entries:
            parsed = split_emotic_key(key)
            if parsed is not None:
                self._by_image.setdefault(parsed[0], []).append((parsed[1], key))

    def key_for(
        self, folder: str, filename: str, body_box: Sequence[float], image_size: tuple[int, int] | None = None
    ) -> str | None:
        """The cache key of this person: the exact key, else the same image's entry whose body box agrees
        within :data:`EMOTIC_BOX_TOLERANCE` px once both are clipped to the image; None if no entry does."""
        exact = emotic_key(folder, filename, body_box)
        if exact in self.entries:
            return exact
        best: tuple[float, str] | None = None
        for box, key in self._by_image.get(f"{folder.strip('/')}/{filename}", ()):
            size = image_size or self.entries[key].size
            a = clip_box(body_box, *size) if size else normalize_box(body_box)
            b = clip_box(box, *size) if size else normalize_box(box)
            gap = max(abs(u - v) for u, v in zip(a, b))
            if gap <= EMOTIC_BOX_TOLERANCE and (best is None or gap < best[0]):
                best = (gap, key)
        return None if best is None else best[1]

    def get(
        self, folder: str, filename: str, body_box: Sequence[float], image_size: tuple[int, int] | None = None
    ) -> CachedBoxes | None:
        """The cached boxes of this person (see :meth:`key_for`), or None."""
        key = self.key_for(folder, filename, body_box, image_size)
        return None if key is None else self.entries[key]


def read_box_cache(path: str | Path, dataset: str | None = None) -> dict[str, CachedBoxes]:
    """Read a box cache (see the module docstring for the format); the last line of a key wins.

    Args:
        path: the ``.jsonl`` file.
        dataset: when given, the header must name this dataset.

    Raises:
        FileNotFoundError: no such file.
        DatasetError: the header names another dataset, or the file is not a box cache.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"box cache {path} does not exist; build it with `python -m sibnet.data.boxes`"
        )
    entries: dict[str, CachedBoxes] = {}
    bad = 0
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                bad += 1  # a line cut short by a killed run; the builder rewrites it on resume
                continue
            if "sibnet_box_cache" in item:
                if dataset is not None and item.get("dataset") != dataset:
                    raise DatasetError(
                        f"box cache {path} is for dataset {item.get('dataset')!r}, not {dataset!r}"
                    )
                continue
            if "key" not in item:
                raise DatasetError(f"{path} line {line_no}: not a box-cache entry (no 'key')")
            entries[item["key"]] = CachedBoxes(
                face=_box_or_none(item.get("face")),
                body=_box_or_none(item.get("body")),
                face_source=item.get("face_source"),
                body_source=item.get("body_source"),
                face_prob=item.get("face_prob"),
                status=item.get("status", "ok"),
                error=item.get("error"),
                size=_size_or_none(item.get("size")),
            )
    if bad:
        log.warning("box cache %s: skipped %d unparsable line(s)", path, bad)
    return entries


def resolve_box_cache(
    boxes: str | Path | bool | None, data_root: str | Path, dataset: str
) -> tuple[Path | None, dict[str, CachedBoxes]]:
    """The cache a dataset uses: None → the default file if present (else none, with a warning); False →
    none; a path → that file, which must exist."""
    if boxes is False:
        return None, {}
    if boxes is None:
        path = default_cache_path(data_root, dataset)
        if not path.is_file():
            log.warning(
                "no box cache at %s: the documented fallback boxes are used; build it with "
                "`python -m sibnet.data.boxes --dataset %s --data-root %s`",
                path,
                dataset,
                data_root,
            )
            return None, {}
        return path, read_box_cache(path, dataset=dataset)
    path = Path(boxes)
    return path, read_box_cache(path, dataset=dataset)


def write_cache_header(f: Any, dataset: str) -> None:
    f.write(json.dumps({"sibnet_box_cache": CACHE_VERSION, "dataset": dataset}) + "\n")


def cache_line(
    key: str,
    image: str,
    *,
    face: Sequence[float] | None,
    face_source: str | None,
    body: Sequence[float] | None,
    body_source: str | None,
    face_prob: float | None = None,
    status: str = "ok",
    error: str | None = None,
    size: tuple[int, int] | None = None,
) -> str:
    """One cache entry as a JSON line (coordinates rounded to 0.01 px; ``size`` the image's (width, height))."""

    def rounded(box: Sequence[float] | None) -> list[float] | None:
        return None if box is None else [round(float(v), 2) for v in box]

    item: dict[str, Any] = {
        "key": key,
        "image": image,
        "status": status,
        "face": rounded(face),
        "face_source": face_source,
        "face_prob": None if face_prob is None else round(float(face_prob), 5),
        "body": rounded(body),
        "body_source": body_source,
    }
    if size is not None:
        item["size"] = [int(size[0]), int(size[1])]
    if error is not None:
        item["error"] = error
    return json.dumps(item) + "\n"
