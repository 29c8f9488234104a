"""The command lines: demo.predict and demo.explain (batch export), including failures."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from demo import explain, predict
from demo.cli import analyzer_settings, photo_cli_parser
from tests import _images


@pytest.fixture()
def shared_analyzer(monkeypatch, analyzer):
    """The command lines run on the suite's analyzer (their own construction is tested once, below)."""
    seen = []

    def factory(args, **overrides):
        seen.append(args)
        return analyzer

    monkeypatch.setattr(predict, "analyzer_from_args", factory)
    monkeypatch.setattr(explain, "analyzer_from_args", factory)
    return seen


def test_predict_prints_people_and_writes_json_and_figure(tmp_path, capsys):
    out_json, out_png = tmp_path / "p.json", tmp_path / "p.png"
    code = predict.main(
        [
            str(_images.photo_path("grace_hopper")),
            "--json",
            str(out_json),
            "--figure",
            str(out_png),
            "--no-person-detector",
        ]
    )
    text = capsys.readouterr().out
    assert code == 0
    assert "untrained weights" in text and "person 1: face (" in text and "SIB-Net" in text
    data = json.loads(out_json.read_text())
    assert len(data["people"]) == 1 and set(data["people"][0]["models"]) == {"concat", "attention", "sibnet"}
    # a column per branch: the printed contributions are the JSON's, to the person's target
    target = data["people"][0]["target"]
    assert f"(contributions to {target})" in text
    for key, title in (("concat", "Concatenation"), ("attention", "Attention"), ("sibnet", "SIB-Net")):
        values = data["people"][0]["models"][key]["attribution"]["values"]
        line = next(ln for ln in text.splitlines() if ln.strip().startswith(title))
        assert line.split()[-3:] == [f"{values[b]:+.3f}" for b in ("face", "body", "scene")]
    with Image.open(out_png) as img:
        assert img.format == "PNG" and img.width == 1200


def test_predict_bad_input_exits_2(tmp_path, capsys, shared_analyzer):
    bad = tmp_path / "notes.txt"
    bad.write_text("not a photo")
    assert predict.main([str(bad), "--no-person-detector"]) == 2
    assert "error:" in capsys.readouterr().err
    assert (
        predict.main([str(_images.photo_path("grace_hopper")), "--target", "Joy", "--no-person-detector"])
        == 2
    )


def test_explain_writes_figures_for_a_folder_and_counts_failures(tmp_path, capsys, shared_analyzer):
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(_images.photo_path("zidane"), photos / "zidane.jpg")
    shutil.copy(_images.photo_path("grace_hopper"), photos / "hopper.jpg")
    (photos / "broken.jpg").write_bytes(_images.truncated_jpeg())
    out = tmp_path / "out"
    code = explain.main(
        ["--images", str(photos), "--out", str(out), "--no-person-detector", "--method", "layercam"]
    )
    captured = capsys.readouterr()
    assert code == 1  # one photo failed
    assert "2 of 3 photos analysed, 3 figures written" in captured.out and "1 failed" in captured.out
    assert "broken.jpg" in captured.out
    assert sorted(p.name for p in out.iterdir()) == [
        "hopper.json",
        "hopper_person1.png",
        "zidane.json",
        "zidane_person1.png",
        "zidane_person2.png",
    ]
    zidane = json.loads((out / "zidane.json").read_text())
    assert zidane["method"] == "layercam"
    assert all(
        set(m["attribution"]["values"]) == {"face", "body", "scene"}
        for m in zidane["people"][1]["models"].values()
    )
    # all good → exit 0
    assert (
        explain.main(["--images", str(photos / "hopper.jpg"), "--out", str(out), "--no-person-detector"]) == 0
    )


