"""What an analysis produces: plain dataclasses of numpy arrays, drawn by :mod:`demo.render`, served by
:mod:`demo.ui`, written by the command lines.

One coordinate system: every box and region is in pixels of the *analysed* image (``Analysis.image``, the
photo bounded to :data:`sibnet.io.ANALYSIS_MAX_SIDE`), and ``Analysis.scale`` (original / analysed) converts
them once, at the edge: :meth:`Analysis.to_json` reports original-photo pixels. People are
:class:`sibnet.detect.Person` as the detectors and the pairing produced them.

Nothing here holds torch tensors: the analyzer keeps its own cache of backbone features for
:meth:`demo.pipeline.Analyzer.explain`, so an analysis can be stored (e.g. in the web app's session state),
copied or pickled by the server without dragging model state along.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sibnet.attribution import BranchAttributions, shapley_values
from sibnet.boxes import Box, scale_box
from sibnet.cam import ProjectedMap, composite_map, project_map
from sibnet.data.masking import BRANCHES
from sibnet.detect import Person

# The three models of the paper's Figure 5, in its row order: key → display title.
MODELS: dict[str, str] = {"concat": "Concatenation", "attention": "Attention", "sibnet": "SIB-Net"}
UNTRAINED = "untrained weights — predictions are meaningless"
NO_PERSON = "no person found: no face (and no person) was detected in this photo"
NO_PERSON_DETECTOR = (
    "bodies are estimated from the faces (no person detector is loaded), so people whose face is not visible "
    "are not found"
)


@dataclass(frozen=True)
class ModelPrediction:
    """One model's scores for every person."""

    key: str
    title: str
    scores: np.ndarray  # (P, K): sigmoid (multi-label) or softmax (single-label)
    branch_scores: np.ndarray | None  # (P, 3, K) scores of the BCM branch heads, where the model has them
    trained: bool
    source: str  # checkpoint folder / hub id, or "untrained"

    def top(self, person: int, labels: Sequence[str], k: int = 5) -> list[tuple[str, float]]:
        order = np.argsort(-self.scores[person], kind="stable")[:k]
        return [(labels[i], float(self.scores[person, i])) for i in order]


@dataclass(frozen=True)
class PersonMaps:
    """One model's branch maps for one person."""

    maps: dict[str, np.ndarray]  # branch → (S, S) map in [0, 1] on the branch tensor
    regions: dict[str, Box]  # branch → rectangle its tensor covers, in analysed-image pixels
    target: int
    target_score: float  # the model's score (probability) for the target

    def projected(self) -> dict[str, ProjectedMap]:
        """Maps placed on the analysed image (each covering its branch's region)."""
        return {b: project_map(m, self.regions[b]) for b, m in self.maps.items()}

    def composite(self, height: int, width: int) -> np.ndarray:
        """(height, width) map of the analysed image, scene then body then face pasted on top."""
        return composite_map(self.projected(), height, width)


def _rounded(box: Box, scale: float) -> list[float]:
    return [round(v, 1) for v in scale_box(box, scale)]


def _finite(value: float) -> float | None:
    return round(float(value), 5) if math.isfinite(value) else None


