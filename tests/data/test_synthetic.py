"""Planted-cue datasets (sibnet.data.synthetic): real on-disk layouts, cues where cues.json says, determinism."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import loadmat

from sibnet.data.boxcache import read_box_cache
from sibnet.data.synthetic import EMOTIC_PLANTED, PALETTE, main, make_synthetic_caer, make_synthetic_emotic
from sibnet.labels import CAER_CLASSES


def _digest(root: Path, pattern: str) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.glob(pattern))
    }


@pytest.fixture(scope="module")
def emotic(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("syn_emotic")
    return make_synthetic_emotic(root, n_train=20, n_val=8, n_test=8, size=128, seed=5)


@pytest.fixture(scope="module")
def caer(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("syn_caer")
    return make_synthetic_caer(root, n_train=21, n_val=7, n_test=14, size=128, seed=5)


def _inside(box, outer) -> bool:
    return outer[0] <= box[0] and outer[1] <= box[1] and box[2] <= outer[2] and box[3] <= outer[3]


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.mark.parametrize("which", ["emotic", "caer"])
def test_cues_lie_in_their_regions_with_their_colours(which: str, emotic, caer):
    info = emotic if which == "emotic" else caer
    doc = json.loads(info.cues.read_text())
    assert doc["classes"] == list(EMOTIC_PLANTED if which == "emotic" else CAER_CLASSES)
    colours = {name: np.array(c) for name, c in doc["colours"].items()}
    tolerance = 40 if which == "emotic" else 0  # JPEG vs PNG
    regions_seen = set()
    for item in doc["items"]:
        face, body = item["face_box"], item["body_box"]
        assert _inside(face, body)
        img = np.asarray(Image.open(info.out / item["image"]).convert("RGB")).astype(int)
        assert item["cues"] and {c["label"] for c in item["cues"]} == set(item["labels"])
        for cue in item["cues"]:
            box, region = cue["box"], cue["region"]
            regions_seen.add(region)
            if region == "face":
                assert _inside(box, face)
            elif region == "body":
                assert _inside(box, body) and not _overlap(box, face)
            else:
                assert not _overlap(box, body)
            x1, y1, x2, y2 = box
            centre = img[(y1 + y2) // 2 - 1 : (y1 + y2) // 2 + 2, (x1 + x2) // 2 - 1 : (x1 + x2) // 2 + 2]
            assert np.abs(centre - colours[cue["label"]]).max() <= tolerance
            # big enough to survive the resize of its branch's crop to 64-96 px
            side = min(x2 - x1, y2 - y1)
            if region == "face":
                assert side >= 0.4 * (face[2] - face[0])
            elif region == "body":
                assert side >= 0.2 * (body[2] - body[0])
            elif not cue.get("other_person"):  # the other person's face/body cue is as small as it is
                assert side >= 0.12 * min(img.shape[:2])
        for d in item["distractors"]:
            assert d["colour_of"] not in item["labels"]
    assert regions_seen == {"face", "body", "scene"}


def test_emotic_mat_has_the_real_layout(emotic):
    raw = loadmat(emotic.annotations, squeeze_me=False, struct_as_record=True)
    for split in ("train", "val", "test"):
        entries = raw[split]
        assert entries.shape[0] == 1
        assert entries.dtype.names == ("filename", "folder", "image_size", "original_database", "person")
        assert entries[0, 0]["image_size"].dtype.names == ("n_col", "n_row")
        assert entries[0, 0]["original_database"].dtype.names == ("name", "info")
        person = entries[0, 0]["person"]
        assert person.shape == (1, 2)  # the first image of every split holds two people
        if split == "train":
            assert person.dtype.names == (
                "body_bbox",
                "annotations_categories",
                "annotations_continuous",
                "gender",
                "age",
            )
            assert person[0, 0]["annotations_categories"].shape == (1, 1)
        else:
            assert person.dtype.names == (
                "body_bbox",
                "annotations_categories",
                "annotations_continuous",
                "combined_categories",
                "combined_continuous",
                "gender",
                "age",
            )
            annotators = entries[0, 2]["person"][0, 0]["annotations_categories"]
            assert annotators.shape == (1, 3) and annotators.dtype.names == ("categories",)
        assert person[0, 0]["body_bbox"].shape == (1, 4)
        cats = person[0, 0]["annotations_categories"][0, 0]["categories"]
        assert cats.dtype == object and cats.shape[0] == 1  # a cell array of strings
    folders = {str(e["folder"][0]) for e in raw["train"][0]}
    assert folders <= {"mscoco/images", "emodb_small/images"}
    assert (emotic.out / "emotic_pre" / "train.csv").is_file()
    cache = read_box_cache(emotic.box_cache, dataset="emotic")
    assert len(cache) == sum(emotic.counts.values())
    assert {c.face_source for c in cache.values()} == {"synthetic"}


def test_caer_layout_and_alias_folders(caer):
    assert sorted(p.name for p in (caer.out / "train").iterdir()) == sorted(
        ["Angry", *[c for c in CAER_CLASSES if c != "Anger"]]
    )
    assert sorted(p.name for p in (caer.out / "test").iterdir()) == sorted(CAER_CLASSES)
    assert caer.counts == {"train": 28, "test": 14}
    per_class = [len(list((caer.out / "test" / c).glob("*.png"))) for c in CAER_CLASSES]
    assert per_class == [2] * 7  # balanced


@pytest.mark.parametrize("which", ["emotic", "caer"])
def test_deterministic_given_the_seed(which: str, tmp_path: Path):
    make = make_synthetic_emotic if which == "emotic" else make_synthetic_caer
    kwargs = dict(n_train=6, n_val=3, n_test=3, size=112)
    a, b, c = (make(tmp_path / name, seed=seed, **kwargs) for name, seed in (("a", 1), ("b", 1), ("c", 2)))
    pattern = "**/*.jpg" if which == "emotic" else "**/*.png"
    assert _digest(a.out, pattern) == _digest(b.out, pattern)
    assert a.cues.read_bytes() == b.cues.read_bytes() and a.box_cache.read_bytes() == b.box_cache.read_bytes()
    assert _digest(a.out, pattern) != _digest(c.out, pattern)
    if which == "emotic":  # the .mat header holds a timestamp; its content must agree
        ma, mb = (loadmat(x.annotations, squeeze_me=True, struct_as_record=False) for x in (a, b))
        assert [e.filename for e in ma["train"]] == [e.filename for e in mb["train"]]


def test_cli_writes_a_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "cli"
    assert (
        main(["--format", "caer", "--out", str(out), "--n-train", "7", "--n-val", "7", "--n-test", "7"]) == 0
    )
    assert "wrote synthetic caer" in capsys.readouterr().out
    assert len(list(out.glob("train/*/*.png"))) == 14 and (out / "cues.json").is_file()
    assert main(["--format", "emotic", "--out", str(out / "e"), "--n-train", "0"]) == 2
    assert "at least one image" in capsys.readouterr().err


def test_palette_is_distinct():
    colours = np.array(PALETTE, dtype=int)
    gaps = [np.abs(a - b).max() for i, a in enumerate(colours) for b in colours[i + 1 :]]
    assert min(gaps) >= 95  # some channel differs by at least this (orange vs yellow and red are closest)