def test_flags_win_over_their_environment_variables():
    env = {
        "SIBNET_WEIGHTS": "env/weights",
        "SIBNET_WEIGHTS_SIBNET": "env/sibnet",
        "SIBNET_WEIGHTS_REVISION": "v1",
        "SIBNET_DEVICE": "cpu",
    }
    assert analyzer_settings(None, {"SIBNET_PRECISION": "fp32"})["precision"] == "fp32"
    parser = photo_cli_parser("test", "test")
    from_env = analyzer_settings(parser.parse_args([]), env)
    assert from_env == {
        "weights": "env/weights",
        "revision": "v1",
        "device": "cpu",
        "precision": "auto",
        "yolo_weights": None,
        "sibnet": "env/sibnet",
        "concat": None,
        "attention": None,
    }
    flags = parser.parse_args(
        ["--weights", "w", "--sibnet-weights", "s", "--device", "cuda", "--no-person-detector"]
    )
    settings = analyzer_settings(flags, env)
    assert settings["weights"] == "w" and settings["sibnet"] == "s" and settings["device"] == "cuda"
    assert settings["person_detector"] is False and settings["revision"] == "v1"
    assert analyzer_settings(parser.parse_args([]), {})["weights"] is None  # nothing set: untrained


# --- issue 12: demo.explain never overwrites its own output --------------------------------------------------


def test_explain_never_overwrites_its_own_output(tmp_path, capsys, shared_analyzer):
    # Same stem in two folders, same stem with two suffixes, and one photo named twice: every output keeps
    # its own name, names say which input they came from, and the printed count is what is on disk.
    inputs = tmp_path / "in"
    for folder in ("a", "b"):
        (inputs / folder).mkdir(parents=True)
        shutil.copy(_images.photo_path("grace_hopper"), inputs / folder / "photo.jpg")
    with Image.open(_images.photo_path("grace_hopper")) as img:
        img.save(inputs / "grace.webp")
        img.save(inputs / "grace.tiff")
    images = [
        inputs / "a" / "photo.jpg",
        inputs / "b" / "photo.jpg",
        inputs / "grace.webp",
        inputs / "grace.tiff",
    ]
    out = tmp_path / "out"
    before = sorted(p for p in tmp_path.rglob("*") if out not in p.parents)
    argv = ["--images", *map(str, images), str(inputs / "a" / "photo.jpg"), "--out", str(out)]
    assert explain.main([*argv, "--no-person-detector"]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [
        "a__photo.json",
        "a__photo_person1.png",
        "b__photo.json",
        "b__photo_person1.png",
        "grace.tiff.json",
        "grace.tiff_person1.png",
        "grace.webp.json",
        "grace.webp_person1.png",
    ]
    assert "4 of 4 photos analysed, 4 figures written" in printed
    assert len(list(out.glob("*.png"))) == 4
    assert {json.loads(p.read_text())["image"] for p in out.glob("*.json")} == set(map(str, images))
    assert sorted(p for p in tmp_path.rglob("*") if out not in p.parents and p != out) == before


@pytest.mark.parametrize(
    "paths",
    [
        ["a/photo.jpg", "b/photo.jpg"],
        ["x/grace.webp", "x/grace.tiff", "y/grace.webp"],
        ["x/a b.jpg", "x/a_b.jpg", "x/a_b-2.jpg"],  # the same after sanitising, and a name like a counter
        ["x/Photo.jpg", "x/photo.JPG"],  # one name on a case-insensitive disk
        ["x/../../etc/passwd", "x/..jpg", "x/.hidden.png", "x/$(rm -rf ~).png", "x/" + "n" * 400 + ".jpg"],
        ["p/a/x/photo.jpg", "q/a/x/photo.jpg"],
    ],
)
def test_output_names_are_unique_safe_file_names(tmp_path, paths):
    images = [tmp_path / "in" / p for p in paths]
    names = explain.output_names(images)
    assert set(names) == set(images)
    assert len({n.casefold() for n in names.values()}) == len(images)
    out = tmp_path / "out"
    for name in names.values():
        assert name and not name.startswith(".") and "/" not in name and "\\" not in name
        assert len(name) <= explain.MAX_NAME + 3
        assert (out / f"{name}_person12.json").resolve().parent == out.resolve()  # never outside --out
    for image, name in names.items():  # each name carries (the end of) its own file's sanitised stem
        assert explain._clean(image.stem or image.name)[-10:] in name
