"""A tiny EMOTIC laid out as the release and mat2py leave it, for the tests of issue 11.

``Annotations/Annotations.mat`` as ``scipy.io.savemat`` writes MATLAB structs, so ``loadmat`` returns what it
returns for the real file: 1 x N struct arrays (one entry per image, ``person`` a 1 x P struct array), 1 x 1
nesting (``image_size``, ``original_database``, ``combined_continuous``), cell arrays of strings, several
annotators per person in ``val``/``test``, and a test person whose ``combined_categories`` is empty (nobody
labelled them, as in EMOTIC's test split). Beside it mat2py's ``emotic_pre/{train,val,test}.csv``: the same
people, their body boxes clipped to the image (to ``[0, W]`` in train, to ``[0, W - 1]`` in test: either
convention must find the same cache entry), ``[]`` for the unlabeled person. Images are real JPEGs.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy.io import savemat

from sibnet.data.synthetic import CSV_COLUMNS

WIDTH, HEIGHT = 64, 48
FOLDER = "mscoco/images"


@dataclass(frozen=True)
class Person:
    image: str  # folder/filename
    raw: tuple[float, float, float, float]  # the .mat's body box (may run past the image)
    clipped: tuple[float, float, float, float]  # mat2py's CSV box
    categories: tuple[str, ...]  # the consensus (train: the one annotator); () = unlabeled


def _structs(items: list[dict[str, Any]]) -> np.ndarray:
    """A 1 x N MATLAB struct array."""
    arr = np.empty((1, len(items)), dtype=[(name, object) for name in items[0]])
    for i, item in enumerate(items):
        for name, value in item.items():
            arr[0, i][name] = value
    return arr


def _cell(strings: list[str]) -> np.ndarray:
    """A 1 x K cell array of strings (0 x 0 when empty, as MATLAB writes ``{}``)."""
    if not strings:
        return np.empty((0, 0), dtype=object)
    arr = np.empty((1, len(strings)), dtype=object)
    arr[0, :] = strings
    return arr


def _vad(v: float, a: float, d: float) -> np.ndarray:
    return _structs([{"valence": v, "arousal": a, "dominance": d}])


def _clip(box, right: float, bottom: float) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = box
    return (max(x1, 0.0), max(y1, 0.0), min(x2, right), min(y2, bottom))


# split -> images -> people: (raw body box, per-annotator categories, consensus)
LAYOUT: dict[str, list[tuple[str, list[tuple[tuple[float, ...], list[list[str]], list[str]]]]]] = {
    "train": [
        (
            "COCO_train_a.jpg",
            [
                ((2.0, 3.0, 30.0, 40.0), [["Engagement", "Happiness"]], ["Engagement", "Happiness"]),
                ((30.0, 5.0, 70.0, 52.0), [["Peace"]], ["Peace"]),  # past the right and bottom edges
            ],
        ),
        ("COCO_train_b.jpg", [((-4.0, 2.0, 40.0, 46.0), [["Fear", "Sadness"]], ["Fear", "Sadness"])]),
        ("COCO_train_c.jpg", [((5.0, 5.0, 50.0, 45.0), [["Anger"]], ["Anger"])]),
    ],
    "val": [
        (
            "COCO_val_a.jpg",
            [
                (
                    (4.0, 4.0, 40.0, 44.0),
                    [["Happiness"], ["Happiness", "Fear"], ["Fear"]],
                    ["Fear", "Happiness"],
                )
            ],
        ),
        (
            "COCO_val_b.jpg",
            [
                ((1.0, 1.0, 20.0, 40.0), [["Sadness"], ["Sadness"]], ["Sadness"]),
                ((22.0, 2.0, 60.0, 47.0), [["Happiness"], ["Peace"]], ["Happiness", "Peace"]),
            ],
        ),
    ],
    "test": [
        ("COCO_test_a.jpg", [((3.0, 3.0, 33.0, 44.0), [[], []], [])]),  # nobody labelled this person
        ("COCO_test_b.jpg", [((10.0, -6.0, 75.0, 40.0), [["Sadness"], ["Sadness", "Pain"]], ["Sadness"])]),
        ("COCO_test_c.jpg", [((6.0, 6.0, 44.0, 46.0), [["Happiness"]], ["Happiness"])]),
    ],
}


def write_release_emotic(root: Path) -> dict[str, list[Person]]:
    """Write the layout into ``root``; returns the people of each split as written (unlabeled included)."""
    (root / FOLDER).mkdir(parents=True)
    (root / "Annotations").mkdir()
    (root / "emotic_pre").mkdir()
    mat: dict[str, np.ndarray] = {}
    people: dict[str, list[Person]] = {}
    rng = np.random.default_rng(0)
    for split, images in LAYOUT.items():
        entries, rows, people[split] = [], [], []
        # mat2py's clipping: to the image edge in train, to the last pixel in test (conventions vary).
        right, bottom = (WIDTH, HEIGHT) if split != "test" else (WIDTH - 1, HEIGHT - 1)
        for index, (filename, persons) in enumerate(images):
            pixels = rng.integers(0, 255, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / FOLDER / filename, quality=90)
            structs = []
            for box, annotators, consensus in persons:
                person: dict[str, Any] = {
                    "body_bbox": np.array([box], dtype=np.float64),
                    "annotations_categories": _structs([{"categories": _cell(a)} for a in annotators]),
                    "annotations_continuous": _structs(
                        [{"valence": 5.0, "arousal": 4.0, "dominance": 6.0} for _ in annotators]
                    ),
                }
                if split != "train":
                    person["combined_categories"] = _cell(consensus)
                    person["combined_continuous"] = _vad(5.0, 4.0, 6.0)
                person.update(gender="Female", age="Adult")
                structs.append(person)
                clipped = _clip(box, right, bottom)
                rows.append(
                    [
                        index,
                        FOLDER,
                        filename,
                        str([WIDTH, HEIGHT]),
                        str(list(clipped)),
                        str(consensus),
                        "[5.0, 4.0, 6.0]",
                        "Female",
                        "Adult",
                    ]
                )
                people[split].append(Person(f"{FOLDER}/{filename}", box, clipped, tuple(sorted(consensus))))
            entries.append(
                {
                    "filename": filename,
                    "folder": FOLDER,
                    "image_size": _structs([{"n_col": float(WIDTH), "n_row": float(HEIGHT)}]),
                    "original_database": _structs(
                        [{"name": "mscoco", "info": _structs([{"image_id": 1.0}])}]
                    ),
                    "person": _structs(structs),
                }
            )
        mat[split] = _structs(entries)
        with (root / "emotic_pre" / f"{split}.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(CSV_COLUMNS)
            writer.writerows(rows)
    savemat(root / "Annotations" / "Annotations.mat", mat, do_compression=True, oned_as="row")
    return people
