"""EMOTIC's annotation files: the official ``Annotations.mat`` and the preprocessed CSVs, read into one
:class:`EmoticAnnotation` per annotated person (:mod:`sibnet.data.emotic` turns them into dataset records).

Two annotation layouts are read:

- the official ``Annotations/Annotations.mat`` (MATLAB struct arrays ``train``, ``val``, ``test``; read with
  ``scipy.io.loadmat(squeeze_me=True, struct_as_record=False)``). Each entry has ``filename``, ``folder``
  (e.g. ``mscoco/images``), ``image_size`` (``n_col``, ``n_row``), ``original_database`` (``name``,
  ``info``) and ``person``, one struct or an array of them. A person has ``body_bbox`` ``[x1 y1 x2 y2]``,
  ``annotations_categories`` (in ``train`` one struct with ``categories``, one annotator; in ``val``/``test``
  one struct per annotator), ``combined_categories`` (``val``/``test``: the consensus, which we use),
  ``annotations_continuous`` / ``combined_continuous`` (valence, arousal, dominance), ``gender`` and
  ``age``. ``squeeze_me`` turns one-element arrays into scalars (a single category is a ``str``, a single
  person or annotator a struct), so every list-valued field goes through :func:`_items`.
- the widely used preprocessed CSVs of mat2py (``train.csv`` / ``val.csv`` / ``test.csv``, in the root,
  ``Annotations/`` or ``emotic_pre/``) with columns ``Index, Folder, Filename, Image Size, BBox,
  Categorical_Labels, Continuous_Labels, Gender, Age``; list cells are Python literals
  (``"['Engagement', 'Happiness']"``).

Not read: mat2py's other archive, ``annot_arrs_<split>.csv`` (one 0/1 column per category, ``X_min … Y_max``,
``Arr_name`` / ``Crop_name``, the images stored as ``.npy`` arrays of resized crops). Its crops are not the
photos the masking of Eq. 3 needs, so it is refused with a message naming the layouts that work
(:data:`ANNOT_ARRS_REFUSAL`), never half-read.
"""

from __future__ import annotations

import ast
import csv
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sibnet.boxes import Box, as_box
from sibnet.errors import DatasetError
from sibnet.labels import EMOTIC_CATEGORIES

SPLITS: tuple[str, ...] = ("train", "val", "test")
_CATEGORY_INDEX = {name: i for i, name in enumerate(EMOTIC_CATEGORIES)}
# Where an EMOTIC download keeps its annotations, relative to the data root, in the order tried.
MAT_CANDIDATES: tuple[str, ...] = ("Annotations/Annotations.mat", "Annotations.mat")
CSV_CANDIDATES: tuple[str, ...] = ("{split}.csv", "Annotations/{split}.csv", "emotic_pre/{split}.csv")
_CSV_REQUIRED = ("folder", "filename", "bbox", "categorical_labels")
_ANNOT_ARRS_COLUMNS = ("arr_name", "crop_name", "x_min")  # any of them: the annot_arrs archive
ANNOT_ARRS_REFUSAL = (
    "is mat2py's annot_arrs archive (one 0/1 column per category, images as .npy crops), which is not read: "
    "use Annotations/Annotations.mat or mat2py's train.csv / val.csv / test.csv (Folder, Filename, BBox, "
    "Categorical_Labels columns) with the original images"
)


