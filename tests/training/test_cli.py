"""The training command line (sibnet.training.cli): the REPRODUCE table, run names, and one error line per bad input."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest

import sibnet
from sibnet import train
from sibnet.labels import CAER_CLASSES
from tests.training._runs import caer_args, read_log, train_args

DOC = Path(__file__).resolve().parents[2] / "docs" / "REPRODUCE.md"


def test_reproduce_doc_is_current_and_every_command_resolves_without_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    text = DOC.read_text()
    table = text.split("<!-- BEGIN GENERATED TABLE -->\n")[1].split("\n<!-- END GENERATED TABLE -->")[0]
    assert table == train.reproduction_markdown(), (
        "regenerate the table of docs/REPRODUCE.md (see its comment)"
    )
    covered = set()
    for row in train.reproduction_rows():
        assert row["command"] in text
        argv = shlex.split(row["command"])
        assert argv[:3] == ["python", "-m", "sibnet.train"]
        argv = argv[3:]
        argv[argv.index("--data-root") + 1] = str(tmp_path / "no-data-here")  # --dry-run needs no data
        argv[argv.index("--out") + 1] = str(tmp_path / "runs")
        rc = train.main([*argv, "--dry-run"])
        captured = capsys.readouterr()
        assert rc == 0, captured.err
        report = json.loads(captured.out)
        assert report["model"]["name"] == row["model"] and report["dataset"]["present"] is False
        assert report["seeds"] == [0, 1, 2]
        recipe = report["recipe"]
        assert (recipe["lr_backbone"], recipe["lr_modules"]) == (1e-4, 1e-3)  # §4.2
        assert recipe["lr_milestones"] == [0.5, 0.75, 0.875] and recipe["pretrained"] is True
        assert report["model"]["input_size"] == 224 and report["model"]["resize"] == 230
        assert report["parameters"]["backbone"] == 11_176_512 * len(report["model"]["branches"])
        seed0 = report["output"]["seeds"]["seed0"]
        assert seed0["best"].endswith("seed0/best") and seed0["metrics"].endswith("seed0/metrics.jsonl")
        if row["dataset"] == "emotic":
            assert (recipe["batch_size"], recipe["epochs"]) == (32, 10)
            assert report["model"]["multi_label"] is True
            assert report["paper"]["emotic_map"] == row["paper"]
        else:  # CAER-S: its own recipe and labels; the paper's BCE although single-label
            assert (recipe["batch_size"], recipe["epochs"]) == (64, 20)
            assert report["model"]["labels"] == list(CAER_CLASSES) and report["model"]["multi_label"] is False
            assert report["loss"]["fused"] == "bce" and report["paper"]["caer_osa"] == row["paper"]
        if row["table"] == "2":
            t2 = sibnet.TABLE2[row["label"]]
            assert report["variant"] == row["label"]
            assert {k: report["loss"][k] for k in t2.loss.to_dict()} == t2.loss.to_dict()
            covered.add(row["label"])
    assert covered == set(sibnet.TABLE2)


def test_run_names_tell_the_three_bcm_rows_apart(tmp_path: Path):
    names = set()
    for label in ("baseline+B (LDL)", "baseline+B (LDL*)", "baseline+B (LDL*+L1)"):
        args = train.build_parser().parse_args(
            ["--dataset", "emotic", "--data-root", str(tmp_path), "--variant", label]
        )
        names.add(train.resolve_config(args).run_name)
    assert names == {
        "emotic-concat_bcm",
        "emotic-concat_bcm-bce-ldl-bce",
        "emotic-concat_bcm-bce-ldlstar-bce",
    }


def test_bcm_needs_branch_heads(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    rc = train.main(
        ["--dataset", "emotic", "--data-root", str(tmp_path), "--model", "concat", "--bcm", "ldl*"]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and "branch" in err


@pytest.mark.parametrize(
    "problem",
    [
        "missing data root",
        "missing annotations",
        "missing image",
        "unreadable image",
        "unreadable image, strict",
        "empty split",
        "offline",
    ],
)
def test_bad_input_is_one_error_line(
    tmp_path: Path, emotic_root: Path, caer_root: Path, capsys: pytest.CaptureFixture[str], problem: str
):
    extra: list[str] = []
    if problem == "missing data root":
        args, named = train_args("emotic", tmp_path / "absent", tmp_path / "out"), "absent"
    elif problem == "missing annotations":
        root = shutil.copytree(emotic_root, tmp_path / "emotic")
        shutil.rmtree(root / "Annotations")
        shutil.rmtree(root / "emotic_pre")  # the CSV layout would be found instead
        args, named = train_args("emotic", root, tmp_path / "out"), "Annotations.mat"
    elif problem == "missing image":
        root = shutil.copytree(emotic_root, tmp_path / "emotic")
        victim = sorted(root.rglob("*_val_*.jpg"))[0]
        victim.unlink()
        args, named = train_args("emotic", root, tmp_path / "out"), victim.name
    elif problem.startswith("unreadable image"):
        root = shutil.copytree(caer_root, tmp_path / "caer")
        for image in (root / "train").rglob("*.png"):
            image.write_bytes(b"\x89PNG garbage")
        # Skipped, every one: no training item is left. --strict: a DataLoader worker raises on the first;
        # the message must still be one line.
        strict = ["--strict"] if problem.endswith("strict") else []
        args, named = caer_args(root, tmp_path / "out", "--workers", "1", *strict), ".png"
    elif problem == "empty split":
        root = shutil.copytree(caer_root, tmp_path / "caer")
        for image in (root / "train").rglob("*.png"):
            image.unlink()
        args, named = caer_args(root, tmp_path / "out"), "train"
    else:  # ImageNet weights requested (the default) while offline (conftest sets SIBNET_OFFLINE=1)
        args = [a for a in train_args("emotic", emotic_root, tmp_path / "out") if a != "--no-pretrained"]
        named = "ImageNet"
    rc = train.main([*args, *extra])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and named in err


# --- issue 11 ---------------------------------------------------------------------------------------------


def _truncate(path: Path) -> None:
    """A JPEG cut short, as an interrupted download leaves it: PIL opens it, then fails to decode it."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_unreadable_images_are_skipped_counted_and_listed(
    tmp_path: Path, emotic_root: Path, capsys: pytest.CaptureFixture[str]
):
    from sibnet.data.boxcache import cache_line

    root = shutil.copytree(emotic_root, tmp_path / "emotic")
    cues = json.loads((root / "cues.json").read_text())["items"]
    first = {split: next(c for c in cues if c["split"] == split) for split in ("train", "val", "test")}
    _truncate(root / first["train"]["image"])  # found when read, mid-epoch
    _truncate(root / first["val"]["image"])  # found when validating
    test = first["test"]  # found by the box cache builder (its "unreadable" line, as it writes one)
    with (root / "sibnet_boxes_emotic.jsonl").open("a") as f:
        f.write(cache_line(test["key"], test["image"], face=None, face_source=None, body=test["body_box"],
                           body_source="annotation", status="unreadable", error="image file is truncated"))  # fmt: skip
    out = tmp_path / "out"
    # Four steps of four (the shuffle is seeded: the truncated image is among them).
    args = train_args("emotic", root, out, "--max-steps-per-epoch", "4")
    assert train.main(args) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    listing = out / "emotic-face" / "skipped_images.tsv"
    assert f"skipped 3 unreadable image(s) (train 1, val 1, test 1), listed in {listing}" in printed
    rows = [line.split("\t") for line in listing.read_text().splitlines()]
    assert rows[0] == ["split", "image", "found_by", "reason"]
    found = {(split, Path(image).name, by) for split, image, by, _ in rows[1:]}
    assert found == {
        ("train", Path(first["train"]["image"]).name, "loader"),
        ("val", Path(first["val"]["image"]).name, "loader"),
        ("test", Path(test["image"]).name, "box cache"),
    }
    summary = json.loads((out / "emotic-face" / "summary.json").read_text())
    assert summary["skipped"] == {"train": 1, "val": 1, "test": 1, "file": str(listing)}
    log = read_log(out / "emotic-face" / "seed0" / "metrics.jsonl")
    people = lambda split, image=None: sum(c["split"] == split and image in (None, c["image"]) for c in cues)  # noqa: E731
    # Left out, not scored or trained on as zeros (an image holds one or two people).
    assert log[0]["val"]["n"] == people("val") - people("val", first["val"]["image"])
    assert log[0]["samples"] < 4 * 4  # four steps of four, the truncated image's people left out
    assert summary["seeds"][0]["test_report"]["skipped"]["count"] == 1
    # --strict fails fast instead, naming the file.
    assert train.main([*args, "--strict", "--out", str(tmp_path / "strict")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and Path(test["image"]).name in err


def test_annotations_resolve_per_split_through_the_command_line(
    tmp_path: Path, emotic_root: Path, capsys: pytest.CaptureFixture[str]
):
    pre = emotic_root / "emotic_pre"
    out = tmp_path / "out"
    # The command: one split's CSV. Validation reads val.csv beside it, not the training rows.
    assert train.main(train_args("emotic", emotic_root, out, "--annotations", str(pre / "train.csv"))) == 0
    n_val = len((pre / "val.csv").read_text().splitlines()) - 1
    assert read_log(out / "emotic-face" / "seed0" / "metrics.jsonl")[0]["val"]["n"] == n_val
    capsys.readouterr()
    # A folder whose test.csv is the training rows: refused before training, naming both splits.
    leak = tmp_path / "leak"
    leak.mkdir()
    for split in ("train", "val"):
        shutil.copy(pre / f"{split}.csv", leak / f"{split}.csv")
    shutil.copy(pre / "train.csv", leak / "test.csv")
    assert train.main(train_args("emotic", emotic_root, tmp_path / "o2", "--annotations", str(leak))) == 2
    err = capsys.readouterr().err
    assert "the train and test splits share" in err and err.count("\n") == 1


def test_a_bare_run_follows_the_paper_with_three_seeds(tmp_path: Path):
    bare = ["--dataset", "emotic", "--data-root", str(tmp_path), "--model", "sibnet"]
    assert train.resolve_config(train.build_parser().parse_args(bare)).seeds == (0, 1, 2)  # §4.2
    one = train.resolve_config(train.build_parser().parse_args([*bare, "--seeds", "0"]))
    assert one.seeds == (0,)
