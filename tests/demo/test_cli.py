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
        "hopper_person0.png",
        "zidane.json",
        "zidane_person0.png",
        "zidane_person1.png",
    ]
    assert json.loads((out / "zidane.json").read_text())["method"] == "layercam"
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
    parser = photo_cli_parser("test", "test")
    from_env = analyzer_settings(parser.parse_args([]), env)
    assert from_env == {
        "weights": "env/weights",
        "revision": "v1",
        "device": "cpu",
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