@dataclass(frozen=True)
class Analysis:
    """Everything one analysis produced (plain data; :mod:`demo.render` draws it)."""

    key: str  # identifies the analysis (the analyzer's feature cache is keyed by it)
    image: np.ndarray  # the analysed RGB image (downscaled when the photo is large)
    original_size: tuple[int, int]  # (width, height) of the photo
    scale: float  # original / analysed: multiply analysed-pixel coordinates by it for the photo's pixels
    people: tuple[Person, ...]  # boxes in analysed pixels
    labels: tuple[str, ...]
    multi_label: bool
    predictions: dict[str, ModelPrediction]
    method: str
    targets: dict[int, int]  # person id → target class index
    maps: dict[str, dict[int, PersonMaps]]  # model key → person id → maps
    masked_inputs: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]  # person → face, body, scene (uint8)
    device: str
    timings: dict[str, float]  # stage → milliseconds
    notices: tuple[str, ...]
    # model key → every person's branch attributions for every class (Analyzer.attribute; empty until then)
    attributions: dict[str, BranchAttributions] = field(default_factory=dict)

    @property
    def trained(self) -> bool:
        return all(p.trained for p in self.predictions.values())

    def target_name(self, person: int = 0) -> str:
        return self.labels[self.targets[person]]

    def attribution(self, key: str, person: int) -> dict[str, Any] | None:
        """Model ``key``'s branch attributions for ``person``'s current target, or None before
        :meth:`demo.pipeline.Analyzer.attribute` ran.

        Returns ``{"target", "values": {branch: φ}, "score_all", "score_none", "coalitions": {"face+body": p,
        ...}}``: the Shapley values of the target's probability, which add up to ``score_all − score_none``.
        """
        attr = self.attributions.get(key)
        if attr is None or person not in self.targets:
            return None
        target = self.targets[person]
        scores = attr.probabilities[person, :, target].astype(np.float64)
        values = shapley_values(scores[None])[0]
        return {
            "target": self.labels[target],
            "values": {b: _finite(v) for b, v in zip(attr.branches, values)},
            "score_all": _finite(scores[-1]),
            "score_none": _finite(scores[0]),
            "coalitions": {"+".join(c) or "none": _finite(v) for c, v in zip(attr.coalitions, scores)},
        }

    def to_json(self, top_k: int = 5) -> dict[str, Any]:
        """A JSON-ready summary of everything shown (no image arrays); boxes in original-photo pixels.

        People carry a 0-based ``id`` (what the Python API and the HTTP API take) and the ``number`` screens show
        (``id + 1``, left to right). After :meth:`~demo.pipeline.Analyzer.attribute`, each model of each person
        has an ``attribution`` (see :meth:`attribution`). Models with branch heads (SIB-Net's BCM, §3.4) add ``branch_scores``: per
        branch, the score of every label from that branch's own classifier, beside the fused ``scores``.
        """
        people = []
        for p in self.people:
            entry: dict[str, Any] = {
                "id": p.id,
                "number": p.id + 1,
                "face_box": _rounded(p.face_box, self.scale),
                "body_box": _rounded(p.body_box, self.scale),
                "face_source": p.face_source,
                "body_source": p.body_source,
                "face_prob": p.face_prob,
                "body_score": p.body_score,
                "target": self.labels[self.targets[p.id]] if p.id in self.targets else None,
                "models": {},
            }
            for key, pred in self.predictions.items():
                scores = {label: _finite(s) for label, s in zip(self.labels, pred.scores[p.id])}
                model_entry: dict[str, Any] = {
                    "title": pred.title,
                    "top": [[name, _finite(score)] for name, score in pred.top(p.id, self.labels, top_k)],
                    "scores": scores,
                }
                if pred.branch_scores is not None:
                    model_entry["branch_scores"] = {
                        branch: {
                            label: _finite(s) for label, s in zip(self.labels, pred.branch_scores[p.id, b])
                        }
                        for b, branch in enumerate(BRANCHES)
                    }
                person_maps = self.maps.get(key, {}).get(p.id)
                if person_maps is not None:
                    model_entry["target_score"] = _finite(person_maps.target_score)
                attribution = self.attribution(key, p.id)
                if attribution is not None:
                    model_entry["attribution"] = attribution
                entry["models"][key] = model_entry
            people.append(entry)
        return {
            "people": people,
            "labels": list(self.labels),
            "multi_label": self.multi_label,
            "method": self.method,
            "models": {
                k: {"title": p.title, "trained": p.trained, "source": p.source}
                for k, p in self.predictions.items()
            },
            "trained": self.trained,
            "image_size": list(self.original_size),
            "analysed_size": [int(self.image.shape[1]), int(self.image.shape[0])],
            "device": self.device,
            "timings_ms": {k: round(v, 1) for k, v in self.timings.items()},
            "notices": list(self.notices),
        }
