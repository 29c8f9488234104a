"""The box cache (sibnet.data.boxes): detection once, resumable JSON lines, fallbacks, and the loaders reading it.

Detectors are replaced by fakes with the FaceDetector / PersonDetector interface (``detect(rgb)`` returning
objects with ``box`` and ``prob`` / ``score``), so these tests are fast and offline; one slow test runs the
real MTCNN.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import sibnet.detect
from sibnet.boxes import estimate_face_from_body
from sibnet.data.boxcache import emotic_key, read_box_cache
from sibnet.data.boxes import build_box_cache, central_boxes, main
from sibnet.data.caer import CaerDataset
from sibnet.data.emotic import EmoticDataset
from sibnet.data.masking import InputTransform
from sibnet.errors import DatasetError


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]
    prob: float
    landmarks: np.ndarray | None = None


@dataclass(frozen=True)
class Body:
    box: tuple[float, float, float, float]
    score: float


class FakeFaces:
    """Every third call finds nothing; otherwise a likely face low in the image and a less likely one at the
    top (the top one must win inside a body box). Records the sizes it was given."""

    def __init__(self, miss_every: int = 3) -> None:
        self.calls = 0
        self.misses = 0
        self.miss_every = miss_every
        self.shapes: list[tuple[int, int]] = []

    def detect(self, rgb: np.ndarray) -> list[Face]:
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
        h, w = rgb.shape[:2]
        self.shapes.append((h, w))
        self.calls += 1
        if self.calls % self.miss_every == 0:
            self.misses += 1
            return []
        low = Face((0.3 * w, 0.7 * h, 0.6 * w, 0.9 * h), 0.999)
        top = Face((0.25 * w, 0.05 * h, 0.75 * w, 0.05 * h + 0.5 * w), 0.95)
        return [low, top]


class Exploding:
    def detect(self, rgb: np.ndarray) -> list:
        raise AssertionError("nothing should be detected on a finished cache")


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture()
def emotic_root(tmp_path: Path, synthetic) -> Path:
    root = shutil.copytree(
        synthetic("emotic", n_train=8, n_val=3, n_test=3, size=128, seed=3), tmp_path / "emotic"
    )
    (root / "sibnet_boxes_emotic.jsonl").unlink()  # the generator's true boxes: build our own
    return root


@pytest.fixture()
def caer_root(tmp_path: Path, synthetic) -> Path:
    root = shutil.copytree(
        synthetic("caer", n_train=14, n_val=7, n_test=7, size=128, seed=3), tmp_path / "caer"
    )
    (root / "sibnet_boxes_caer.jsonl").unlink()
    return root


def test_emotic_cache_maps_faces_back_and_counts_fallbacks(emotic_root: Path):
    faces = FakeFaces()
    summary = build_box_cache("emotic", emotic_root, face_detector=faces, progress=False)
    out = emotic_root / "sibnet_boxes_emotic.jsonl"  # the documented default
    assert summary.out == out and out.is_file()
    lines = _lines(out)
    assert lines[0] == {"sibnet_box_cache": 1, "dataset": "emotic"}
    assert len(lines) - 1 == summary.total == summary.processed == faces.calls
    assert summary.faces_estimated == faces.misses and summary.faces_detected == faces.calls - faces.misses
    assert summary.bodies_annotated == summary.total and not summary.unreadable
    # small body crops were upscaled for MTCNN (its minimum face is 20 px)
    assert min(min(s) for s in faces.shapes) >= 100
    for item in lines[1:]:
        x1, y1, x2, y2 = item["body"]
        if item["face_source"] == "mtcnn":  # the top face, mapped from the (upscaled) crop to image pixels
            bw = x2 - x1
            expected = (
                x1 + 0.25 * bw,
                y1 + 0.05 * (y2 - y1),
                x1 + 0.75 * bw,
                y1 + 0.05 * (y2 - y1) + 0.5 * bw,
            )
            assert item["face"] == pytest.approx(expected, abs=0.6) and item["face_prob"] == 0.95
        else:
            assert item["face_source"] == "estimated"
            size = (1 << 20, 1 << 20)  # boxes lie inside the image, so the clip is a no-op
            assert item["face"] == pytest.approx(estimate_face_from_body(item["body"], *size), abs=0.01)
    assert "estimated from the body top" in summary.format()

    # The loaders read it.
    ds = EmoticDataset(emotic_root, "train", transform=InputTransform(64, 72))
    assert ds.box_cache_path == out
    cache = read_box_cache(out, dataset="emotic")
    for r in ds.records:
        entry = cache[emotic_key(r.annotation.folder, r.annotation.filename, r.body_box)]
        assert r.face_box == entry.face and r.face_source == entry.face_source
    s = ds.summary()
    assert s["faces_missing_from_cache"] == 0
    assert s["faces_estimated_in_cache"] == sum(r.face_source == "estimated" for r in ds.records)


def test_emotic_cache_resumes_after_a_kill(emotic_root: Path):
    out = emotic_root / "cache.jsonl"
    first = build_box_cache(
        "emotic", emotic_root, out=out, face_detector=FakeFaces(), limit=5, progress=False
    )
    assert first.processed == 5 and first.remaining == first.total - 5
    assert len(_lines(out)) == 1 + 5
    with out.open("a") as f:
        f.write('{"key": "mscoco/images/half-writ')  # killed mid-line
    assert len(read_box_cache(out)) == 5  # readers skip the broken line
    second = build_box_cache("emotic", emotic_root, out=out, face_detector=FakeFaces(), progress=False)
    assert second.already_done == 5 and second.processed == first.total - 5 and second.remaining == 0
    lines = _lines(out)  # every line parses: the partial one was dropped
    keys = [item["key"] for item in lines[1:]]
    assert len(keys) == len(set(keys)) == first.total
    third = build_box_cache("emotic", emotic_root, out=out, face_detector=Exploding(), progress=False)
    assert third.processed == 0 and third.already_done == first.total


def test_unreadable_images_are_counted_named_and_skipped(emotic_root: Path):
    cues = json.loads((emotic_root / "cues.json").read_text())["items"]
    corrupt, missing = cues[3]["image"], cues[6]["image"]
    (emotic_root / corrupt).write_bytes(b"\xff\xd8\xff not a jpeg")
    (emotic_root / missing).unlink()
    summary = build_box_cache("emotic", emotic_root, face_detector=FakeFaces(), progress=False)
    named = dict(summary.unreadable)
    assert set(named) == {corrupt, missing}
    assert "cannot read image" in named[corrupt] and "does not exist" in named[missing]
    assert summary.processed == summary.total
    text = summary.format()
    assert "unreadable images: 2" in text and corrupt in text
    statuses = {item["image"]: item["status"] for item in _lines(summary.out)[1:]}
    assert statuses[corrupt] == statuses[missing] == "unreadable"
    # Issue 11: the dataset no longer keeps the people the cache found unreadable (they crashed the run when
    # read): strict (the default, --strict) refuses the split naming them; skipping drops and lists them.
    split = cues[3]["split"]
    with pytest.raises(DatasetError, match=r"unreadable according to the box cache .*" + corrupt):
        EmoticDataset(emotic_root, split, check_files=False, transform=InputTransform(64, 72))
    ds = EmoticDataset(emotic_root, split, skip_unreadable=True, transform=InputTransform(64, 72))
    assert all(r.annotation.image != corrupt for r in ds.records)
    assert any(s.image.endswith(corrupt) and s.found_by == "box cache" for s in ds.skipped)
    assert ds.summary()["skipped_unreadable"] == len(ds.skipped) >= 1


class FakeFrameFaces:
    """CAER-S frames: a face in frames 1, 2, 3, 5, 6, 7, ... (none when the call index is a multiple of 4)."""

    def __init__(self) -> None:
        self.calls = 0

    def detect(self, rgb: np.ndarray) -> list[Face]:
        i, self.calls = self.calls, self.calls + 1
        h, w = rgb.shape[:2]
        return [] if i % 4 == 0 else [Face((0.4 * w, 0.1 * h, 0.5 * w, 0.25 * h), 0.99)]


class FakePersons:
    """A person in frames 0, 3, 6, ... containing the fake face."""

    def __init__(self) -> None:
        self.calls = 0

    def detect(self, rgb: np.ndarray) -> list[Body]:
        i, self.calls = self.calls, self.calls + 1
        h, w = rgb.shape[:2]
        return [Body((0.3 * w, 0.05 * h, 0.6 * w, 0.95 * h), 0.9)] if i % 3 == 0 else []


def test_caer_cache_pairs_and_falls_back(caer_root: Path):
    summary = build_box_cache(
        "caer", caer_root, face_detector=FakeFrameFaces(), person_detector=FakePersons(), progress=False
    )
    n = summary.total
    assert n == 28 and summary.processed == n
    idx = np.arange(n)
    face, person = idx % 4 != 0, idx % 3 == 0
    assert summary.faces_detected == face.sum()
    assert summary.central == (~face & ~person).sum()
    assert summary.faces_estimated == (~face & person).sum()
    assert summary.bodies_detected == person.sum()
    assert summary.bodies_estimated == (face & ~person).sum()
    lines = _lines(summary.out)[1:]
    assert lines[0]["key"].startswith("test/Anger/") or lines[0]["key"].startswith("train/Angry/")
    central = [item for item in lines if item["face_source"] == "central"]
    assert central and all(item["body_source"] == "central" for item in central)
    w, h = 128, None
    for item in central:
        from PIL import Image

        w, h = Image.open(caer_root / item["image"]).size
        assert item["face"] == pytest.approx(central_boxes(w, h)[0], abs=0.01)
    ds = CaerDataset(caer_root, "test", transform=InputTransform(64, 72))
    s = ds.summary()
    assert s["missing_from_cache"] == 0 and set(s["face_sources"]) <= {"mtcnn", "estimated", "central"}


def test_caer_without_person_detector_says_so_once(caer_root: Path, monkeypatch: pytest.MonkeyPatch):
    class Unavailable:
        def __init__(self, *args, **kwargs) -> None:
            raise sibnet.detect.DetectorUnavailable("YOLO weights yolo11n.pt cannot be downloaded (offline)")

    monkeypatch.setattr(sibnet.detect, "PersonDetector", Unavailable)
    summary = build_box_cache("caer", caer_root, face_detector=FakeFrameFaces(), progress=False)
    assert len(summary.notices) == 1 and "bodies estimated from faces" in summary.notices[0]
    assert "offline" in summary.notices[0] and summary.bodies_detected == 0
    assert summary.bodies_estimated == summary.faces_detected
    off = build_box_cache(
        "caer", caer_root, out=caer_root / "off.jsonl", face_detector=FakeFrameFaces(), use_persons=False,
        progress=False,
    )  # fmt: skip
    assert off.notices == ["person detection off: bodies estimated from faces"]


def test_cli_builds_resumes_and_reports(caer_root: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    class Unavailable:
        def __init__(self, *args, **kwargs) -> None:
            raise sibnet.detect.DetectorUnavailable("no YOLO weights offline")

    monkeypatch.setattr(sibnet.detect, "FaceDetector", lambda device="cpu": FakeFrameFaces())
    monkeypatch.setattr(sibnet.detect, "PersonDetector", Unavailable)
    args = ["--dataset", "caer", "--data-root", str(caer_root), "--no-progress"]
    assert main([*args, "--limit", "10"]) == 0
    out = capsys.readouterr().out
    assert "10 processed now, 18 left (--limit)" in out and "person detector unavailable" in out
    assert main(args) == 0
    assert "10 already cached, 18 processed now" in capsys.readouterr().out
    assert main(["--dataset", "caer", "--data-root", str(caer_root / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cache_for_another_dataset_is_refused(caer_root: Path, emotic_root: Path):
    build_box_cache("caer", caer_root, face_detector=FakeFrameFaces(), use_persons=False, progress=False)
    theirs = emotic_root / "sibnet_boxes_emotic.jsonl"
    shutil.copy(caer_root / "sibnet_boxes_caer.jsonl", theirs)
    with pytest.raises(DatasetError, match="is for dataset 'caer', not 'emotic'"):
        build_box_cache("emotic", emotic_root, face_detector=FakeFaces(), progress=False)
    with pytest.raises(DatasetError, match="is for dataset 'caer'"):
        EmoticDataset(emotic_root, "train")


@pytest.mark.slow
def test_real_mtcnn_inside_a_person_box(tmp_path: Path):
    """The real detector on a public-domain photo laid out as an EMOTIC entry (body box = the whole photo)."""
    from matplotlib import cbook
    from PIL import Image
    from scipy.io import savemat

    photo = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    root = tmp_path / "real"
    (root / "imgs").mkdir(parents=True)
    shutil.copy(photo, root / "imgs" / "hopper.jpg")
    w, h = Image.open(photo).size
    cell = np.empty((1, 1), dtype=object)
    cell[0, 0] = "Confidence"
    person = {
        "body_bbox": np.array([[0.0, 0.0, float(w), float(h)]]),
        "annotations_categories": {"categories": cell},
        "annotations_continuous": {"valence": 6.0, "arousal": 4.0, "dominance": 7.0},
        "gender": "Female",
        "age": "Adult",
    }
    entry = {"filename": "hopper.jpg", "folder": "imgs", "image_size": {"n_col": float(w), "n_row": float(h)}}
    (root / "Annotations").mkdir()
    savemat(root / "Annotations" / "Annotations.mat", {"train": {**entry, "person": person}})
    summary = build_box_cache("emotic", root, progress=False)
    assert summary.faces_detected == 1
    (item,) = _lines(summary.out)[1:]
    x1, y1, x2, y2 = item["face"]
    assert item["face_source"] == "mtcnn" and item["face_prob"] > 0.99
    assert 150 < x1 < x2 < 380 and 90 < y1 < y2 < 370  # her face, not the uniform