@dataclass(frozen=True, eq=False)
class EmoticAnnotation:
    """One annotated person as the annotation file states it.

    Attributes:
        split: ``"train"``, ``"val"`` or ``"test"``.
        entry: index of the image entry in the split (the CSV's ``Index`` or row number).
        person: index of the person within the image.
        folder: image folder relative to the data root, e.g. ``"mscoco/images"``.
        filename: image file name.
        image_size: ``(width, height)`` as annotated (``n_col``, ``n_row``), or None if absent.
        body_box: the annotated body box ``(x1, y1, x2, y2)``.
        categories: category names, in the order of ``EMOTIC_CATEGORIES``.
        vad: valence, arousal, dominance (NaN where not annotated).
        gender: ``"Male"``/``"Female"`` (empty if absent).
        age: ``"Adult"``/``"Teenager"``/``"Kid"`` (empty if absent).
        database: ``original_database.name`` (empty for CSVs).
    """

    split: str
    entry: int
    person: int
    folder: str
    filename: str
    image_size: tuple[int, int] | None
    body_box: Box
    categories: tuple[str, ...]
    vad: tuple[float, float, float]
    gender: str
    age: str
    database: str = ""

    @property
    def image(self) -> str:
        """The image path relative to the data root, ``folder/filename``."""
        return f"{self.folder.strip('/')}/{self.filename}"


# ----------------------------------------------------------------------------------------------------------
# Reading the annotation files


def _items(value: Any) -> list[Any]:
    """A MATLAB array as a list, whatever ``squeeze_me`` made of it (scalar, struct, str, 0-d or N-d array)."""
    if isinstance(value, np.ndarray):
        return [] if value.size == 0 else list(value.ravel())
    if value is None:
        return []
    return [value]


def _text(value: Any) -> str:
    """A MATLAB char array as a str (empty arrays, the MATLAB ``''``, become "")."""
    if isinstance(value, np.ndarray):
        return "" if value.size == 0 else str(value.ravel()[0])
    return "" if value is None else str(value)


def _number(value: Any) -> float:
    """A MATLAB scalar as float; empty → NaN."""
    if isinstance(value, np.ndarray):
        return float(value.ravel()[0]) if value.size else math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _field(struct: Any, name: str, default: Any = None) -> Any:
    return getattr(struct, name, default)


def _categories(names: Sequence[Any], where: str) -> tuple[str, ...]:
    """Validate category names and put them in the canonical order."""
    clean = {str(n).strip() for n in names if str(n).strip()}
    unknown = sorted(n for n in clean if n not in _CATEGORY_INDEX)
    if unknown:
        raise DatasetError(
            f"{where}: unknown EMOTIC categor{'ies' if len(unknown) > 1 else 'y'} {unknown}; "
            f"expected names from: {', '.join(EMOTIC_CATEGORIES)}"
        )
    return tuple(sorted(clean, key=_CATEGORY_INDEX.__getitem__))


def _vad(struct: Any) -> tuple[float, float, float]:
    return tuple(_number(_field(struct, k)) for k in ("valence", "arousal", "dominance"))  # type: ignore[return-value]


def _mean_vad(structs: list[Any]) -> tuple[float, float, float]:
    """Per-dimension mean over annotators, ignoring missing (NaN) values; NaN where nobody rated."""
    values = np.array([_vad(s) for s in structs], dtype=np.float64).reshape(-1, 3)
    means = []
    for column in values.T:
        rated = column[~np.isnan(column)]
        means.append(float(rated.mean()) if rated.size else math.nan)
    return means[0], means[1], means[2]


def _person_from_mat(split: str, entry: int, p_idx: int, person: Any, meta: dict[str, Any], where: str):
    body = as_box(np.ravel(np.asarray(_field(person, "body_bbox"), dtype=np.float64)))
    combined = _field(person, "combined_categories")
    if combined is not None:
        names = _items(combined)
    else:  # train: one annotator; val/test without the consensus field: union over annotators
        names = [n for a in _items(_field(person, "annotations_categories")) for n in _items(a.categories)]
    combined_vad = _field(person, "combined_continuous")
    if combined_vad is not None and not (isinstance(combined_vad, np.ndarray) and combined_vad.size == 0):
        vad = _vad(combined_vad)
    else:
        vad = _mean_vad(_items(_field(person, "annotations_continuous")))
    return EmoticAnnotation(
        split=split,
        entry=entry,
        person=p_idx,
        body_box=body,
        categories=_categories(names, where),
        vad=vad,
        gender=_text(_field(person, "gender")),
        age=_text(_field(person, "age")),
        **meta,
    )


