"""Evaluation metrics of the two benchmarks (paper §4.1).

- **EMOTIC** (multi-label, 26 categories): mean Average Precision. AP is scikit-learn's
  ``average_precision_score`` computed per category over the whole split (the step-wise area under the
  precision-recall curve, no interpolation), then averaged over the categories. A category without any
  positive in the split has no defined AP: it is excluded from the mean and listed in ``excluded``.
- **CAER-S** (single label, 7 classes): Overall Sample Accuracy (OSA, the fraction of samples whose argmax
  score is the true class), with per-class accuracy (recall of each class) and the confusion matrix from
  ``sklearn.metrics.confusion_matrix`` (rows = true class, columns = predicted class, in label order).

Scores may be logits or probabilities: AP depends only on the ranking of each class's scores and accuracy
only on the argmax, and sigmoid/softmax preserve both. Values are fractions in [0, 1]; tables print %.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, average_precision_score, confusion_matrix

PRIMARY_METRIC: dict[bool, str] = {True: "mAP", False: "accuracy"}  # keyed by multi_label


@dataclass
class MultiLabelMetrics:
    """mAP report of a multi-label split.

    Attributes:
        mAP: mean of ``per_class_ap`` over the classes that have at least one positive.
        per_class_ap: AP per class name; None for a class without positives.
        excluded: classes without any positive in the split (not part of the mean).
        positives: number of positive samples per class.
        num_samples: samples scored.
    """

    mAP: float
    per_class_ap: dict[str, float | None]
    excluded: list[str]
    positives: dict[str, int]
    num_samples: int
    metric: str = field(default="mAP", init=False)

    @property
    def value(self) -> float:
        return self.mAP

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": self.value, **asdict(self)}


@dataclass
class SingleLabelMetrics:
    """Accuracy report of a single-label split.

    Attributes:
        accuracy: overall sample accuracy (OSA).
        per_class_accuracy: recall of each class; None for a class absent from the split.
        mean_class_accuracy: mean of the defined per-class accuracies (not the paper's metric; shown because
            OSA hides class imbalance).
        confusion_matrix: K x K counts, rows = true class, columns = predicted class, in label order.
        labels: class names in matrix order.
        absent: classes with no sample in the split.
        num_samples: samples scored.
    """

    accuracy: float
    per_class_accuracy: dict[str, float | None]
    mean_class_accuracy: float
    confusion_matrix: list[list[int]]
    labels: list[str]
    absent: list[str]
    num_samples: int
    metric: str = field(default="accuracy", init=False)

    @property
    def value(self) -> float:
        return self.accuracy

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": self.value, **asdict(self)}


def _check_scores(scores: np.ndarray, num_samples: int, labels: Sequence[str] | None) -> list[str]:
    if scores.ndim != 2 or scores.shape[0] != num_samples:
        raise ValueError(f"scores must be (N, K) with N={num_samples} samples, got shape {scores.shape}")
    if num_samples == 0:
        raise ValueError("cannot compute metrics on zero samples")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinity (did training diverge?)")
    k = scores.shape[1]
    names = list(labels) if labels is not None else [f"class_{i}" for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} labels for {k} score columns")
    return names


def mean_average_precision(
    targets: np.ndarray, scores: np.ndarray, labels: Sequence[str] | None = None
) -> MultiLabelMetrics:
    """Per-class AP and their mean over the classes that have positives.

    Args:
        targets: (N, K) multi-hot ground truth (values > 0.5 count as positive).
        scores: (N, K) scores, higher = more likely.
        labels: K class names (default ``class_0`` ...).

    Raises:
        ValueError: shape mismatch, non-finite scores, or no class with a positive.
    """
    targets = np.asarray(targets)
    scores = np.asarray(scores, dtype=np.float64)
    if targets.ndim != 2:
        raise ValueError(f"targets must be (N, K) multi-hot, got shape {targets.shape}")
    names = _check_scores(scores, targets.shape[0], labels)
    if targets.shape != scores.shape:
        raise ValueError(f"targets {targets.shape} and scores {scores.shape} differ in shape")
    truth = targets > 0.5
    per_class: dict[str, float | None] = {}
    excluded: list[str] = []
    for k, name in enumerate(names):
        if truth[:, k].any():
            per_class[name] = float(average_precision_score(truth[:, k], scores[:, k]))
        else:
            # AP is undefined without positives (sklearn warns and returns 0 or nan depending on the version).
            per_class[name] = None
            excluded.append(name)
    defined = [v for v in per_class.values() if v is not None]
    if not defined:
        raise ValueError("no class has a positive sample: mAP is undefined")
    return MultiLabelMetrics(
        mAP=float(np.mean(defined)),
        per_class_ap=per_class,
        excluded=excluded,
        positives={name: int(n) for name, n in zip(names, truth.sum(axis=0))},
        num_samples=int(targets.shape[0]),
    )


def class_indices(targets: np.ndarray) -> np.ndarray:
    """Class index per sample from (N,) indices or (N, K) one-hot targets."""
    targets = np.asarray(targets)
    if targets.ndim == 1:
        return targets.astype(np.int64)
    if targets.ndim == 2:
        return targets.argmax(axis=1).astype(np.int64)
    raise ValueError(f"targets must be (N,) class indices or (N, K) one-hot, got shape {targets.shape}")


def classification_accuracy(
    targets: np.ndarray, scores: np.ndarray, labels: Sequence[str] | None = None
) -> SingleLabelMetrics:
    """Overall sample accuracy of argmax predictions, per-class accuracy and the confusion matrix.

    Args:
        targets: (N,) class indices or (N, K) one-hot ground truth.
        scores: (N, K) scores; the prediction is their argmax.
        labels: K class names (default ``class_0`` ...).

    Raises:
        ValueError: shape mismatch, non-finite scores, or a class index out of range.
    """
    scores = np.asarray(scores, dtype=np.float64)
    y_true = class_indices(targets)
    names = _check_scores(scores, y_true.shape[0], labels)
    k = scores.shape[1]
    if y_true.min() < 0 or y_true.max() >= k:
        raise ValueError(f"class indices must lie in [0, {k}), got [{y_true.min()}, {y_true.max()}]")
    y_pred = scores.argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, labels=np.arange(k))  # labels=: keep absent classes as rows
    support = cm.sum(axis=1)
    per_class: dict[str, float | None] = {
        name: (float(cm[i, i] / support[i]) if support[i] else None) for i, name in enumerate(names)
    }
    defined = [v for v in per_class.values() if v is not None]
    return SingleLabelMetrics(
        accuracy=float(accuracy_score(y_true, y_pred)),
        per_class_accuracy=per_class,
        mean_class_accuracy=float(np.mean(defined)),
        confusion_matrix=cm.astype(int).tolist(),
        labels=names,
        absent=[name for i, name in enumerate(names) if not support[i]],
        num_samples=int(y_true.shape[0]),
    )


def compute_metrics(
    targets: np.ndarray, scores: np.ndarray, labels: Sequence[str], multi_label: bool
) -> MultiLabelMetrics | SingleLabelMetrics:
    """The benchmark's metric: mAP for a multi-label dataset (EMOTIC), accuracy otherwise (CAER-S)."""
    if multi_label:
        return mean_average_precision(targets, scores, labels)
    return classification_accuracy(targets, scores, labels)


