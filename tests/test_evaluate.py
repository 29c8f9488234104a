"""``python -m sibnet.evaluate``: EMOTIC mAP with per-class AP, CAER-S accuracy with the confusion matrix,
label checks and one-line errors (paper §4.1)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import sibnet
from sibnet import evaluate
from sibnet.data.synthetic import EMOTIC_PLANTED
from sibnet.errors import LabelMismatchError
from sibnet.labels import CAER_CLASSES, EMOTIC_CATEGORIES
from sibnet.metrics import classification_accuracy, mean_average_precision

SIZE = 32  # the smallest input ModelConfig accepts: these tests check plumbing, not learning


def _checkpoint(tmp_path: Path, labels: tuple[str, ...], multi_label: bool, name: str = "face") -> Path:
    model = sibnet.create_model(
        name, labels=labels, multi_label=multi_label, input_size=SIZE, resize=SIZE + 2
    )
    return model.save_pretrained(tmp_path / f"ckpt-{name}", training={"note": "untrained"})


def _direct_scores(ckpt: Path, dataset) -> tuple[np.ndarray, np.ndarray]:
    """Logits and targets computed item by item, without the evaluation loader."""
    model = sibnet.load_model(ckpt)
    logits, targets = [], []
    with torch.no_grad():
        for i in range(len(dataset)):
            item = dataset[i]
            out = model(item["face"][None], item["body"][None], item["scene"][None])
            logits.append(out.logits[0].numpy())
            targets.append(item["target"].numpy())
    return np.stack(logits), np.stack(targets)


def test_emotic_map_report(tmp_path: Path, emotic_root: Path, capsys: pytest.CaptureFixture[str]):
    ckpt = _checkpoint(tmp_path, EMOTIC_CATEGORIES, True)
    out = tmp_path / "report.json"
    rc = evaluate.main(
        [
            "--checkpoint", str(ckpt), "--dataset", "emotic", "--data-root", str(emotic_root),
            "--split", "test", "--json", str(out), "--batch-size", "5", "--workers", "0", "--no-progress",
        ]
    )  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert report["metric"] == "mAP" and report["split"] == "test"
    assert report["training"] == {"note": "untrained"}
    # The batched loader gives the same numbers as scoring each item directly.
    dataset = evaluate.open_dataset(
        "emotic", emotic_root, "test", transform=sibnet.load_model(ckpt).config.transform, train=False
    )
    logits, targets = _direct_scores(ckpt, dataset)
    expected = mean_average_precision(targets, logits, EMOTIC_CATEGORIES)
    # Only planted categories have positives: the other 21 (and any planted one absent from this small split)
    # are excluded from the mean and listed.
    absent = [c for c, n in zip(EMOTIC_CATEGORIES, targets.sum(axis=0)) if n == 0]
    assert report["excluded"] == absent
    assert set(EMOTIC_CATEGORIES) - set(EMOTIC_PLANTED) <= set(absent)
    assert all(report["per_class_ap"][c] is None for c in absent)
    assert all(report["per_class_ap"][c] is not None for c in EMOTIC_CATEGORIES if c not in absent)
    assert report["num_samples"] == len(dataset)
    assert report["value"] == pytest.approx(expected.mAP, abs=1e-6)
    for name, ap in expected.per_class_ap.items():
        assert report["per_class_ap"][name] == (None if ap is None else pytest.approx(ap, abs=1e-6))
    assert "mAP" in capsys.readouterr().out


def test_caer_accuracy_report(tmp_path: Path, caer_root: Path):
    ckpt = _checkpoint(tmp_path, CAER_CLASSES, False, name="concat")
    out = tmp_path / "caer.json"
    rc = evaluate.main(
        [
            "--checkpoint", str(ckpt), "--dataset", "caer", "--data-root", str(caer_root), "--split", "test",
            "--json", str(out), "--batch-size", "4", "--workers", "0", "--no-progress",
        ]
    )  # fmt: skip
    assert rc == 0
    report = json.loads(out.read_text())
    dataset = evaluate.open_dataset(
        "caer", caer_root, "test", transform=sibnet.load_model(ckpt).config.transform, train=False
    )
    logits, targets = _direct_scores(ckpt, dataset)
    expected = classification_accuracy(targets, logits, CAER_CLASSES)
    assert report["metric"] == "accuracy"
    assert report["value"] == pytest.approx(expected.accuracy)
    cm = np.array(report["confusion_matrix"])
    assert cm.shape == (7, 7) and cm.sum() == len(dataset) == 14
    assert cm.sum(axis=1).tolist() == [2] * 7  # balanced synthetic classes
    assert report["confusion_matrix"] == expected.confusion_matrix


def test_label_mismatch_is_a_clear_error(
    tmp_path: Path, emotic_root: Path, capsys: pytest.CaptureFixture[str]
):
    ckpt = _checkpoint(tmp_path, CAER_CLASSES, False)
    rc = evaluate.main(["--checkpoint", str(ckpt), "--dataset", "emotic", "--data-root", str(emotic_root)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "single-label" in err
    # Same label count and kind, different names: the label check itself.
    odd = tuple(f"class_{i}" for i in range(26))
    ckpt = _checkpoint(tmp_path, odd, True)
    rc = evaluate.main(["--checkpoint", str(ckpt), "--dataset", "emotic", "--data-root", str(emotic_root)])
    err = capsys.readouterr().err
    assert rc == 2 and "do not match" in err and "Affection" in err and "Traceback" not in err


def test_check_labels_order_matters():
    evaluate.check_labels(("a", "b"), ("a", "b"))
    with pytest.raises(LabelMismatchError, match="different order"):
        evaluate.check_labels(("b", "a"), ("a", "b"))


@pytest.mark.parametrize(
    "problem",
    ["missing checkpoint", "missing data root", "pickle checkpoint"],
)
def test_bad_input_is_one_error_line(
    tmp_path: Path, emotic_root: Path, capsys: pytest.CaptureFixture[str], problem: str
):
    ckpt = _checkpoint(tmp_path, EMOTIC_CATEGORIES, True)
    data_root = emotic_root
    if problem == "missing checkpoint":
        ckpt = tmp_path / "nowhere"
    elif problem == "missing data root":
        data_root = tmp_path / "no-data"
    else:
        pickle = tmp_path / "model.pt"
        pickle.write_bytes(b"not really")
        ckpt = pickle
    rc = evaluate.main(["--checkpoint", str(ckpt), "--dataset", "emotic", "--data-root", str(data_root)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    named = {"missing checkpoint": "nowhere", "missing data root": "no-data", "pickle checkpoint": "model.pt"}
    assert named[problem] in err


def test_report_counts_skipped_and_unlabeled_people(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """Issue 11: a truncated test image is skipped and named, the unlabeled person excluded and counted,
    both in the report; --strict fails on the image instead."""
    from tests.data._release import write_release_emotic

    root = tmp_path / "emotic"
    people = write_release_emotic(root)["test"]  # one of the three people has no label
    victim = root / people[2].image
    victim.write_bytes(victim.read_bytes()[:300])  # cut short: PIL opens it, decoding fails
    ckpt = _checkpoint(tmp_path, EMOTIC_CATEGORIES, True)
    out = tmp_path / "report.json"
    argv = ["--checkpoint", str(ckpt), "--dataset", "emotic", "--data-root", str(root), "--split", "test",
            "--workers", "0", "--no-progress"]  # fmt: skip
    assert evaluate.main([*argv, "--json", str(out)]) == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert report["num_samples"] == 1 and report["unlabeled"] == 1
    assert report["skipped"]["count"] == 1
    (entry,) = report["skipped"]["images"]
    assert entry["image"] == str(victim) and entry["found_by"] == "loader" and entry["reason"]
    printed = capsys.readouterr().out
    assert "skipped 1 people with unreadable images" in printed and victim.name in printed
    assert "1 people without any label excluded from the metric" in printed
    assert evaluate.main([*argv, "--strict"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and victim.name in err
