"""From a photo to people, predictions and branch maps: the single code path of the app, CLIs and notebook.

:class:`Analyzer` loads the detectors and the three models of the paper's Figure 5 (concatenation, attention,
SIB-Net) once; :meth:`Analyzer.analyze` runs a photo through them, one small method per stage:

1. :meth:`~Analyzer._intake` (:func:`sibnet.io.load_image`: orientation, colour modes, size limits), bounded
   to :data:`sibnet.io.ANALYSIS_MAX_SIDE`; everything after works in pixels of that analysed image;
2. :meth:`~Analyzer._detect`: MTCNN faces, YOLO persons when its weights are available (else bodies
   estimated from faces), paired into people, left to right;
3. :meth:`~Analyzer._triples`: the masked triple of every person through each model's input recipe
   (``model.config.transform``, the object training uses), built once per distinct recipe;
4. :meth:`~Analyzer._predict`: per model, *one* batched forward of all people through the backbone;
   predictions come from the head, the final maps go to the analyzer's feature cache;
5. :meth:`~Analyzer._explain`: per model, the branch maps of every person for their target class (default:
   SIB-Net's top emotion), from the cached final maps (:func:`sibnet.cam.branch_cams`: head-only backward).

:meth:`Analyzer.explain` recomputes step 5 only (another target or CAM method); when the features of an
analysis have left the cache it recomputes them from the analysis itself. Results are the plain dataclasses
of :mod:`demo.results`; drawing lives in :mod:`demo.render`. Where weights come from (flags, environment
variables) is the command line's business (:mod:`demo.cli`); this class takes explicit sources.

No face and no person in a photo: the analysis returns no people and the notice :data:`NO_PERSON`, rather than
pretending the whole frame is a person — a Figure-5 view of nobody would explain nothing.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from demo.limits import MAX_PEOPLE, at_most, check_budget
from demo.models import (
    CachedFeatures,
    FeatureCache,
    LoadedModel,
    ModelSource,
    check_weights_folder,
    figure5_sources,
)
from demo.results import (
    MODELS,
    NO_PERSON,
    NO_PERSON_DETECTOR,
    UNTRAINED,
    Analysis,
    ModelPrediction,
    PersonMaps,
)
from sibnet.attribution import branch_attributions
from sibnet.cam import BranchCAMs, branch_cams, check_method, resolve_target
from sibnet.checkpoints import load_model
from sibnet.data.masking import BRANCHES, InputTransform, Triple, batch_triples
from sibnet.detect import Person, pair_people
from sibnet.distributed import resolve_device
from sibnet.errors import CheckpointError, DetectorUnavailable
from sibnet.inference import prepare, resolve_precision
from sibnet.io import ANALYSIS_MAX_SIDE, ImageSource, LoadedImage, fit_within, load_image
from sibnet.labels import EMOTIC_CATEGORIES
from sibnet.models.registry import create_model

__all__ = ["MODELS", "NO_PERSON", "UNTRAINED", "Analysis", "Analyzer", "ModelSource"]

log = logging.getLogger("sibnet.demo")

UNTRAINED_SEED = 0  # untrained models are seeded so the demo's (meaningless) output is at least reproducible
FEATURE_CACHE_SIZE = 16  # analyses whose backbone features are kept for explain() (a few MB each)


class Analyzer:
    """Detectors and the three Figure-5 models, loaded once; :meth:`analyze` a photo, :meth:`explain` again.

    Args:
        weights: a folder (or Hub repo id) holding ``sibnet/``, ``concat/`` and ``attention/`` checkpoint
            folders. Without any, the models run untrained and every result says so (:data:`UNTRAINED`).
        sibnet, concat, attention: one checkpoint (folder or Hub id) per model; these win over ``weights``.
        device: "cpu", "cuda", "cuda:1"...; default CUDA when available.
        revision: Hub revision for repo ids.
        yolo_weights: YOLO weights name or path (default ``yolo11n.pt``).
        face_detector, person_detector: ready detectors (tests, sharing); ``person_detector=False`` disables
            YOLO (bodies estimated from faces).
        untrained_overrides: ModelConfig overrides for untrained models (tests use small inputs).
        precision: the backbones' precision, ``"auto"`` (bf16 where the device computes it natively, else
            float32), ``"bf16"`` or ``"fp32"`` (:mod:`sibnet.inference`); heads and CAMs are float32 always.

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
        precision: str = "auto",
    ) -> None:
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.load_notices: list[str] = []
        self.load_timings: dict[str, float] = {}
        sources = figure5_sources(weights, {"sibnet": sibnet, "concat": concat, "attention": attention})
        check_weights_folder(weights, sources)
        self.models: dict[str, LoadedModel] = {}
        for key, source in sources.items():
            start = time.perf_counter()
            self.models[key] = self._load(key, source, revision, dict(untrained_overrides or {}))
            self.load_timings[f"load {key}"] = _ms(start)
            log.info("loaded %s (%s) in %.0f ms", MODELS[key], self.models[key].source, _ms(start))
        label_sets = {key: tuple(m.model.config.labels) for key, m in self.models.items()}
        if len(set(label_sets.values())) != 1:
            detail = "; ".join(f"{k}: {len(v)} labels ({', '.join(v[:3])}...)" for k, v in label_sets.items())
            raise CheckpointError(f"the three checkpoints must share one label set, got {detail}")
        first = self.models["sibnet"].model.config
        self.labels: tuple[str, ...] = tuple(first.labels)
        self.multi_label: bool = bool(first.multi_label)
        if not self.trained:
            untrained = [MODELS[k] for k, m in self.models.items() if not m.trained]
            self.load_notices.append(f"{UNTRAINED} ({', '.join(untrained)})")
        self.face_detector = self._face_detector(face_detector)
        self.person_detector = self._person_detector(person_detector, yolo_weights)
        self._cache = FeatureCache(FEATURE_CACHE_SIZE)
        self._lock = threading.Lock()  # one analysis at a time per analyzer: bounded memory, fair timings

    # --- loading ---

    def _load(
        self, key: str, source: ModelSource | None, revision: str | None, overrides: dict[str, Any]
    ) -> LoadedModel:
        if source is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(UNTRAINED_SEED)
                model = create_model(key, labels=EMOTIC_CATEGORIES, **overrides)
            model = model.to(self.device).eval()
            return LoadedModel(key, model, False, "untrained", prepare(model, self.device, self.precision))
        local = Path(source.path).expanduser()
        if source.subfolder is not None and local.is_dir() and not (local / source.subfolder).is_dir():
            self.load_notices.append(
                f"{local} has no {source.subfolder}/ checkpoint: {MODELS[key]} runs untrained"
            )
            return self._load(key, None, revision, overrides)
        model = load_model(source.path, subfolder=source.subfolder, revision=revision, device=self.device)
        if model.config.name != key:
            self.load_notices.append(
                f"the {MODELS[key]} slot holds a {model.config.name!r} model ({source.path})"
            )
        source_name = getattr(model, "checkpoint_source", str(source.path))
        return LoadedModel(key, model, True, source_name, prepare(model.eval(), self.device, self.precision))

    def _face_detector(self, given: Any) -> Any:
        start = time.perf_counter()
        if given is None:
            from sibnet.detect import FaceDetector

            given = FaceDetector(device=str(self.device))
        self.load_timings["load face detector"] = _ms(start)
        log.info("loaded face detector (MTCNN) in %.0f ms", _ms(start))
        return given

    def _person_detector(self, given: Any, yolo_weights: str | None) -> Any:
        start = time.perf_counter()
        detector = None if given is False else given
        if given is None:
            from sibnet.detect import PersonDetector

            try:
                detector = PersonDetector(weights=yolo_weights, device=str(self.device))
            except DetectorUnavailable as err:
                self.load_notices.append(f"no person detector, bodies are estimated from faces: {err}")
                log.info("person detector unavailable: %s", err)
        elif given is False:
            self.load_notices.append("person detector disabled: bodies are estimated from faces")
        self.load_timings["load person detector"] = _ms(start)
        log.info("person detector: %s", "YOLO" if detector is not None else "none (estimated bodies)")
        return detector

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
        budget_s: float | None = None,
    ) -> Analysis:
        """Analyse a photo: people, every model's scores for each, and each model's branch maps.

        Args:
            image: path, bytes, file object, PIL image or array (see :func:`sibnet.io.load_image`).
            person: compute maps for this person id only (default: every person; they are cheap).
            target: target emotion (name or index) for the maps; default each person's SIB-Net top emotion.
            method: CAM method (see :data:`sibnet.cam.CAM_METHODS`).
            progress: called as ``progress(fraction, stage)`` before each stage (the UI's progress bar).
            budget_s: refuse to go on once this many seconds have passed (checked between stages; the web app
                sets it so one photo cannot hold the single processing slot).

        Raises:
            sibnet.io.ImageError: unreadable or refused image (message says why).
            ValueError: unknown method or target, person out of range.
            sibnet.errors.WorkLimitExceeded: the time budget ran out.
            sibnet.errors.CheckpointError: a model produced non-finite scores (broken weights).
        """
        method = check_method(method)
        if target is not None:
            resolve_target(self.labels, target)  # fail before any work
        report = progress or (lambda fraction, stage: None)
        with self._lock:
            timings: dict[str, float] = {}
            started = time.perf_counter()
            loaded, rgb, scale, notices = self._intake(image, timings)
            report(0.1, "finding faces and people")
            people = self._detect(rgb, notices, timings)
            check_budget(started, budget_s, "finding the people")
            if person is not None and not 0 <= person < len(people):
                raise ValueError(_person_range(person, len(people)))
            if not people:
                notices.append(NO_PERSON)
                timings["total"] = _ms(started)
                return self._empty(rgb, loaded.size, scale, method, notices, timings)
            report(0.35, "masking face, body and scene")
            triples = self._triples(rgb, people, timings)
            inputs = self._batches(triples)
            features, predictions = self._predict(inputs, timings, report)
            check_budget(started, budget_s, "running the models")
            first = next(iter(triples.values()))
            analysis = Analysis(
                key=uuid.uuid4().hex,
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
                masked_inputs={p.id: first[p.id].masked_images() for p in people},
                device=str(self.device),
                timings=timings,
                notices=tuple(dict.fromkeys(notices)),
            )
            cached = CachedFeatures(features, _regions(triples), inputs)
            self._cache.put(analysis.key, cached)
            report(0.85, "computing branch maps")
            result = self._explain(analysis, person, target, method, cached)
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
            return self._explain(analysis, person, target, method, self._cached(analysis))

    def attribute(self, analysis: Analysis, budget_s: float | None = None) -> Analysis:
        """Add each model's exact face/body/scene attributions for every person (:mod:`sibnet.attribution`).

        Computed once per analysis for every class at once (the coalitions' probabilities are kept), so a later
        target change re-reads them without running a model. Concatenation and attention cost head evaluations
        of cached maps; SIB-Net's mixed coalitions run through its backbone, all people in one batch.

        Raises:
            sibnet.errors.WorkLimitExceeded: the time budget ran out (checked between models).
        """
        if not analysis.people:
            return analysis
        started = time.perf_counter()
        with self._lock:
            cached = self._cached(analysis)
            timings = dict(analysis.timings)
            for key, entry in self.models.items():
                if key in cached.attributions:
                    continue
                check_budget(started, budget_s, "computing the contributions")
                clock = time.perf_counter()
                transform = entry.model.config.transform
                cached.attributions[key] = branch_attributions(
                    entry.fast, cached.inputs[transform], 0, features=cached.features[key]
                )
                timings[f"attribution {key}"] = _ms(clock)
            return replace(analysis, attributions=dict(cached.attributions), timings=timings)

    def features(self, analysis: Analysis) -> dict[str, tuple[torch.Tensor, ...]]:
        """Each model's final branch maps for the people of ``analysis`` (what :meth:`explain` starts from):
        from the cache, or recomputed from the analysis when they have left it."""
        with self._lock:
            return dict(self._cached(analysis).features)

    def _cached(self, analysis: Analysis) -> CachedFeatures:
        cached = self._cache.get(analysis.key)
        if cached is None:  # evicted (or another analyzer's analysis): recompute from the analysis itself
            timings: dict[str, float] = {}
            triples = self._triples(analysis.image, analysis.people, timings)
            inputs = self._batches(triples)
            features, _ = self._predict(inputs, timings, lambda fraction, stage: None)
            cached = CachedFeatures(features, _regions(triples), inputs)
            self._cache.put(analysis.key, cached)
        return cached

    def model_inputs(self, analysis: Analysis) -> dict[str, tuple[torch.Tensor, ...]]:
        """Each model's input batch for the people of ``analysis``, exactly as :meth:`analyze` built it (masked
        triples from the analysed image, stacked, on the analyzer's device); for benchmarks and custom CAM calls.
        """
        with self._lock:
            inputs = self._cached(analysis).inputs
        return {key: inputs[e.model.config.transform] for key, e in self.models.items()}

    # --- stages ---

    def _intake(
        self, image: ImageSource, timings: dict[str, float]
    ) -> tuple[LoadedImage, np.ndarray, float, list[str]]:
        clock = time.perf_counter()
        loaded = load_image(image)
        rgb, shrink = fit_within(loaded.rgb, ANALYSIS_MAX_SIDE)
        notices = [*self.load_notices, *loaded.notices]
        if shrink < 1.0:
            notices.append(
                f"large photo ({loaded.size[0]}×{loaded.size[1]}) analysed at {rgb.shape[1]}×{rgb.shape[0]}; "
                "boxes are reported in the original's pixels"
            )
        timings["intake"] = _ms(clock)
        return loaded, rgb, 1.0 / shrink, notices

    def _detect(self, rgb: np.ndarray, notices: list[str], timings: dict[str, float]) -> tuple[Person, ...]:
        clock = time.perf_counter()
        faces = self.face_detector.detect(rgb)
        timings["detect faces"] = _ms(clock)
        clock = time.perf_counter()
        bodies = self.person_detector.detect(rgb) if self.person_detector is not None else []
        timings["detect persons"] = _ms(clock)
        people = at_most(pair_people(faces, bodies, rgb.shape[1], rgb.shape[0]), MAX_PEOPLE, notices)
        for p in people:
            if p.face_estimated:
                notices.append(f"person {p.id + 1}: face box estimated from the body (no face detected)")
            if p.body_estimated and self.person_detector is not None:
                notices.append(f"person {p.id + 1}: body box estimated from the face (no person box matched)")
        if self.person_detector is None and people:
            notices.append(NO_PERSON_DETECTOR)
        return people

    def _triples(
        self, rgb: np.ndarray, people: Sequence[Person], timings: dict[str, float]
    ) -> dict[InputTransform, list[Triple]]:
        """Masked triples per distinct input recipe among the models (usually one), built once each."""
        clock = time.perf_counter()
        out: dict[InputTransform, list[Triple]] = {}
        for entry in self.models.values():
            transform = entry.model.config.transform
            if transform not in out:
                out[transform] = [transform(rgb, p.face_box, p.body_box) for p in people]
        timings["masking"] = _ms(clock)
        return out

    def _batches(
        self, triples: dict[InputTransform, list[Triple]]
    ) -> dict[InputTransform, tuple[torch.Tensor, ...]]:
        return {t: batch_triples(ts, self.device) for t, ts in triples.items()}

    def _predict(
        self,
        inputs: dict[InputTransform, tuple[torch.Tensor, ...]],
        timings: dict[str, float],
        report: Callable[[float, str], None],
    ) -> tuple[dict[str, tuple[torch.Tensor, ...]], dict[str, ModelPrediction]]:
        features: dict[str, tuple[torch.Tensor, ...]] = {}
        predictions: dict[str, ModelPrediction] = {}
        for step, (key, entry) in enumerate(self.models.items()):
            report(0.4 + 0.15 * step, f"running {MODELS[key]}")
            clock = time.perf_counter()
            batch = inputs[entry.model.config.transform]
            feats = entry.fast.features(*batch)
            out = entry.fast.head(feats)
            features[key] = feats
            branch = None
            if out.branch_logits is not None:
                branch = np.stack([self._scores(b) for b in out.branch_logits], axis=1)
            scores = self._scores(out.logits)
            if not (np.isfinite(scores).all() and (branch is None or np.isfinite(branch).all())):
                log.error("%s (%s) produced non-finite scores", MODELS[key], entry.source)
                raise CheckpointError(
                    f"the {MODELS[key]} model produced invalid scores (not finite numbers): its weights are "
                    "broken, so no result is shown"
                )
            predictions[key] = ModelPrediction(key, MODELS[key], scores, branch, entry.trained, entry.source)
            timings[f"forward {key}"] = _ms(clock)
        return features, predictions

    def _explain(
        self,
        analysis: Analysis,
        person: int | None,
        target: str | int | None,
        method: str,
        cached: CachedFeatures,
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
            feats = tuple(f[ids] for f in cached.features[key])
            cams: BranchCAMs = branch_cams(
                entry.model, None, [targets[i] for i in ids], method, features=feats
            )
            probs = analysis.predictions[key].scores
            regions = cached.regions[entry.model.config.transform]
            for row, i in enumerate(ids):
                maps[key][i] = PersonMaps(
                    cams.for_item(row),
                    dict(zip(BRANCHES, regions[i])),
                    targets[i],
                    float(probs[i, targets[i]]),
                )
            timings[f"cam {key}"] = _ms(clock)
        return replace(analysis, maps=maps, targets=targets, method=method, timings=timings)

    # --- helpers ---

    def _scores(self, logits: torch.Tensor) -> np.ndarray:
        logits = logits.float()
        probs = torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=-1)
        return probs.cpu().numpy().astype(np.float32)

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
            uuid.uuid4().hex, rgb, size, scale, (), self.labels, self.multi_label, predictions, method, {}, {},
            {}, str(self.device), timings, tuple(dict.fromkeys(notices)),
        )  # fmt: skip


def _regions(triples: Mapping[InputTransform, Sequence[Triple]]) -> dict[InputTransform, list[tuple]]:
    return {t: [x.regions for x in ts] for t, ts in triples.items()}


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1e3


def _person_range(person: int, count: int) -> str:
    if count == 0:
        return f"person {person} asked for, but no person was found in this photo"
    return f"person {person} out of range: this photo has {count} {'person' if count == 1 else 'people'} (0-{count - 1})"
