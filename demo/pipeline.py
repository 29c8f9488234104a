"""From a photo to people, predictions and branch maps: the single code path of the app, CLIs and notebook.

:class:`Analyzer` loads the detectors and the three models of the paper's Figure 5 (concatenation, attention,
SIB-Net) once; :meth:`Analyzer.analyze` runs a photo through them:

1. intake (:func:`sibnet.io.load_image`: orientation, colour modes, size limits), bounded to
   :data:`sibnet.io.ANALYSIS_MAX_SIDE` for analysis — boxes are reported in original-photo pixels;
2. detection (MTCNN faces, YOLO persons when its weights are available, else bodies estimated from faces)
   and pairing into people, left to right;
3. the masked triple of every person (:func:`sibnet.data.masking.make_triple`, the function training uses);
4. per model, *one* batched forward of all people through the backbone; predictions come from the head;
5. per model, the branch maps of every person for their target class (default: SIB-Net's top emotion),
   reusing the cached final maps (:func:`sibnet.cam.branch_cams`: head-only backward).

:meth:`Analyzer.explain` recomputes step 5 only (another target or CAM method). Results are plain
dataclasses of numpy arrays; drawing lives in :mod:`demo.render`.

No face and no person in a photo: the analysis returns no people and the notice :data:`NO_PERSON`, rather than
pretending the whole frame is a person — a Figure-5 view of nobody would explain nothing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sibnet.boxes import Box, scale_box
from sibnet.cam import (
    BranchCAMs,
    ProjectedMap,
    branch_cams,
    check_method,
    composite_map,
    project_map,
    resolve_target,
)
from sibnet.checkpoints import CheckpointError, load_model
from sibnet.data.masking import Triple, make_triple
from sibnet.distributed import resolve_device
from sibnet.io import ANALYSIS_MAX_SIDE, ImageSource, fit_within, load_image
from sibnet.labels import EMOTIC_CATEGORIES
from sibnet.models.registry import create_model

log = logging.getLogger("sibnet.demo")

# The three models of the paper's Figure 5, in its row order: key → display title.
MODELS: dict[str, str] = {"concat": "Concatenation", "attention": "Attention", "sibnet": "SIB-Net"}
UNTRAINED = "untrained weights — predictions are meaningless"
NO_PERSON = "no person found: MTCNN found no face (and YOLO no person) in this photo"
WEIGHTS_ENV = "SIBNET_WEIGHTS"  # folder or Hub repo id holding sibnet/, concat/, attention/
MODEL_WEIGHTS_ENV = {key: f"SIBNET_WEIGHTS_{key.upper()}" for key in MODELS}  # one checkpoint per model
REVISION_ENV = "SIBNET_WEIGHTS_REVISION"
DEVICE_ENV = "SIBNET_DEVICE"
UNTRAINED_SEED = 0  # untrained models are seeded so the demo's (meaningless) output is at least reproducible


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device``, else ``$SIBNET_DEVICE``, else CUDA when available, else CPU (the training CLI's rule)."""
    return resolve_device(device or os.environ.get(DEVICE_ENV))


@dataclass(frozen=True)
class PersonInfo:
    """One detected person; boxes in original-photo pixels."""

    id: int
    face_box: Box
    body_box: Box
    face_source: str  # "mtcnn" | "estimated"
    body_source: str  # "yolo" | "estimated"
    face_prob: float | None
    body_score: float | None

    @property
    def face_estimated(self) -> bool:
        return self.face_source == "estimated"

    @property
    def body_estimated(self) -> bool:
        return self.body_source == "estimated"


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

    def projected(self, scale: float = 1.0) -> dict[str, ProjectedMap]:
        """Maps placed on the photo (boxes in original pixels when ``scale`` = original/analysed)."""
        return {b: project_map(m, self.regions[b], scale) for b, m in self.maps.items()}

    def composite(self, height: int, width: int) -> np.ndarray:
        """(height, width) map of the analysed image, scene then body then face pasted on top."""
        return composite_map(self.projected(), height, width)


