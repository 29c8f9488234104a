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
from sibnet.data.scenes import (
    PALETTE,
    REGIONS,
    Rect,
    check_regions,
    cue_labels,
    draw_scene,
)
from sibnet.labels import CAER_CLASSES, EMOTIC_CATEGORIES

EMOTIC_PLANTED: tuple[str, ...] = ("Anger", "Engagement", "Fear", "Happiness", "Sadness")
TWO_PEOPLE_FRACTION = 0.15
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
    :func:`cue_labels`); ``cue_regions`` limits where cues go (default: face, body and scene; see
    :data:`SCENE_CUE_NOTE`).
    """
    check_regions(cue_regions)
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
            img, persons = draw_scene(
                rng,
                width,
                height,
                [cue_labels(labels, repeat_single_cues)] * people,
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
                line, item = _person_record(
                    person,
                    names,
                    EMOTIC_PLANTED,
                    split,
                    f"{folder}/{filename}",
                    key,
                    "annotation",
                    entry=idx,
                    person=p,
                )
                cache_lines.append(line)
                cue_items.append(item)
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
    ``n_train + n_val`` frames. ``repeat_single_cues``: see :func:`cue_labels`; ``cue_regions`` limits where
    cues go (default: face, body and scene; see :data:`SCENE_CUE_NOTE`)."""
    check_regions(cue_regions)
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
            img, persons = draw_scene(
                rng,
                width,
                height,
                [cue_labels([label], repeat_single_cues)],
                k,
                distractors,
                True,
                cue_regions,
            )
            folder = out / split / caer_folder(CAER_CLASSES[label], split)
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{idx:04d}.png"
            Image.fromarray(img).save(path, compress_level=1)
            key = caer_key(path.relative_to(out))
            line, item = _person_record(
                persons[0], [CAER_CLASSES[label]], CAER_CLASSES, split, key, key, "synthetic"
            )
            cache_lines.append(line)
            cue_items.append(item)
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


def _person_record(
    drawn: dict[str, Any],
    labels: Sequence[str],
    classes: Sequence[str],
    split: str,
    image: str,
    key: str,
    body_source: str,
    **where: Any,
) -> tuple[str, dict[str, Any]]:
    """A drawn person's box-cache line (its true boxes) and its ``cues.json`` item (class names, not indices)."""
    line = cache_line(
        key, image, face=drawn["face"], face_source="synthetic", body=drawn["body"], body_source=body_source
    )
    item = {
        "split": split,
        **where,
        "image": image,
        "key": key,
        "labels": list(labels),
        "face_box": list(drawn["face"]),
        "body_box": list(drawn["body"]),
        "cues": [{**c, "label": classes[c["label"]]} for c in drawn["cues"]],
        "distractors": [{**d, "colour_of": classes[d["colour_of"]]} for d in drawn["distractors"]],
    }
    return line, item


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
