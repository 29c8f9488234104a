"""Planted-cue data in the real EMOTIC and CAER-S on-disk formats, for tests and CPU-sized experiments.

Neither benchmark can be downloaded here (DESIGN.md §4), yet training, evaluation and the branch CAMs
(paper §3, §4) must be exercised end to end, through the very loaders and masking (Eq. 3) the real data
goes through. So this module writes small datasets whose label is decided by a *visual cue planted in one
known region* — the face, the body outside the face, or the scene outside the body — and records where::

    python -m sibnet.data.synthetic --format emotic --out DIR [--n-train N --n-val N --n-test N --size PX --seed S]

Each image: a textured background with muted clutter shapes, a person-like layout (a body rectangle of
clothing texture, a skin-coloured face ellipse at its top, both jittered in size and position), and

- **cues**: a solid square in a class's colour (:data:`PALETTE`), sized to its region (60-70 % of the face
  side, about half the body width, 26-32 % of the image's short side in the scene), so it survives the
  branch resize to 64-96 px;
- **distractors** (``--distractors``, default 1): thin rings in the colours of classes the person does *not*
  have, anywhere; with the muted clutter they make a colour histogram of the whole photo insufficient — the
  model has to find the filled square, in the region the branch sees.

Learnability, measured (3 ResNet-18 branches from scratch + a linear head on the concatenated features,
Adam 1e-3, batch 32, 64 px branch inputs, defaults: 240 train frames, 2 CPU threads): CAER-S test accuracy
0.72-0.77 after 7-8 epochs (chance 0.14), per cue region about 0.9 face, 0.95 body, 0.4 scene; the scene,
which sees the whole photo, is the slowest to learn. With ``--distractors 0`` it is easier still.

Formats:

- ``emotic``: the planted classes are :data:`EMOTIC_PLANTED` (5 of the 26 categories; targets are still
  26-dim, so compute mAP over categories with positives). Each person has 1-2 cues in different regions.
  About :data:`TWO_PEOPLE_FRACTION` of the images hold two people with the same label set, each with
  their cues on face or body (each one's cues are then the other's scene cues, recorded as such, with
  ``"other_person": true``). Writes
  ``Annotations/Annotations.mat`` laid out as the real file (``train``: one annotator struct per person;
  ``val``/``test``: 1-3 annotator structs, sometimes with an extra non-planted category, and the consensus
  ``combined_categories``/``combined_continuous``; ``image_size``, ``original_database``, ``gender``, ``age``;
  valence/arousal/dominance are random, unrelated to the cues), the CSV layout under ``emotic_pre/``,
  and JPEGs under ``mscoco/images/`` and ``emodb_small/images/``. The first images of every split are fixed
  to cover ``squeeze_me``'s edge cases: two people, a single category, a single annotator.
- ``caer``: all 7 classes, one cue per frame, classes balanced; PNGs in ``train/<Class>/`` (``n_train +
  n_val`` frames: CAER-S has no validation folder, the loader carves it, so pass ``val_fraction = n_val /
  (n_train + n_val)`` for exactly ``n_val``) and ``test/<Class>/``; the anger folder is ``Angry`` in train and
  ``Anger`` in test, as in the release.

Both write the box cache the loaders read (``sibnet_boxes_<format>.jsonl``, the true boxes with source
``"synthetic"``) and ``cues.json``: per person, its labels, face and body boxes, every cue's label, region and
rectangle (image pixels, ``x2``/``y2`` exclusive), and the distractors. Deterministic given ``--seed``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sibnet.data.boxcache import cache_line, caer_key, default_cache_path, emotic_key, write_cache_header
from sibnet.data.masking import BRANCHES
from sibnet.labels import CAER_CLASSES, EMOTIC_CATEGORIES

# Saturated colours, far from the muted background/clothing palette and from skin tones.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 25),  # red
    (30, 200, 40),  # green
    (30, 70, 240),  # blue
    (245, 225, 20),  # yellow
    (225, 30, 225),  # magenta
    (20, 220, 230),  # cyan
    (255, 128, 0),  # orange
)
EMOTIC_PLANTED: tuple[str, ...] = ("Anger", "Engagement", "Fear", "Happiness", "Sadness")
REGIONS: tuple[str, ...] = BRANCHES  # a cue sits in the region one branch sees
TWO_PEOPLE_FRACTION = 0.15
SKIN: tuple[tuple[int, int, int], ...] = ((228, 190, 160), (205, 155, 115), (165, 115, 85), (115, 80, 60))
GENDERS = ("Male", "Female")
AGES = ("Adult", "Teenager", "Kid")
CSV_COLUMNS = (
    "Index",
    "Folder",
    "Filename",
    "Image Size",
    "BBox",
    "Categorical_Labels",
    "Continuous_Labels",
    "Gender",
    "Age",
)
EMOTIC_FOLDERS = (("mscoco/images", "mscoco", 0.7), ("emodb_small/images", "emodb_small", 0.3))

Rect = tuple[int, int, int, int]


@dataclass
class SyntheticInfo:
    """What a generator wrote."""

    format: str
    out: Path
    counts: dict[str, int]  # persons (emotic) or frames (caer) per split
    images: int
    classes: tuple[str, ...]
    seconds: float
    annotations: Path | None = None  # emotic .mat
    csv_dir: Path | None = None  # emotic CSV layout
    box_cache: Path | None = None
    cues: Path | None = None


# ----------------------------------------------------------------------------------------------------------
# Drawing


def _overlaps(a: Rect, b: Rect, pad: int = 2) -> bool:
    return a[0] < b[2] + pad and b[0] < a[2] + pad and a[1] < b[3] + pad and b[1] < a[3] + pad


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Muted base colour + low-frequency blotches + pixel noise + a few muted clutter shapes."""
    base = rng.uniform(70, 150) + rng.uniform(-20, 20, size=3)
    low = np.asarray(
        Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize(
            (width, height), Image.BICUBIC
        ),
        dtype=np.float32,
    )
    # float32 throughout: the pixel noise is most of the drawing time.
    img = rng.standard_normal((height, width, 3), dtype=np.float32)
    img *= 8
    img += (low - 128) * 0.2 + base.astype(np.float32)
    for _ in range(int(rng.integers(3, 7))):
        colour = rng.uniform(50, 170) + rng.uniform(-25, 25, size=3)
        w, h = (int(v) for v in rng.integers(max(width // 12, 3), max(width // 4, 4), size=2))
        x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        if rng.random() < 0.5:
            img[y : y + h, x : x + w] = colour
        else:
            d = min(w, h)
            _disc(img, (x, y, x + d, y + d), colour)
    return img


def _disc(img: np.ndarray, rect: Rect, colour: Any, inner: float = 0.0) -> None:
    """Fill the disc inscribed in ``rect`` (a ring when ``inner`` > 0: the inner radius fraction is empty)."""
    x1, y1, x2, y2 = rect
    yy, xx = np.mgrid[y1:y2, x1:x2]
    cx, cy, r = (x1 + x2 - 1) / 2, (y1 + y2 - 1) / 2, (min(x2 - x1, y2 - y1)) / 2
    d = np.hypot(xx - cx, yy - cy)
    mask = (d <= r) & (d >= r * inner)
    img[y1:y2, x1:x2][mask] = colour


def _person(rng: np.random.Generator, img: np.ndarray, body: Rect, face: Rect) -> None:
    bx1, by1, bx2, by2 = body
    clothing = rng.uniform(40, 120) + rng.uniform(-20, 20, size=3)
    h, w = by2 - by1, bx2 - bx1
    stripes = np.sin(np.arange(w) / max(w, 1) * np.pi * rng.integers(1, 4))[None, :, None] * 10
    img[by1:by2, bx1:bx2] = clothing + stripes + 6 * rng.standard_normal((h, w, 3), dtype=np.float32)
    skin = np.array(SKIN[int(rng.integers(len(SKIN)))], dtype=np.float32) + rng.uniform(-10, 10, size=3)
    fx1, fy1, fx2, fy2 = face
    hair = rng.uniform(20, 70, size=3)
    img[fy1 : fy1 + max((fy2 - fy1) // 5, 1), fx1:fx2] = hair
    inset = max((fx2 - fx1) // 10, 1)
    _disc(img, (fx1 + inset, fy1 + inset, fx2 - inset, fy2), skin)
    # Ellipse-ish: widen the disc a little vertically with a second disc.
    _disc(img, (fx1 + inset, fy1 + 2 * inset, fx2 - inset, fy2), skin)


def _layout(rng: np.random.Generator, width: int, height: int, people: int) -> list[tuple[Rect, Rect]]:
    """``(body, face)`` rectangles, jittered; two people stand side by side without overlapping."""
    out: list[tuple[Rect, Rect]] = []
    slots = [(0.0, 1.0)] if people == 1 else [(0.0, 0.5), (0.5, 1.0)]
    for lo, hi in slots:
        span = (hi - lo) * width
        bw = int(width * rng.uniform(0.26, 0.36) * (0.9 if people == 2 else 1.0))
        bh = int(height * rng.uniform(0.6, 0.85))
        bx1 = int(lo * width + rng.uniform(0.02, 0.98) * max(span - bw, 1))
        bx1 = min(max(bx1, 1), width - bw - 1)
        by1 = int(height * rng.uniform(0.06, 0.3))
        by2 = min(by1 + bh, height - 1)
        fs = int(min(bw * rng.uniform(0.45, 0.6), (by2 - by1) * 0.32))
        fx1 = int(bx1 + (bw - fs) / 2 + rng.uniform(-0.1, 0.1) * bw)
        fx1 = min(max(fx1, bx1), bx1 + bw - fs)
        fy1 = int(by1 + rng.uniform(0.0, 0.05) * (by2 - by1))
        out.append(((bx1, by1, bx1 + bw, by2), (fx1, fy1, fx1 + fs, fy1 + fs)))
    return out


def _place(
    rng: np.random.Generator,
    side: int,
    area: Rect,
    avoid: Sequence[Rect],
    tries: int = 40,
) -> Rect | None:
    """A ``side`` x ``side`` square inside ``area``, overlapping none of ``avoid``; None if none found."""
    x1, y1, x2, y2 = area
    if x2 - x1 < side or y2 - y1 < side:
        return None
    for _ in range(tries):
        x = int(rng.integers(x1, x2 - side + 1))
        y = int(rng.integers(y1, y2 - side + 1))
        rect = (x, y, x + side, y + side)
        if not any(_overlaps(rect, a) for a in avoid):
            return rect
    return None


def _region_spot(
    rng: np.random.Generator,
    region: str,
    body: Rect,
    face: Rect,
    width: int,
    height: int,
    avoid: list[Rect],
    scale: float = 1.0,
) -> Rect | None:
    """A cue-sized square in a region of one person: inside the face, in the body below the face, or in the
    scene outside every body (the bodies are in ``avoid``)."""
    bx1, _by1, bx2, by2 = body
    fx1, fy1, fx2, fy2 = face
    if region == "face":
        fs = fx2 - fx1
        side = max(int(fs * rng.uniform(0.6, 0.7) * scale), 3)
        pad = max(fs // 12, 1)
        return _place(rng, side, (fx1 + pad, fy1 + pad, fx2 - pad, fy2 - pad), avoid)
    if region == "body":
        side = max(int(min((bx2 - bx1) * rng.uniform(0.45, 0.55), (by2 - fy2) * 0.7) * scale), 3)
        pad = max((bx2 - bx1) // 12, 1)
        return _place(rng, side, (bx1 + pad, fy2 + pad, bx2 - pad, by2 - pad), avoid)
    side = max(int(min(width, height) * rng.uniform(0.26, 0.32) * scale), 3)
    return _place(rng, side, (1, 1, width - 1, height - 1), avoid)


def _check_regions(cue_regions: Sequence[str]) -> None:
    bad = [r for r in cue_regions if r not in REGIONS]
    if bad or not cue_regions:
        raise ValueError(f"cue regions must be drawn from {REGIONS}, got {list(cue_regions)}")


SCENE_CUE_NOTE = """Scene cues are 26-32 % of the image's short side, which after the scene branch's resize is a
far smaller share of its input than a face cue is of the face crop (60-70 % of the face). A scene-only ResNet-18
from scratch (64 px inputs, 150 scene-cue frames, 8 epochs) reached 0.73 accuracy with them (0.88 with cues 1.6×
larger, an experiment not kept); the CAM-faithfulness test therefore plants face and body cues only
(``cue_regions``), and ``make bench-cam`` reports the scene branch."""


def _cue_labels(labels: Sequence[int], repeat_single: bool) -> list[int]:
    """The cues to plant for a person: one per label, or, with ``repeat_single``, a one-label person's cue twice
    (in two different regions).

    Measured (CAER-S format, SIB-Net from scratch on 2 CPU cores): with one cue per person, people whose only cue
    lies in the scene are learned far slower than the others (after 10 epochs of 420 frames, ~5 minutes, val
    accuracy 0.86; by region face 1.0, body 0.96, scene 0.55); with the cue twice, 0.92-0.99 after 2-3 epochs.
    Every region still carries cues, and multi-label people are unchanged. Tests use it to fit their budget.
    """
    labels = list(labels)
    return [*labels, *labels] if repeat_single and len(labels) == 1 else labels


def _draw_scene(
    rng: np.random.Generator,
    width: int,
    height: int,
    label_sets: Sequence[Sequence[int]],
    n_classes: int,
    distractors: int,
    one_cue_per_region: bool,
    cue_regions: Sequence[str] = REGIONS,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Draw one image: background, people, cues, distractors. Returns the image and one record per person
    with ``body``, ``face``, ``cues`` (own and, for two people, the other's as scene cues), ``distractors``."""
    img = _background(rng, width, height)
    layout = _layout(rng, width, height, len(label_sets))
    for body, face in layout:
        _person(rng, img, body, face)
    bodies = [b for b, _ in layout]
    occupied: list[Rect] = []
    people: list[dict[str, Any]] = [{"body": b, "face": f, "cues": [], "distractors": []} for b, f in layout]
    two = len(layout) == 2
    for p, ((body, face), labels) in enumerate(zip(layout, label_sets)):
        # Two people: cues on face/body only (the scene of one is the other person).
        choices = [r for r in (("face", "body") if two else REGIONS) if r in cue_regions]
        regions = list(rng.choice(choices, size=len(labels), replace=False)) if one_cue_per_region else []
        for k, label in enumerate(labels):
            region = str(regions[k]) if regions else str(rng.choice(choices))
            # Scene cues avoid the bodies; face/body cues avoid each other only.
            avoid = occupied + (bodies if region == "scene" else [])
            if region == "body":
                avoid = [*avoid, face]
            rect = _region_spot(rng, region, body, face, width, height, avoid)
            if rect is None and region == "scene":  # no room outside the body: fall back to the body
                region = "body"
                rect = _region_spot(rng, region, body, face, width, height, [*occupied, face])
            if rect is None:
                raise RuntimeError("synthetic layout left no room for a cue; increase --size")
            img[rect[1] : rect[3], rect[0] : rect[2]] = PALETTE[label]
            occupied.append(rect)
            people[p]["cues"].append({"label": int(label), "region": region, "box": list(rect)})
    if two:  # each person's cues lie in the other's scene
        for p, q in ((0, 1), (1, 0)):
            people[p]["cues"] += [
                {**c, "region": "scene", "other_person": True}
                for c in people[q]["cues"]
                if not c.get("other_person")
            ]
    absent = [c for c in range(n_classes) if all(c not in labels for labels in label_sets)]
    for _ in range(distractors if absent else 0):
        colour = int(rng.choice(absent))
        for region in rng.permutation(REGIONS):
            p = int(rng.integers(len(layout)))
            body, face = layout[p]
            avoid = occupied + (bodies if region == "scene" else []) + ([face] if region == "body" else [])
            rect = _region_spot(rng, str(region), body, face, width, height, avoid, scale=1.1)
            if rect is not None:
                _disc(img, rect, PALETTE[colour], inner=0.7)
                occupied.append(rect)
                for person in people:
                    where = _region_of(rect, person["body"], person["face"])
                    person["distractors"].append({"colour_of": colour, "region": where, "box": list(rect)})
                break
    return np.clip(img, 0, 255).astype(np.uint8), people


def _region_of(rect: Rect, body: Rect, face: Rect) -> str:
    cx, cy = (rect[0] + rect[2]) / 2, (rect[1] + rect[3]) / 2
    inside = lambda r: r[0] <= cx < r[2] and r[1] <= cy < r[3]  # noqa: E731
    return "face" if inside(face) else "body" if inside(body) else "scene"


# ----------------------------------------------------------------------------------------------------------
# MATLAB struct arrays, laid out as EMOTIC's Annotations.mat


def _struct_array(items: Sequence[dict[str, Any]]) -> np.ndarray:
    """A 1 x N MATLAB struct array (savemat writes numpy structured arrays of objects as structs)."""
    names = list(items[0])
    arr = np.empty((1, len(items)), dtype=[(n, object) for n in names])
    for i, item in enumerate(items):
        for n in names:
            arr[0, i][n] = item[n]
    return arr


def _cell(strings: Sequence[str]) -> np.ndarray:
    """A 1 x K MATLAB cell array of strings."""
    arr = np.empty((1, len(strings)), dtype=object)
    for i, s in enumerate(strings):
        arr[0, i] = s
    return arr


def _vad_struct(v: float, a: float, d: float) -> np.ndarray:
    return _struct_array([{"valence": float(v), "arousal": float(a), "dominance": float(d)}])


def _emotic_person(
    rng: np.random.Generator, split: str, body: Rect, names: list[str], annotators: int
) -> tuple[dict[str, Any], tuple[float, float, float]]:
    bbox = np.array([body], dtype=np.float64)
    gender, age = str(rng.choice(GENDERS)), str(rng.choice(AGES))
    if split == "train":
        vad = tuple(float(x) for x in rng.integers(1, 11, size=3))
        return {
            "body_bbox": bbox,
            "annotations_categories": _struct_array([{"categories": _cell(names)}]),
            "annotations_continuous": _vad_struct(*vad),
            "gender": gender,
            "age": age,
        }, vad  # type: ignore[return-value]
    others = [c for c in EMOTIC_CATEGORIES if c not in EMOTIC_PLANTED]
    per_annotator = []
    for _ in range(annotators):
        cats = list(names)
        if len(cats) > 1 and rng.random() < 0.3:
            cats.pop(int(rng.integers(len(cats))))
        if rng.random() < 0.3:
            cats.append(str(rng.choice(others)))
        per_annotator.append(cats)
    vads = rng.integers(1, 11, size=(annotators, 3)).astype(np.float64)
    combined = tuple(float(x) for x in vads.mean(axis=0))
    return {
        "body_bbox": bbox,
        "annotations_categories": _struct_array([{"categories": _cell(c)} for c in per_annotator]),
        "annotations_continuous": _struct_array(
            [{"valence": v, "arousal": a, "dominance": d} for v, a, d in vads]
        ),
        "combined_categories": _cell(names),
        "combined_continuous": _vad_struct(*combined),
        "gender": gender,
        "age": age,
    }, combined  # type: ignore[return-value]


def _split_sizes(n_train: int, n_val: int, n_test: int) -> dict[str, int]:
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    if any(n < 1 for n in sizes.values()):
        raise ValueError(f"every split needs at least one image, got {sizes}")
    return sizes


def make_synthetic_emotic(
    out: str | Path,
    *,
    n_train: int = 240,
    n_val: int = 60,
    n_test: int = 60,
    size: int = 192,
    seed: int = 0,
    distractors: int = 1,
    write_csv: bool = True,
    repeat_single_cues: bool = False,
    cue_regions: Sequence[str] = REGIONS,
) -> SyntheticInfo:
    """Write a planted-cue dataset in EMOTIC's layout (see the module docstring). Sizes count images.

    ``repeat_single_cues`` plants a one-label person's cue in two regions instead of one (see
    :func:`_cue_labels`); ``cue_regions`` limits where cues go (default: face, body and scene; see
    :data:`SCENE_CUE_NOTE`).
    """
    _check_regions(cue_regions)
    from scipy.io import savemat

    started = time.perf_counter()
    out = Path(out)
    sizes = _split_sizes(n_train, n_val, n_test)
    if size < 96:
        raise ValueError(f"--size must be at least 96 px for the cues to fit, got {size}")
    planted = [EMOTIC_CATEGORIES.index(c) for c in EMOTIC_PLANTED]
    mat: dict[str, np.ndarray] = {}
    csv_rows: dict[str, list[list[Any]]] = {}
    cache_lines: list[str] = []
    cue_items: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    n_images = 0
    for split_id, (split, n) in enumerate(sizes.items()):
        entries, rows = [], []
        for idx in range(n):
            rng = np.random.default_rng([seed, 1, split_id, idx])
            # The first images cover squeeze_me's edge cases: two people; one category and one annotator;
            # two categories and three annotators.
            people = 2 if idx == 0 else 1 if idx < 3 else (2 if rng.random() < TWO_PEOPLE_FRACTION else 1)
            n_labels = 1 if idx == 1 else 2 if idx == 2 else int(rng.choice([1, 2], p=[0.6, 0.4]))
            labels = sorted(int(c) for c in rng.choice(len(planted), size=n_labels, replace=False))
            width = size
            height = round(size * rng.uniform(0.75, 1.0))
            img, persons = _draw_scene(
                rng,
                width,
                height,
                [_cue_labels(labels, repeat_single_cues)] * people,
                len(planted),
                distractors,
                True,
                cue_regions,
            )
            folder, database, _ = EMOTIC_FOLDERS[0 if rng.random() < EMOTIC_FOLDERS[0][2] else 1]
            stem = "COCO_synth" if database == "mscoco" else "emodb"
            filename = f"{stem}_{split}_{idx:06d}.jpg"
            (out / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(out / folder / filename, quality=95)
            n_images += 1
            names = [EMOTIC_PLANTED[c] for c in labels]
            person_structs = []
            for p, person in enumerate(persons):
                annotators = 1 if idx == 1 else 3 if idx == 2 else int(rng.integers(1, 4))
                struct, vad = _emotic_person(rng, split, person["body"], names, annotators)
                person_structs.append(struct)
                rows.append(
                    [
                        idx,
                        folder,
                        filename,
                        str([width, height]),
                        str(list(person["body"])),
                        str(names),
                        str([round(v, 4) for v in vad]),
                        struct["gender"],
                        struct["age"],
                    ]
                )
                key = emotic_key(folder, filename, person["body"])
                cache_lines.append(
                    cache_line(
                        key,
                        f"{folder}/{filename}",
                        face=person["face"],
                        face_source="synthetic",
                        body=person["body"],
                        body_source="annotation",
                    )
                )
                cue_items.append(
                    {
                        "split": split,
                        "entry": idx,
                        "person": p,
                        "image": f"{folder}/{filename}",
                        "key": key,
                        "labels": names,
                        "face_box": list(person["face"]),
                        "body_box": list(person["body"]),
                        "cues": [{**c, "label": EMOTIC_PLANTED[c["label"]]} for c in person["cues"]],
                        "distractors": [
                            {**d, "colour_of": EMOTIC_PLANTED[d["colour_of"]]} for d in person["distractors"]
                        ],
                    }
                )
            info = {"image_id": float(split_id * 100000 + idx)}
            entries.append(
                {
                    "filename": filename,
                    "folder": folder,
                    "image_size": _struct_array([{"n_col": float(width), "n_row": float(height)}]),
                    "original_database": _struct_array([{"name": database, "info": _struct_array([info])}]),
                    "person": _struct_array(person_structs),
                }
            )
        mat[split] = _struct_array(entries)
        csv_rows[split] = rows
        counts[split] = len(rows)

    annotations = out / "Annotations" / "Annotations.mat"
    annotations.parent.mkdir(parents=True, exist_ok=True)
    savemat(annotations, mat, do_compression=True, oned_as="row")
    csv_dir = None
    if write_csv:
        csv_dir = out / "emotic_pre"
        csv_dir.mkdir(parents=True, exist_ok=True)
        for split, rows in csv_rows.items():
            with (csv_dir / f"{split}.csv").open("w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow(CSV_COLUMNS)
                writer.writerows(rows)
    classes = EMOTIC_PLANTED
    box_cache, cues = _write_common(out, "emotic", cache_lines, cue_items, classes, seed, distractors)
    return SyntheticInfo(
        format="emotic",
        out=out,
        counts=counts,
        images=n_images,
        classes=classes,
        seconds=time.perf_counter() - started,
        annotations=annotations,
        csv_dir=csv_dir,
        box_cache=box_cache,
        cues=cues,
    )


def caer_folder(class_name: str, split: str) -> str:
    """The folder name of a class in the synthetic CAER-S: ``Angry`` in train, ``Anger`` in test."""
    return "Angry" if class_name == "Anger" and split == "train" else class_name


def make_synthetic_caer(
    out: str | Path,
    *,
    n_train: int = 240,
    n_val: int = 60,
    n_test: int = 60,
    size: int = 192,
    seed: int = 0,
    distractors: int = 1,
    repeat_single_cues: bool = False,
    cue_regions: Sequence[str] = REGIONS,
) -> SyntheticInfo:
    """Write a planted-cue dataset in CAER-S's layout (see the module docstring); ``train/`` gets
    ``n_train + n_val`` frames. ``repeat_single_cues``: see :func:`_cue_labels`; ``cue_regions`` limits where
    cues go (default: face, body and scene; see :data:`SCENE_CUE_NOTE`)."""
    _check_regions(cue_regions)
    started = time.perf_counter()
    out = Path(out)
    _split_sizes(n_train, n_val, n_test)
    if size < 96:
        raise ValueError(f"--size must be at least 96 px for the cues to fit, got {size}")
    cache_lines: list[str] = []
    cue_items: list[dict[str, Any]] = []
    counts = {}
    k = len(CAER_CLASSES)
    for split_id, (split, n) in enumerate((("train", n_train + n_val), ("test", n_test))):
        order = np.random.default_rng([seed, 2, split_id]).permutation(n)
        for idx in range(n):
            label = int(order[idx] % k)  # balanced classes, shuffled
            rng = np.random.default_rng([seed, 3, split_id, idx])
            width = size
            height = round(size * rng.uniform(0.56, 0.75))
            img, persons = _draw_scene(
                rng,
                width,
                height,
                [_cue_labels([label], repeat_single_cues)],
                k,
                distractors,
                True,
                cue_regions,
            )
            person = persons[0]
            folder = out / split / caer_folder(CAER_CLASSES[label], split)
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{idx:04d}.png"
            Image.fromarray(img).save(path, compress_level=1)
            key = caer_key(path.relative_to(out))
            cache_lines.append(
                cache_line(
                    key,
                    key,
                    face=person["face"],
                    face_source="synthetic",
                    body=person["body"],
                    body_source="synthetic",
                )
            )
            cue_items.append(
                {
                    "split": split,
                    "image": key,
                    "key": key,
                    "labels": [CAER_CLASSES[label]],
                    "face_box": list(person["face"]),
                    "body_box": list(person["body"]),
                    "cues": [{**c, "label": CAER_CLASSES[c["label"]]} for c in person["cues"]],
                    "distractors": [
                        {**d, "colour_of": CAER_CLASSES[d["colour_of"]]} for d in person["distractors"]
                    ],
                }
            )
        counts[split] = n
    box_cache, cues = _write_common(out, "caer", cache_lines, cue_items, CAER_CLASSES, seed, distractors)
    return SyntheticInfo(
        format="caer",
        out=out,
        counts=counts,
        images=sum(counts.values()),
        classes=CAER_CLASSES,
        seconds=time.perf_counter() - started,
        box_cache=box_cache,
        cues=cues,
    )


def _write_common(
    out: Path,
    dataset: str,
    cache_lines: list[str],
    cue_items: list[dict[str, Any]],
    classes: Sequence[str],
    seed: int,
    distractors: int,
) -> tuple[Path, Path]:
    box_cache = default_cache_path(out, dataset)
    with box_cache.open("w", encoding="utf-8") as f:
        write_cache_header(f, dataset)
        f.writelines(cache_lines)
    cues = out / "cues.json"
    doc = {
        "format": dataset,
        "seed": seed,
        "classes": list(classes),
        "colours": {name: list(PALETTE[i]) for i, name in enumerate(classes)},
        "cue": "solid square of the class colour; region face, body (outside the face) or scene (outside the body)",
        "distractor": f"{distractors} ring(s) per image in the colour of a class the image lacks",
        "boxes": "image pixels (x1, y1, x2, y2), x2/y2 exclusive",
        "items": cue_items,
    }
    cues.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return box_cache, cues


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write a planted-cue dataset and print what was written."""
    parser = argparse.ArgumentParser(
        prog="python -m sibnet.data.synthetic",
        description="Write a small planted-cue dataset in the real EMOTIC or CAER-S on-disk format.",
    )
    parser.add_argument("--format", required=True, choices=("emotic", "caer"))
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--n-train", type=int, default=240, help="training images")
    parser.add_argument("--n-val", type=int, default=60, help="validation images (caer: added to train/)")
    parser.add_argument("--n-test", type=int, default=60, help="test images")
    parser.add_argument("--size", type=int, default=192, help="image width in pixels (>= 96)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--distractors", type=int, default=1, help="rings in other classes' colours per image"
    )
    parser.add_argument("--no-csv", action="store_true", help="emotic: do not write the CSV layout")
    parser.add_argument(
        "--repeat-single-cues", action="store_true", help="plant a one-label person's cue in two regions"
    )
    parser.add_argument(
        "--cue-regions", nargs="+", default=list(REGIONS), choices=REGIONS, help="where cues go"
    )
    args = parser.parse_args(argv)
    common = dict(
        n_train=args.n_train,
        n_val=args.n_val,
        n_test=args.n_test,
        size=args.size,
        seed=args.seed,
        distractors=args.distractors,
        repeat_single_cues=args.repeat_single_cues,
        cue_regions=args.cue_regions,
    )
    try:
        if args.format == "emotic":
            info = make_synthetic_emotic(args.out, write_csv=not args.no_csv, **common)
        else:
            info = make_synthetic_caer(args.out, **common)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"wrote synthetic {info.format} to {info.out}: {info.counts} ({info.images} images, "
        f"classes {', '.join(info.classes)}) in {info.seconds:.2f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
