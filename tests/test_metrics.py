"""Metrics (paper §4.1): EMOTIC mAP from scikit-learn's per-class AP, CAER-S overall accuracy, on examples
worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sibnet.metrics import (
    MultiLabelMetrics,
    SingleLabelMetrics,
    classification_accuracy,
    compute_metrics,
    format_report,
    mean_average_precision,
)


def test_map_hand_worked_example():
    # Four samples, three classes. Class c has no positive at all.
    targets = np.array(
        [
            [1, 0, 0],
            [0, 1, 0],
            [1, 1, 0],
            [0, 0, 0],
        ]
    )
    scores = np.array(
        [
            [0.9, 0.2, 0.1],
            [0.8, 0.7, 0.3],
            [0.3, 0.6, 0.2],
            [0.1, 0.9, 0.4],
        ]
    )
    # Class a: ranking by score 0.9 (pos), 0.8 (neg), 0.3 (pos), 0.1 (neg).
    #   AP = Σ (R_n - R_{n-1}) P_n over the thresholds: at rank 1 P=1/1, R=1/2; at rank 3 P=2/3, R=2/2.
    #   AP_a = 0.5 * 1 + 0.5 * 2/3 = 5/6.
    # Class b: ranking 0.9 (neg), 0.7 (pos), 0.6 (pos), 0.2 (neg).
    #   at rank 2 P=1/2, R=1/2; at rank 3 P=2/3, R=1. AP_b = 0.5 * 1/2 + 0.5 * 2/3 = 7/12.
    # Class c: no positives → excluded. mAP = (5/6 + 7/12) / 2 = 17/24.
    report = mean_average_precision(targets, scores, ["a", "b", "c"])
    assert isinstance(report, MultiLabelMetrics)
    assert report.per_class_ap["a"] == pytest.approx(5 / 6)
    assert report.per_class_ap["b"] == pytest.approx(7 / 12)
    assert report.per_class_ap["c"] is None
    assert report.excluded == ["c"]
    assert report.mAP == pytest.approx(17 / 24)
    assert report.positives == {"a": 2, "b": 2, "c": 0}
    assert report.num_samples == 4
    d = report.to_dict()
    assert d["metric"] == "mAP" and d["value"] == pytest.approx(17 / 24)


def test_map_is_invariant_to_monotone_score_transforms():
    rng = np.random.default_rng(0)
    targets = (rng.random((50, 6)) < 0.3).astype(np.float32)
    targets[0] = 1  # every class has a positive
    logits = rng.normal(size=(50, 6))
    a = mean_average_precision(targets, logits).mAP
    b = mean_average_precision(targets, 1 / (1 + np.exp(-logits))).mAP
    assert a == pytest.approx(b)


def test_perfect_and_reversed_rankings():
    targets = np.array([[1, 0], [1, 0], [0, 1], [0, 1]])
    assert mean_average_precision(targets, targets.astype(float)).mAP == pytest.approx(1.0)
    # Reversed, no ties: positives ranked 3rd and 4th; AP = mean of the precision at their ranks,
    # (1/3 + 2/4) / 2 = 5/12, for both classes.
    reversed_scores = np.array([[0.2, 0.9], [0.1, 0.8], [0.9, 0.2], [0.8, 0.1]])
    assert mean_average_precision(targets, reversed_scores).mAP == pytest.approx(5 / 12)
    # Ties count as one threshold (sklearn's step function): all positives tied below all negatives gives
    # one point, P = 2/4 at R = 1, so AP = 1/2, not 5/12.
    assert mean_average_precision(targets, 1.0 - targets).mAP == pytest.approx(0.5)


def test_map_errors():
    with pytest.raises(ValueError, match="no class has a positive"):
        mean_average_precision(np.zeros((3, 2)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="NaN"):
        mean_average_precision(np.eye(2), np.array([[math.nan, 0], [0, 1]]))
    with pytest.raises(ValueError, match="shape"):
        mean_average_precision(np.eye(2), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="labels"):
        mean_average_precision(np.eye(2), np.eye(2), ["only-one"])


def test_accuracy_hand_worked_example():
    # Five samples, three classes; class z never occurs in the split.
    y = np.array([0, 0, 1, 1, 1])
    scores = np.array(
        [
            [0.9, 0.1, 0.0],  # true x, predicted x  ✓
            [0.2, 0.7, 0.1],  # true x, predicted y  ✗
            [0.1, 0.8, 0.1],  # true y, predicted y  ✓
            [0.1, 0.3, 0.6],  # true y, predicted z  ✗
            [0.2, 0.5, 0.3],  # true y, predicted y  ✓
        ]
    )
    # OSA = 3 correct / 5 = 0.6. Per class: x 1/2, y 2/3, z absent.
    # Confusion (rows true, cols predicted): x → [1, 1, 0], y → [0, 2, 1], z → [0, 0, 0].
    report = classification_accuracy(y, scores, ["x", "y", "z"])
    assert isinstance(report, SingleLabelMetrics)
    assert report.accuracy == pytest.approx(0.6)
    assert report.per_class_accuracy == {"x": pytest.approx(0.5), "y": pytest.approx(2 / 3), "z": None}
    assert report.mean_class_accuracy == pytest.approx((0.5 + 2 / 3) / 2)
    assert report.confusion_matrix == [[1, 1, 0], [0, 2, 1], [0, 0, 0]]
    assert report.absent == ["z"]
    # One-hot targets give the same report.
    onehot = np.eye(3)[y]
    assert classification_accuracy(onehot, scores, ["x", "y", "z"]).to_dict() == report.to_dict()


def test_accuracy_errors():
    with pytest.raises(ValueError, match="class indices"):
        classification_accuracy(np.array([0, 3]), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="zero samples"):
        classification_accuracy(np.zeros((0,), dtype=int), np.zeros((0, 3)))


def test_compute_metrics_dispatch_and_format():
    targets = np.array([[1, 0], [0, 1]])
    scores = np.array([[0.8, 0.1], [0.3, 0.6]])
    multi = compute_metrics(targets, scores, ["p", "q"], multi_label=True)
    single = compute_metrics(targets, scores, ["p", "q"], multi_label=False)
    assert multi.metric == "mAP" and multi.value == pytest.approx(1.0)
    assert single.metric == "accuracy" and single.value == pytest.approx(1.0)
    assert "mAP" in format_report(multi) and "OSA" in format_report(single)