def read_emotic_mat(path: str | Path, split: str) -> list[EmoticAnnotation]:
    """Read one split of the official ``Annotations.mat``.

    Raises:
        FileNotFoundError: no such file.
        DatasetError: the file is not a MATLAB file, lacks the split, or an entry is malformed or names an
            unknown category (the message names the entry).
    """
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    path = Path(path)
    check_split(split)
    if not path.is_file():
        raise FileNotFoundError(f"EMOTIC annotation file {path} does not exist")
    try:
        # Only the split needed: the real file holds all three (~70 MB of structs).
        mat = loadmat(path, squeeze_me=True, struct_as_record=False, variable_names=[split])
    except (MatReadError, ValueError, OSError) as err:
        raise DatasetError(f"cannot read EMOTIC annotations {path}: {err}") from err
    if split not in mat:
        raise DatasetError(f"{path} has no variable {split!r} (expected the struct arrays train, val, test)")
    out: list[EmoticAnnotation] = []
    for entry, item in enumerate(_items(mat[split])):
        try:
            filename, folder = _text(item.filename), _text(item.folder)
        except AttributeError as err:
            raise DatasetError(f"{path} {split}[{entry}]: not an EMOTIC entry ({err})") from err
        size = _field(item, "image_size")
        image_size = None
        if size is not None and hasattr(size, "n_col"):
            w, h = _number(size.n_col), _number(size.n_row)
            image_size = (int(w), int(h)) if not (math.isnan(w) or math.isnan(h)) else None
        database = _field(item, "original_database")
        meta = dict(
            folder=folder,
            filename=filename,
            image_size=image_size,
            database=_text(_field(database, "name", "")) if database is not None else "",
        )
        for p_idx, person in enumerate(_items(_field(item, "person"))):
            where = f"{path} {split}[{entry}] ({folder}/{filename}) person {p_idx}"
            try:
                out.append(_person_from_mat(split, entry, p_idx, person, meta, where))
            except (AttributeError, ValueError) as err:
                if isinstance(err, DatasetError):
                    raise
                raise DatasetError(f"{where}: malformed person ({err})") from err
    return out


def _literal(cell: str, what: str, where: str) -> Any:
    cell = (cell or "").strip()
    if not cell:
        return None
    try:
        return ast.literal_eval(cell)
    except (ValueError, SyntaxError) as err:
        raise DatasetError(f"{where}: cannot parse {what} {cell!r} ({err})") from err


def _header_key(name: str) -> str:
    return name.strip().lower().replace(" ", "_")


def read_emotic_csv(path: str | Path, split: str) -> list[EmoticAnnotation]:
    """Read one split in the preprocessed CSV layout (one row per person).

    The person index within an image is its order among the rows of that image.

    Raises:
        FileNotFoundError: no such file.
        DatasetError: a required column is missing or a cell cannot be parsed (the message names the row).
    """
    path = Path(path)
    check_split(split)
    if not path.is_file():
        raise FileNotFoundError(f"EMOTIC annotation file {path} does not exist")
    out: list[EmoticAnnotation] = []
    seen: Counter[str] = Counter()
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = {_header_key(h): h for h in reader.fieldnames or []}
        if any(c in header for c in _ANNOT_ARRS_COLUMNS):
            raise DatasetError(f"{path} {ANNOT_ARRS_REFUSAL}")
        missing = [c for c in _CSV_REQUIRED if c not in header]
        if missing:
            raise DatasetError(
                f"{path}: missing column(s) {missing}; expected Index, Folder, Filename, Image Size, BBox, "
                "Categorical_Labels, Continuous_Labels, Gender, Age"
            )
        for row_no, row in enumerate(reader):
            cell = {k: row.get(h) or "" for k, h in header.items()}
            folder, filename = cell["folder"].strip(), cell["filename"].strip()
            where = f"{path} row {row_no + 2} ({folder}/{filename})"  # +2: 1-based, after the header line
            bbox = _literal(cell["bbox"], "BBox", where)
            try:
                body = as_box(bbox if bbox is not None else ())
            except ValueError as err:
                raise DatasetError(f"{where}: bad BBox {cell['bbox']!r}") from err
            cats = _literal(cell["categorical_labels"], "Categorical_Labels", where)
            names = [cats] if isinstance(cats, str) else list(cats or [])
            cont = _literal(cell.get("continuous_labels", ""), "Continuous_Labels", where)
            vad_values = [float(v) for v in (cont or [])][:3]
            vad = tuple(vad_values + [math.nan] * (3 - len(vad_values)))
            size = _literal(cell.get("image_size", ""), "Image Size", where)
            image_size = (
                (int(size[0]), int(size[1])) if isinstance(size, (list, tuple)) and len(size) >= 2 else None
            )
            index_cell = cell.get("index", "").strip()
            image = f"{folder}/{filename}"
            out.append(
                EmoticAnnotation(
                    split=split,
                    entry=int(float(index_cell)) if index_cell else row_no,
                    person=seen[image],
                    folder=folder,
                    filename=filename,
                    image_size=image_size,
                    body_box=body,
                    categories=_categories(names, where),
                    vad=vad,  # type: ignore[arg-type]
                    gender=cell.get("gender", "").strip(),
                    age=cell.get("age", "").strip(),
                )
            )
            seen[image] += 1
    return out


