"""Issue 11 on EMOTIC as the release and mat2py lay it out (tests/data/_release.py): both layouts read the
same people, one box cache serves both although mat2py clips boxes, and unlabeled people are left out and
counted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sibnet.data.boxcache import cache_line, emotic_key, write_cache_header
from sibnet.data.boxes import build_box_cache
from sibnet.data.emotic import EmoticDataset
from sibnet.data.emotic_annotations import SPLITS
from sibnet.data.masking import InputTransform
from sibnet.errors import DatasetError
from tests.data._release import Person

SMALL = dict(transform=InputTransform(32, 34))


def _open(root: Path, split: str, layout: str, **kw) -> EmoticDataset:
    annotations = root / "Annotations" / "Annotations.mat" if layout == "mat" else root / "emotic_pre"
    return EmoticDataset(root, split, annotations=annotations, **SMALL, **kw)


def _split_image(person: Person) -> tuple[str, str]:
    folder, _, filename = person.image.rpartition("/")
    return folder, filename


def test_both_layouts_read_the_same_labelled_people(release_emotic):
    root, people = release_emotic
    for split in SPLITS:
        labelled = [p for p in people[split] if p.categories]
        for layout, box in (("mat", "raw"), ("csv", "clipped")):
            ds = _open(root, split, layout, boxes=False)
            got = [(r.annotation.image, set(r.annotation.categories), r.body_box) for r in ds.records]
            assert got == [(p.image, set(p.categories), getattr(p, box)) for p in labelled], (split, layout)
            assert ds.unlabeled == len(people[split]) - len(labelled)
    # The fixture's point: the boxes running past the image differ between the layouts.
    assert sum(p.raw != p.clipped for ps in people.values() for p in ps) == 3


def _write_cache(root: Path, people: dict[str, list[Person]], box: str) -> dict[str, tuple]:
    """A cache keyed as a builder fed one layout keys it (``box``: "raw" = the .mat, "clipped" = the CSVs),
    every person with its own face; returns the faces by image and raw box."""
    faces = {}
    with (root / "sibnet_boxes_emotic.jsonl").open("w", encoding="utf-8") as f:
        write_cache_header(f, "emotic")
        for n, p in enumerate(p for ps in people.values() for p in ps):
            body = getattr(p, box)
            face = (float(n), float(n), float(n + 6), float(n + 6))
            faces[(p.image, p.raw)] = face
            key = emotic_key(*_split_image(p), body)
            f.write(
                cache_line(key, p.image, face=face, face_source="mtcnn", body=body, body_source="annotation")
            )
    return faces


@pytest.mark.parametrize(("built_from", "read_with"), [("raw", "csv"), ("clipped", "mat")])
def test_one_box_cache_serves_the_mat_and_the_csv_layout(release_emotic, built_from: str, read_with: str):
    root, people = release_emotic
    faces = _write_cache(root, people, built_from)
    by_clipped = {(p.image, p.clipped): p.raw for ps in people.values() for p in ps}
    for split in SPLITS:
        ds = _open(root, split, read_with)
        assert ds.summary()["faces_missing_from_cache"] == 0, split
        for r in ds.records:
            raw = r.body_box if read_with == "mat" else by_clipped[(r.annotation.image, r.body_box)]
            assert r.face_box == faces[(r.annotation.image, raw)] and r.face_source == "mtcnn"
    # What went wrong before: the exact key of a person whose box runs past the edge is not the other's.
    edge = next(p for p in people["train"] if p.raw != p.clipped)
    assert emotic_key(*_split_image(edge), edge.raw) != emotic_key(*_split_image(edge), edge.clipped)


class NoFaces:
    def detect(self, rgb: np.ndarray) -> list:
        return []


class Exploding:
    def detect(self, rgb: np.ndarray) -> list:
        raise AssertionError("every person is in the cache already")


def test_the_builder_resumes_a_cache_of_the_other_layout(release_emotic):
    root, people = release_emotic
    mat = root / "Annotations" / "Annotations.mat"
    first = build_box_cache("emotic", root, annotations=mat, face_detector=NoFaces(), progress=False)
    assert first.processed == sum(len(ps) for ps in people.values())
    again = build_box_cache(
        "emotic", root, annotations=root / "emotic_pre", face_detector=Exploding(), progress=False
    )
    assert again.processed == 0 and again.already_done == again.total == first.total
    for split in SPLITS:
        assert _open(root, split, "csv").summary()["faces_missing_from_cache"] == 0


def test_people_without_labels_are_left_out_and_counted(release_emotic):
    root, _ = release_emotic
    for layout in ("mat", "csv"):
        test = _open(root, "test", layout, boxes=False)
        assert test.unlabeled == 1 and test.summary()["unlabeled_people"] == 1
        assert len(test) == 2 and all(r.target.sum() > 0 for r in test.records)  # no all-zero target left
    # A split of unlabeled people only is no split at all.
    csv_path = root / "emotic_pre" / "test.csv"
    lines = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join([lines[0], lines[1]]) + "\n")  # the header and the unlabeled person
    with pytest.raises(DatasetError, match=r"no annotated people \(1 without any category\)"):
        _open(root, "test", "csv", boxes=False)
