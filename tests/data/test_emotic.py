"""EMOTIC (paper §4.1): sibnet.data.emotic and its annotation readers, on synthetic and hand-made data."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import savemat

from sibnet.data.emotic import EmoticDataset
from sibnet.data.emotic_annotations import read_emotic_mat
from sibnet.data.masking import FACE_ESTIMATED, InputTransform
from sibnet.data.synthetic import EMOTIC_PLANTED
from sibnet.errors import DatasetError
from sibnet.labels import EMOTIC_CATEGORIES

SMALL = dict(transform=InputTransform(64, 72))


def _cues(root: Path, split: str) -> list[dict]:
    return [c for c in json.loads((root / "cues.json").read_text())["items"] if c["split"] == split]


@pytest.mark.parametrize("split", ["train", "val", "test"])
@pytest.mark.parametrize("layout", ["mat", "csv"])
def test_emotic_records_match_what_was_written(emotic_root: Path, split: str, layout: str):
    annotations = None if layout == "mat" else emotic_root / "emotic_pre"
    ds = EmoticDataset(emotic_root, split, annotations=annotations, **SMALL)
    assert ds.annotations_path.suffix == (".mat" if layout == "mat" else ".csv")
    cues = _cues(emotic_root, split)
    assert len(ds) == len(cues)
    for rec, cue in zip(ds.records, cues):
        assert rec.annotation.image == cue["image"] and rec.annotation.person == cue["person"]
        assert rec.path == emotic_root / cue["image"]
        assert rec.body_box == tuple(cue["body_box"])
        assert rec.face_box == tuple(cue["face_box"]) and rec.face_source == "synthetic"
        assert rec.annotation.categories == tuple(cue["labels"])
        assert [EMOTIC_CATEGORIES[i] for i in np.flatnonzero(rec.target)] == cue["labels"]
        assert all(np.isfinite(rec.annotation.vad)) and rec.annotation.gender in ("Male", "Female")
    s = ds.summary()
    assert s["people"] == len(cues) and s["faces_missing_from_cache"] == 0
    assert set(k for k, v in s["positives"].items() if v) <= set(EMOTIC_PLANTED)
    assert ds.multi_label is True and ds.labels == EMOTIC_CATEGORIES


def test_emotic_item_and_crop_seeding(emotic_root: Path):
    ds = EmoticDataset(emotic_root, "train", seed=7, **SMALL)
    assert ds.train  # default for the train split
    item = ds[3]
    assert set(item) == {"face", "body", "scene", "target", "index"} and item["index"] == 3
    assert item["face"].shape == (3, 64, 64) and item["target"].shape == (26,)
    assert item["target"].dtype == torch.float32
    again = EmoticDataset(emotic_root, "train", seed=7, **SMALL)[3]  # another worker / rank
    assert torch.equal(item["scene"], again["scene"])
    ds.set_epoch(1)
    assert not torch.equal(item["scene"], ds[3]["scene"])  # new epoch, new crops
    ds.set_epoch(0)
    assert torch.equal(item["body"], ds[3]["body"])
    val = EmoticDataset(emotic_root, "val", **SMALL)
    assert not val.train and torch.equal(val[0]["face"], val[0]["face"])


def test_emotic_squeeze_edge_cases_from_the_generator(emotic_root: Path):
    people = read_emotic_mat(emotic_root / "Annotations" / "Annotations.mat", "val")
    first = [p for p in people if p.entry == 0]
    assert len(first) == 2  # an array of persons
    single = [p for p in people if p.entry == 1]
    assert len(single) == 1 and len(single[0].categories) == 1  # a struct, a str category, one annotator


def _person(categories, **extra):
    cell = np.empty((1, len(categories)), dtype=object)
    cell[0, :] = categories
    return {
        "body_bbox": np.array([[2.0, 3.0, 40.0, 46.0]]),
        "annotations_categories": {"categories": cell},
        "annotations_continuous": {"valence": 5.0, "arousal": 6.0, "dominance": 7.0},
        **extra,
        "gender": "Female",
        "age": "Kid",
    }


def _tiny_emotic(root: Path, train_categories=("Happiness",), val_extra=None) -> Path:
    """A hand-written Annotations.mat: every split a single entry (a struct after squeeze_me), with a single
    person and a single category; val has one annotator plus the consensus fields."""
    from PIL import Image

    (root / "imgs").mkdir(parents=True)
    Image.new("RGB", (48, 50), (90, 100, 110)).save(root / "imgs" / "a.jpg")
    entry = {
        "filename": "a.jpg",
        "folder": "imgs",
        "image_size": {"n_col": 48.0, "n_row": 50.0},
        "original_database": {"name": "mscoco", "info": {"image_id": 1.0}},
    }
    combined = np.empty((1, 2), dtype=object)
    combined[0, :] = ["Pain", "Fear"]
    val_person = _person(
        ["Pain"],
        combined_categories=combined,
        combined_continuous={"valence": 1.0, "arousal": 2.0, "dominance": 3.0},
        **(val_extra or {}),
    )
    mat = {
        "train": {**entry, "person": _person(list(train_categories))},
        "val": {**entry, "person": val_person},
        "test": {**entry, "person": val_person},
    }
    (root / "Annotations").mkdir()
    savemat(root / "Annotations" / "Annotations.mat", mat)
    return root


def test_emotic_hand_written_mat_single_everything(tmp_path: Path):
    root = _tiny_emotic(tmp_path / "e")
    train = EmoticDataset(root, "train", boxes=False, **SMALL)
    assert len(train) == 1
    rec = train.records[0]
    assert rec.annotation.categories == ("Happiness",) and rec.annotation.image_size == (48, 50)
    assert rec.annotation.vad == (5.0, 6.0, 7.0) and rec.annotation.database == "mscoco"
    val = EmoticDataset(root, "val", boxes=False, **SMALL)
    # consensus, in canonical order, not the single annotator's "Pain" only
    assert val.records[0].annotation.categories == ("Fear", "Pain")
    assert val.records[0].annotation.vad == (1.0, 2.0, 3.0)
    assert val.summary()["faces_missing_from_cache"] == 1
    assert train.triple(0).fallbacks == (FACE_ESTIMATED,)


def test_emotic_unknown_category_names_the_entry(tmp_path: Path):
    root = _tiny_emotic(tmp_path / "e", train_categories=("Happiness", "Joy"))
    with pytest.raises(DatasetError, match=r"train\[0\] \(imgs/a.jpg\) person 0.*'Joy'"):
        EmoticDataset(root, "train", boxes=False)


def test_emotic_unknown_category_in_csv_names_the_row(tmp_path: Path):
    path = tmp_path / "train.csv"
    path.write_text(
        "Index,Folder,Filename,Image Size,BBox,Categorical_Labels,Continuous_Labels,Gender,Age\n"
        '0,imgs,a.jpg,"[48, 50]","[1, 2, 30, 40]","[\'Peace\', \'Bliss\']","[1, 2, 3]",Male,Adult\n'
    )
    with pytest.raises(DatasetError, match=r"train.csv row 2 \(imgs/a.jpg\).*'Bliss'"):
        EmoticDataset(tmp_path, "train", boxes=False)


def test_emotic_bad_inputs(tmp_path: Path, emotic_root: Path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        EmoticDataset(tmp_path / "nowhere", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"Annotations\.mat.*train\.csv"):
        EmoticDataset(tmp_path / "empty", "train")
    with pytest.raises(FileNotFoundError, match=r"missing\.mat"):
        EmoticDataset(emotic_root, "train", annotations=tmp_path / "missing.mat")
    with pytest.raises(ValueError, match="unknown EMOTIC split 'dev'"):
        EmoticDataset(emotic_root, "dev")
    with pytest.raises(FileNotFoundError, match=r"no_cache\.jsonl"):
        EmoticDataset(emotic_root, "train", boxes=tmp_path / "no_cache.jsonl")
    # an empty split: a CSV with the header only
    only_header = tmp_path / "hdr"
    only_header.mkdir()
    (only_header / "val.csv").write_text(
        "Index,Folder,Filename,Image Size,BBox,Categorical_Labels,Continuous_Labels,Gender,Age\n"
    )
    with pytest.raises(DatasetError, match=r"split 'val' of .*val\.csv has no annotated people"):
        EmoticDataset(only_header, "val")
    (only_header / "test.csv").write_text("Folder,Filename\nimgs,a.jpg\n")
    with pytest.raises(
        DatasetError, match=r"test\.csv: missing column\(s\) \['bbox', 'categorical_labels'\]"
    ):
        EmoticDataset(only_header, "test")
    (only_header / "Annotations.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(DatasetError, match=r"cannot read EMOTIC annotations .*Annotations\.mat"):
        EmoticDataset(only_header, "train")


def test_emotic_missing_and_corrupt_images(tmp_path: Path, emotic_root: Path):
    root = shutil.copytree(emotic_root, tmp_path / emotic_root.name)
    victim = _cues(root, "test")[2]["image"]
    (root / victim).unlink()
    with pytest.raises(
        FileNotFoundError, match=r"1 of \d+ images listed in .*Annotations\.mat are missing.*" + victim
    ):
        EmoticDataset(root, "test")
    ds = EmoticDataset(root, "test", check_files=False, **SMALL)  # found when read instead
    index = next(i for i, r in enumerate(ds.records) if r.annotation.image == victim)
    with pytest.raises(FileNotFoundError, match=victim):
        ds[index]
    corrupt = _cues(root, "val")[1]["image"]
    (root / corrupt).write_bytes(b"\xff\xd8\xff\xe0 truncated")
    val = EmoticDataset(root, "val", **SMALL)
    index = next(i for i, r in enumerate(val.records) if r.annotation.image == corrupt)
    with pytest.raises(DatasetError, match=r"cannot read image .*" + corrupt):
        val[index]


def test_emotic_images_under_an_emotic_subfolder(tmp_path: Path, emotic_root: Path):
    # The official archive unpacks as <root>/Annotations/ and <root>/emotic/<folder>/.
    root = shutil.copytree(emotic_root, tmp_path / emotic_root.name)
    (root / "emotic").mkdir()
    for folder in ("mscoco", "emodb_small"):
        shutil.move(root / folder, root / "emotic" / folder)
    ds = EmoticDataset(root, "train", **SMALL)
    assert all(r.path.is_file() and "emotic" in r.path.parts for r in ds.records)


def test_emotic_without_cache_falls_back_and_counts(emotic_root: Path):
    ds = EmoticDataset(emotic_root, "val", boxes=False, **SMALL)
    assert ds.summary()["faces_missing_from_cache"] == len(ds)
    assert ds.triple(0).fallbacks == (FACE_ESTIMATED,)


def test_csv_and_mat_share_records(emotic_root: Path):
    with (emotic_root / "emotic_pre" / "test.csv").open() as f:
        rows = list(csv.DictReader(f))
    ds = EmoticDataset(emotic_root, "test", **SMALL)
    assert len(rows) == len(ds)


# --- issue 11: splits never coincide, the formats that are not read say so ---------------------------------


def test_one_split_csv_never_serves_the_other_splits(tmp_path: Path, emotic_root: Path):
    from sibnet.data.emotic_annotations import find_emotic_annotations

    pre = emotic_root / "emotic_pre"
    # Naming train.csv resolves each split to its namesake beside it: val is val.csv, never train.csv.
    for split in ("train", "val", "test"):
        assert find_emotic_annotations(emotic_root, split, pre / "train.csv") == pre / f"{split}.csv"
    train = EmoticDataset(emotic_root, "train", annotations=pre / "train.csv", **SMALL)
    val = EmoticDataset(emotic_root, "val", annotations=pre / "train.csv", **SMALL)
    assert {r.path for r in train.records}.isdisjoint({r.path for r in val.records})
    # A lone train.csv: the val split is an error naming both files, not the training rows again.
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(pre / "train.csv", alone / "train.csv")
    with pytest.raises(DatasetError, match=r"train split only.*val\.csv.*never read from one file"):
        find_emotic_annotations(emotic_root, "val", alone / "train.csv")
    # A CSV whose name says no split is refused for every split.
    shutil.copy(pre / "train.csv", alone / "mine.csv")
    with pytest.raises(DatasetError, match="holds one split"):
        find_emotic_annotations(emotic_root, "train", alone / "mine.csv")


def test_splits_sharing_an_image_are_refused_naming_both(tmp_path: Path, emotic_root: Path):
    from sibnet.data.base import check_disjoint

    pre = tmp_path / "pre"
    pre.mkdir()
    for split in ("train", "val", "test"):
        shutil.copy(emotic_root / "emotic_pre" / f"{split}.csv", pre / f"{split}.csv")
    shutil.copy(pre / "train.csv", pre / "test.csv")  # a test split that is the training rows
    sets = {s: EmoticDataset(emotic_root, s, annotations=pre, **SMALL) for s in ("train", "val", "test")}
    check_disjoint({"train": sets["train"], "val": sets["val"]})  # these two are fine
    with pytest.raises(DatasetError, match=r"the train and test splits share \d+ image"):
        check_disjoint(sets)


def test_the_annot_arrs_archive_is_refused_naming_what_works(tmp_path: Path):
    from sibnet.data.emotic_annotations import read_emotic_csv

    columns = ["", "Arr_name", "Crop_name", "Folder", "Filename", "Width", "Height", "X_min", "Y_min", "X_max",
               "Y_max", *EMOTIC_CATEGORIES[:3], "Gender", "Age"]  # fmt: skip
    path = tmp_path / "train.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerow([0, "arr_0.npy", "crop_0.npy", "mscoco/images", "a.jpg", 640, 480, 1, 2, 30, 40, 1, 0, 0,
                         "Male", "Adult"])  # fmt: skip
    with pytest.raises(DatasetError, match=r"annot_arrs archive.*Annotations\.mat.*train\.csv / val\.csv"):
        read_emotic_csv(path, "train")