def find_emotic_annotations(data_root: str | Path, split: str, annotations: str | Path | None = None) -> Path:
    """Locate the annotation file for a split.

    Args:
        data_root: the EMOTIC folder.
        split: ``"train"``, ``"val"`` or ``"test"``.
        annotations: None (look in ``data_root`` for :data:`MAT_CANDIDATES`, then :data:`CSV_CANDIDATES`), a
            ``.mat`` file (it holds every split), a folder to look in instead of ``data_root``, or one split's
            CSV named ``train.csv`` / ``val.csv`` / ``test.csv``: a CSV holds one split, so the other splits
            are read from their namesakes beside it, never from the same file.

    Raises:
        FileNotFoundError: nothing found; the message lists where it looked.
        DatasetError: a CSV that does not say which split it holds, or whose sibling for ``split`` is missing.
    """
    check_split(split)
    if annotations is not None:
        given = Path(annotations)
        if given.is_file() and given.suffix.lower() == ".csv":
            return _csv_for_split(given, split)
        if given.is_file():
            return given
        if not given.exists():
            raise FileNotFoundError(f"EMOTIC annotations {given} do not exist")
        base = given
    else:
        base = Path(data_root)
    tried = [base / c for c in MAT_CANDIDATES] + [base / c.format(split=split) for c in CSV_CANDIDATES]
    for candidate in tried:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"no EMOTIC annotations for split {split!r}: looked for "
        + ", ".join(str(t) for t in tried)
        + " (the official Annotations/Annotations.mat or the preprocessed CSVs)"
    )


def _csv_for_split(given: Path, split: str) -> Path:
    """The CSV of ``split`` given one split's CSV: itself, or its namesake beside it (train/val/test.csv)."""
    stem = given.stem.lower()
    if stem == split:
        return given
    if stem not in SPLITS:
        raise DatasetError(
            f"{given}: a CSV annotation file holds one split, and this name says none; name the files "
            "train.csv, val.csv and test.csv side by side and pass one of them or their folder"
        )
    sibling = given.with_name(f"{split}{given.suffix}")
    if not sibling.is_file():
        raise DatasetError(
            f"{given} holds the {stem} split only, and {sibling} (the {split} split) does not exist: splits are "
            "never read from one file"
        )
    return sibling


def read_emotic_annotations(path: str | Path, split: str) -> list[EmoticAnnotation]:
    """Read a split from a ``.mat`` or ``.csv`` annotation file (chosen by the suffix)."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return read_emotic_csv(path, split)
    return read_emotic_mat(path, split)


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown EMOTIC split {split!r}; expected one of {SPLITS}")