@dataclass(frozen=True)
class Analysis:
    """Everything one analysis produced (plain data; :mod:`demo.render` draws it)."""

    image: np.ndarray  # the analysed RGB image (downscaled when the photo is large)
    original_size: tuple[int, int]  # (width, height) of the photo
    scale: float  # original / analysed
    people: tuple[PersonInfo, ...]
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
    # Cached for explain(), not part of the result's meaning: per model the final maps of all people, and per
    # input recipe (size, resize, mean, std) each person's branch regions.
    _features: dict[str, tuple[torch.Tensor, ...]] = field(default_factory=dict, repr=False, compare=False)
    _regions: dict[tuple, list[tuple[Box, Box, Box]]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def trained(self) -> bool:
        return all(p.trained for p in self.predictions.values())

    def target_name(self, person: int = 0) -> str:
        return self.labels[self.targets[person]]

    def to_json(self, top_k: int = 5) -> dict[str, Any]:
        """A JSON-ready summary of everything shown (no image arrays)."""
        people = []
        for p in self.people:
            entry: dict[str, Any] = {
                "id": p.id,
                "face_box": [round(v, 1) for v in p.face_box],
                "body_box": [round(v, 1) for v in p.body_box],
                "face_source": p.face_source,
                "body_source": p.body_source,
                "face_prob": p.face_prob,
                "body_score": p.body_score,
                "target": self.labels[self.targets[p.id]] if p.id in self.targets else None,
                "models": {},
            }
            for key, pred in self.predictions.items():
                scores = {label: round(float(s), 5) for label, s in zip(self.labels, pred.scores[p.id])}
                model_entry: dict[str, Any] = {
                    "title": pred.title,
                    "top": [[name, round(score, 5)] for name, score in pred.top(p.id, self.labels, top_k)],
                    "scores": scores,
                }
                person_maps = self.maps.get(key, {}).get(p.id)
                if person_maps is not None:
                    model_entry["target_score"] = round(person_maps.target_score, 5)
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


@dataclass
class _LoadedModel:
    key: str
    model: torch.nn.Module
    trained: bool
    source: str


def _weights_sources(
    weights: str | Path | None, per_model: Mapping[str, str | Path | None]
) -> dict[str, tuple[str | Path, str | None] | None]:
    """Resolve, per model, (checkpoint source, subfolder) from arguments, then environment variables."""
    root = weights if weights is not None else os.environ.get(WEIGHTS_ENV) or None
    out: dict[str, tuple[str | Path, str | None] | None] = {}
    for key in MODELS:
        explicit = per_model.get(key) or os.environ.get(MODEL_WEIGHTS_ENV[key]) or None
        if explicit is not None:
            out[key] = (explicit, None)
        elif root is not None:
            out[key] = (root, key)
        else:
            out[key] = None
    return out


class Analyzer:
    """Detectors and the three Figure-5 models, loaded once; :meth:`analyze` a photo, :meth:`explain` again.

    Args:
        weights: a folder (or Hub repo id) holding ``sibnet/``, ``concat/`` and ``attention/`` checkpoint
            folders; default ``$SIBNET_WEIGHTS``. Without any, the models run untrained and every result says
            so (:data:`UNTRAINED`).
        sibnet, concat, attention: one checkpoint (folder or Hub id) per model; default
            ``$SIBNET_WEIGHTS_<MODEL>``; these win over ``weights``.
        device: "cpu", "cuda", "cuda:1"...; default ``$SIBNET_DEVICE``, else CUDA when available.
        revision: Hub revision for repo ids (default ``$SIBNET_WEIGHTS_REVISION``).
        yolo_weights: YOLO weights name or path (default ``$SIBNET_YOLO_WEIGHTS`` or ``yolo11n.pt``).
        face_detector, person_detector: ready detectors (tests, sharing); ``person_detector=False`` disables
            YOLO (bodies estimated from faces).
        untrained_overrides: ModelConfig overrides for untrained models (tests use small inputs).

    Raises:
        CheckpointError: a checkpoint asked for is missing/corrupt, or the three disagree on their labels.
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        *,
        sibnet: str | Path | None = None,
        concat: str | Path | None = None,
        attention: str | Path | None = None,
        device: str | torch.device | None = None,
        revision: str | None = None,
        yolo_weights: str | None = None,
        face_detector: Any = None,
        person_detector: Any = None,
        untrained_overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.device = pick_device(device)
        self.load_notices: list[str] = []
        self.load_timings: dict[str, float] = {}
        revision = revision or os.environ.get(REVISION_ENV) or None
        sources = _weights_sources(weights, {"sibnet": sibnet, "concat": concat, "attention": attention})
        self.models: dict[str, _LoadedModel] = {}
        for key, source in sources.items():
            start = time.perf_counter()
            self.models[key] = self._load(key, source, revision, dict(untrained_overrides or {}))
            self.load_timings[f"load {key}"] = (time.perf_counter() - start) * 1e3
            log.info(
                "loaded %s (%s) in %.0f ms",
                MODELS[key],
                self.models[key].source,
                self.load_timings[f"load {key}"],
            )
        label_sets = {key: tuple(m.model.config.labels) for key, m in self.models.items()}
        if len(set(label_sets.values())) != 1:
            detail = "; ".join(f"{k}: {len(v)} labels ({', '.join(v[:3])}...)" for k, v in label_sets.items())
            raise CheckpointError(f"the three checkpoints must share one label set, got {detail}")
        first = self.models["sibnet"].model.config
        self.labels: tuple[str, ...] = tuple(first.labels)
        self.multi_label: bool = bool(first.multi_label)
        if not all(m.trained for m in self.models.values()):
            untrained = [MODELS[k] for k, m in self.models.items() if not m.trained]
            self.load_notices.append(f"{UNTRAINED} ({', '.join(untrained)})")

        start = time.perf_counter()
        if face_detector is None:
            from sibnet.detect import FaceDetector

            face_detector = FaceDetector(device=str(self.device))
        self.face_detector = face_detector
        self.load_timings["load face detector"] = (time.perf_counter() - start) * 1e3
        log.info("loaded face detector (MTCNN) in %.0f ms", self.load_timings["load face detector"])
        start = time.perf_counter()
        self.person_detector = None if person_detector is False else person_detector
        if person_detector is None:
            from sibnet.detect import DetectorUnavailable, PersonDetector

            try:
                self.person_detector = PersonDetector(weights=yolo_weights, device=str(self.device))
            except DetectorUnavailable as err:
                self.load_notices.append(f"no person detector, bodies are estimated from faces: {err}")
                log.info("person detector unavailable: %s", err)
        elif person_detector is False:
            self.load_notices.append("person detector disabled: bodies are estimated from faces")
        self.load_timings["load person detector"] = (time.perf_counter() - start) * 1e3
        log.info(
            "person detector: %s", "YOLO" if self.person_detector is not None else "none (estimated bodies)"
        )
        self._lock = threading.Lock()  # one analysis at a time per analyzer: bounded memory, fair timings

    def _load(
        self,
        key: str,
        source: tuple[str | Path, str | None] | None,
        revision: str | None,
        overrides: dict[str, Any],
    ) -> _LoadedModel:
        if source is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(UNTRAINED_SEED)
                model = create_model(key, labels=EMOTIC_CATEGORIES, **overrides)
            return _LoadedModel(key, model.to(self.device).eval(), False, "untrained")
        path, subfolder = source
        local = Path(path).expanduser()
        if subfolder is not None and local.is_dir() and not (local / subfolder).is_dir():
            self.load_notices.append(f"{local} has no {subfolder}/ checkpoint: {MODELS[key]} runs untrained")
            return self._load(key, None, revision, overrides)
        model = load_model(path, subfolder=subfolder, revision=revision, device=self.device)
        if model.config.name != key:
            self.load_notices.append(f"the {MODELS[key]} slot holds a {model.config.name!r} model ({path})")
        return _LoadedModel(key, model, True, getattr(model, "checkpoint_source", str(path)))

    @property
    def trained(self) -> bool:
        return all(m.trained for m in self.models.values())

    # --- analysis ---

    def analyze(
        self,
        image: ImageSource,
        person: int | None = None,
        target: str | int | None = None,
        method: str = "gradcam",
        progress: Callable[[float, str], None] | None = None,
    ) -> Analysis:
        """Analyse a photo: people, every model's scores for each, and each model's branch maps.

        Args:
            image: path, bytes, file object, PIL image or array (see :func:`sibnet.io.load_image`).
            person: compute maps for this person id only (default: every person; they are cheap).
            target: target emotion (name or index) for the maps; default each person's SIB-Net top emotion.
            method: CAM method (see :data:`sibnet.cam.CAM_METHODS`).
            progress: called as ``progress(fraction, stage)`` before each stage (the UI's progress bar).

        Raises:
            sibnet.io.ImageError: unreadable or refused image (message says why).
            ValueError: unknown method or target, person out of range.
        """
        method = check_method(method)
        if target is not None:
            resolve_target(self.labels, target)  # fail before any work
        report = progress or (lambda fraction, stage: None)
        with self._lock:
            timings: dict[str, float] = {}
            started = clock = time.perf_counter()
            loaded = load_image(image)
            rgb, shrink = fit_within(loaded.rgb, ANALYSIS_MAX_SIDE)
            scale = 1.0 / shrink
            notices = [*self.load_notices, *loaded.notices]
            if shrink < 1.0:
                notices.append(
                    f"large photo ({loaded.size[0]}×{loaded.size[1]}) analysed at {rgb.shape[1]}×{rgb.shape[0]}; "
                    "boxes are reported in the original's pixels"
                )
            timings["intake"] = _ms(clock)

            report(0.1, "finding faces and people")
            clock = time.perf_counter()
            from sibnet.detect import pair_people

            faces = self.face_detector.detect(rgb)
            timings["detect faces"] = _ms(clock)
            clock = time.perf_counter()
            bodies = self.person_detector.detect(rgb) if self.person_detector is not None else []
            timings["detect persons"] = _ms(clock)
            found = pair_people(faces, bodies, rgb.shape[1], rgb.shape[0])
            people = tuple(
                PersonInfo(
                    p.id,
                    scale_box(p.face_box, scale),
                    scale_box(p.body_box, scale),
                    p.face_source,
                    p.body_source,
                    p.face_prob,
                    p.body_score,
                )
                for p in found
            )
            for p in people:
                if p.face_estimated:
                    notices.append(f"person {p.id}: face box estimated from the body (no face detected)")
                if p.body_estimated and self.person_detector is not None:
                    notices.append(f"person {p.id}: body box estimated from the face (no person box matched)")
            if self.person_detector is None and people:
                notices.append("body boxes estimated from faces (no person detector)")
            if person is not None and not 0 <= person < len(people):
                raise ValueError(_person_range(person, len(people)))
            if not people:
                notices.append(NO_PERSON)
                timings["total"] = _ms(started)
                return self._empty(rgb, loaded.size, scale, method, notices, timings)

            report(0.35, "masking face, body and scene")
            clock = time.perf_counter()
            triples = self._triples(rgb, found)
            timings["masking"] = _ms(clock)

            features: dict[str, tuple[torch.Tensor, ...]] = {}
            predictions: dict[str, ModelPrediction] = {}
            for step, (key, entry) in enumerate(self.models.items()):
                report(0.4 + 0.15 * step, f"running {MODELS[key]}")
                clock = time.perf_counter()
                batch = _batch(triples[_input_key(entry.model)], self.device)
                with torch.no_grad():
                    feats = tuple(entry.model.forward_features(*batch))
                    out = entry.model.forward_head(feats)
                features[key] = feats
                predictions[key] = ModelPrediction(
                    key,
                    MODELS[key],
                    self._scores(out.logits),
                    None
                    if out.branch_logits is None
                    else np.stack([self._scores(b) for b in out.branch_logits], axis=1),
                    entry.trained,
                    entry.source,
                )
                timings[f"forward {key}"] = _ms(clock)

            first_triples = next(iter(triples.values()))
            masked = {p.id: first_triples[p.id].masked_images() for p in people}
            analysis = Analysis(
                image=rgb,
                original_size=loaded.size,
                scale=scale,
                people=people,
                labels=self.labels,
                multi_label=self.multi_label,
                predictions=predictions,
                method=method,
                targets={},
                maps={},
                masked_inputs=masked,
                device=str(self.device),
                timings=timings,
                notices=tuple(dict.fromkeys(notices)),
                _features=features,
                _regions={k: [t.regions for t in ts] for k, ts in triples.items()},
            )
            report(0.85, "computing branch maps")
            result = self._explain(analysis, person, target, method)
            result.timings["total"] = _ms(started)
        return result

    def explain(
        self,
        analysis: Analysis,
        person: int | None = None,
        target: str | int | None = None,
        method: str | None = None,
    ) -> Analysis:
        """Recompute the branch maps only (another target or method), reusing detection and the backbone pass."""
        method = check_method(method or analysis.method)
        if target is not None:
            resolve_target(self.labels, target)
        if person is not None and not 0 <= person < len(analysis.people):
            raise ValueError(_person_range(person, len(analysis.people)))
        if not analysis.people:
            return replace(analysis, method=method)
        with self._lock:
            return self._explain(analysis, person, target, method)

    def _explain(
        self, analysis: Analysis, person: int | None, target: str | int | None, method: str
    ) -> Analysis:
        ids = [p.id for p in analysis.people] if person is None else [person]
        sib = analysis.predictions["sibnet"].scores
        targets = dict(analysis.targets)
        for i in ids:
            targets[i] = resolve_target(self.labels, target) if target is not None else int(np.argmax(sib[i]))
        timings = dict(analysis.timings)
        maps = {key: dict(analysis.maps.get(key, {})) for key in self.models}
        for key, entry in self.models.items():
            clock = time.perf_counter()
            feats = tuple(f[ids] for f in analysis._features[key])
            cams: BranchCAMs = branch_cams(
                entry.model, None, [targets[i] for i in ids], method, features=feats
            )
            probs = analysis.predictions[key].scores
            regions = analysis._regions[_input_key(entry.model)]
            for row, i in enumerate(ids):
                maps[key][i] = PersonMaps(
                    cams.for_item(row),
                    dict(zip(("face", "body", "scene"), regions[i])),
                    targets[i],
                    float(probs[i, targets[i]]),
                )
            timings[f"cam {key}"] = _ms(clock)
        return replace(analysis, maps=maps, targets=targets, method=method, timings=timings)

    def model_inputs(self, analysis: Analysis) -> dict[str, tuple[torch.Tensor, ...]]:
        """Each model's input batch for the people of ``analysis``, exactly as :meth:`analyze` built it (masked
        triples from the analysed image, stacked, on the analyzer's device). The analysis keeps only the
        backbone features, so this rebuilds the triples (a few ms a person); for benchmarks and custom CAM calls.
        """
        to_analysed = 1.0 / analysis.scale  # people's boxes are in original pixels
        people = [
            replace(
                p, face_box=scale_box(p.face_box, to_analysed), body_box=scale_box(p.body_box, to_analysed)
            )
            for p in analysis.people
        ]
        triples = self._triples(analysis.image, people)
        return {key: _batch(triples[_input_key(e.model)], self.device) for key, e in self.models.items()}

    # --- helpers ---

    def _scores(self, logits: torch.Tensor) -> np.ndarray:
        logits = logits.float()
        probs = torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=-1)
        return probs.cpu().numpy().astype(np.float32)

    def _triples(self, rgb: np.ndarray, found: Sequence[Any]) -> dict[tuple, list[Triple]]:
        """Masked triples per distinct input recipe among the models (usually one), built once each."""
        out: dict[tuple, list[Triple]] = {}
        for entry in self.models.values():
            key = _input_key(entry.model)
            if key not in out:
                size, resize, mean, std = key
                out[key] = [
                    make_triple(rgb, p.face_box, p.body_box, size=size, resize=resize, mean=mean, std=std)
                    for p in found
                ]
        return out

    def _empty(
        self,
        rgb: np.ndarray,
        size: tuple[int, int],
        scale: float,
        method: str,
        notices: list[str],
        timings: dict[str, float],
    ) -> Analysis:
        k = len(self.labels)
        predictions = {
            key: ModelPrediction(key, MODELS[key], np.zeros((0, k), np.float32), None, m.trained, m.source)
            for key, m in self.models.items()
        }
        return Analysis(
            rgb, size, scale, (), self.labels, self.multi_label, predictions, method, {}, {}, {},
            str(self.device), timings, tuple(dict.fromkeys(notices)),
        )  # fmt: skip


def _input_key(model: torch.nn.Module) -> tuple:
    cfg = model.config
    return (cfg.input_size, cfg.resize, tuple(cfg.mean), tuple(cfg.std))


def _batch(triples: Sequence[Triple], device: torch.device) -> tuple[torch.Tensor, ...]:
    return tuple(torch.stack(ts).to(device) for ts in zip(*(t.stack() for t in triples)))


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1e3


def _person_range(person: int, count: int) -> str:
    if count == 0:
        return f"person {person} asked for, but no person was found in this photo"
    return f"person {person} out of range: this photo has {count} {'person' if count == 1 else 'people'} (0-{count - 1})"