def format_report(report: MultiLabelMetrics | SingleLabelMetrics, title: str = "") -> str:
    """A plain-text table of a report (values in %)."""
    lines = [title] if title else []
    if isinstance(report, MultiLabelMetrics):
        width = max(len(n) for n in report.per_class_ap)
        lines.append(f"{'class':<{width}}  {'AP %':>7}  {'positives':>9}")
        for name, ap in report.per_class_ap.items():
            shown = f"{100 * ap:7.2f}" if ap is not None else "    n/a"
            lines.append(f"{name:<{width}}  {shown}  {report.positives[name]:>9d}")
        lines.append(f"{'mAP':<{width}}  {100 * report.mAP:7.2f}  (n={report.num_samples})")
        if report.excluded:
            lines.append(f"excluded (no positives): {', '.join(report.excluded)}")
    else:
        width = max(max(len(n) for n in report.labels), 8)
        lines.append(f"{'class':<{width}}  {'acc %':>7}  {'n':>6}   confusion row (predicted →)")
        for i, name in enumerate(report.labels):
            acc = report.per_class_accuracy[name]
            shown = f"{100 * acc:7.2f}" if acc is not None else "    n/a"
            row = report.confusion_matrix[i]
            lines.append(f"{name:<{width}}  {shown}  {sum(row):>6d}   {' '.join(f'{c:>5d}' for c in row)}")
        lines.append(f"{'OSA':<{width}}  {100 * report.accuracy:7.2f}  (n={report.num_samples})")
        lines.append(f"{'mean acc':<{width}}  {100 * report.mean_class_accuracy:7.2f}")
    return "\n".join(lines)
