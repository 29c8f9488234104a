"""The web app's callbacks (:class:`DemoApp`): validate every parameter, run the analyzer, return only the
components that change, and turn every failure into one plain sentence (:func:`sentence`).

With :mod:`demo.ui` (the layout), the only modules that import gradio. What the components show is built by
:mod:`demo.views` and :mod:`demo.render`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from demo.pipeline import Analyzer
from demo.render import attribution_chart, branch_strip, figure5, people_overlay, person_at, save_png
from demo.results import MODELS, Analysis
from demo.server import OutputStore
from demo.uploads import Refusal, display_stem
from demo.views import (
    ATTRIBUTION_NOTE,
    TOP_TARGET,
    branch_table,
    coalition_rows,
    details_markdown,
    notices_markdown,
    person_choices,
    quoted,
)
from sibnet.cam import CAM_METHODS, CLASS_AGNOSTIC
from sibnet.errors import USER_ERRORS

log = logging.getLogger("sibnet.demo")

GPU_DURATION_S = 60  # ZeroGPU: seconds of GPU one request may hold
REQUEST_BUDGET_S = 10.0  # one photo may hold the processing slot this long at most (checked between stages)
JPEG_QUALITY = 92  # the boxed photo only; the figure and the branch inputs stay lossless PNG
ANALYSIS_CACHE = 8  # the last analyses, by photo and settings: a repeated example click is instant


def gpu(fn: Any) -> Any:
    """``spaces.GPU`` on Hugging Face ZeroGPU Spaces (where the ``spaces`` package is installed), else a no-op."""
    try:
        import spaces
    except ImportError:
        return fn
    return spaces.GPU(duration=GPU_DURATION_S)(fn)


class UserError(Exception):
    """Something the visitor can fix, with one plain sentence saying what."""


class DemoApp:
    """The callbacks of the UI, bound to one analyzer and one output store."""

    def __init__(self, analyzer: Analyzer, store: OutputStore, examples: list[str] | None = None) -> None:
        self.analyzer = analyzer
        self.store = store
        self.examples = list(examples or [])
        self.c: dict[str, Any] = {}  # the components, by name (set by build_ui)
        self._cache: OrderedDict[tuple, Analysis] = OrderedDict()
        self._cache_lock = threading.Lock()

    # --- validation: every parameter before use ---

    def _method(self, value: Any) -> str:
        if not isinstance(value, str) or value not in CAM_METHODS:
            raise UserError(f"Unknown CAM method “{quoted(value)}”; choose one of: {', '.join(CAM_METHODS)}.")
        return value

    def _target(self, value: Any) -> str | None:
        if value is None or value == TOP_TARGET or value == "":
            return None
        if not isinstance(value, str) or value not in self.analyzer.labels:
            raise UserError(f"Unknown target emotion “{quoted(value)}”; choose one of the listed emotions.")
        return value

    def _person(self, value: Any, analysis: Analysis) -> int:
        if value is None or value == "":
            return 0
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise UserError(f"The person must be a whole number, not “{quoted(value)}”.") from None
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value != int(value)
        ):
            raise UserError(f"The person must be a whole number, not “{quoted(value)}”.")
        person = int(value)
        if not 0 <= person < len(analysis.people):
            count = len(analysis.people)
            raise UserError(
                f"There is no person {person + 1} in this photo; it has {count} (numbered from 1)."
            )
        return person

    @staticmethod
    def _photo(photo: Any) -> str:
        if photo is None:
            raise UserError("Upload a photo first (or pick an example).")
        if isinstance(photo, Refusal):
            raise UserError(photo.message)
        return str(photo)

    # --- the work ---

    def _analysis(self, photo: str, method: str, target: str | None, progress: Any = None) -> Analysis:
        """The analysis of a photo with these settings; the last few are kept (by content) for repeat clicks."""
        digest = hashlib.sha1(Path(photo).read_bytes()).hexdigest()
        key = (digest, method, target)
        with self._cache_lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        result = self.analyzer.analyze(
            photo, target=target, method=method, progress=progress, budget_s=REQUEST_BUDGET_S
        )
        with self._cache_lock:
            self._cache[key] = result
            while len(self._cache) > ANALYSIS_CACHE:
                self._cache.popitem(last=False)
        return result

    def _files(self, analysis: Analysis, person: int, stem: str) -> dict[str, str]:
        """The images and downloads of one view, each written once, named for what they hold."""
        folder = self.store.new_folder()
        target = analysis.target_name(person).lower().replace("/", "-")
        base = f"{stem}_person-{person + 1}_{analysis.method.replace('+', 'plus')}_{target}"
        people = folder / f"{stem}_people.jpg"
        Image.fromarray(people_overlay(analysis, selected=person)).save(people, quality=JPEG_QUALITY)
        json_path = self._json_file(analysis, person, stem, folder)
        return {
            "people": str(people),
            "wide": str(save_png(figure5(analysis, person), folder / f"{base}.png")),
            "narrow": str(
                save_png(figure5(analysis, person, layout="narrow"), folder / f"{base}_narrow.png")
            ),
            "strip": str(
                save_png(branch_strip(analysis, person), folder / f"{stem}_person-{person + 1}_inputs.png")
            ),
            "json": str(json_path),
        }

    def _json_file(self, analysis: Analysis, person: int, stem: str, folder: Path | None = None) -> str:
        """The download of everything shown, as JSON."""
        data = {**analysis.to_json(), "selected_person": person, "photo": stem}
        path = (folder or self.store.new_folder()) / f"{stem}_analysis.json"
        path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
        return str(path)

    def _attribution_view(self, analysis: Analysis, person: int, stem: str) -> dict:
        """The contributions panel: the chart and table once computed, else the button that computes them."""
        c = self.c
        done = bool(analysis.attributions) and bool(analysis.people)
        if not done:
            return {
                c["attribute"]: gr.update(interactive=bool(analysis.people), visible=True),
                c["attribution"]: gr.update(value=None, visible=False),
                c["attribution_note"]: gr.update(value="", visible=False),
                c["attribution_table"]: gr.update(value=[], visible=False),
            }
        path = self.store.new_folder() / f"{stem}_person-{person + 1}_contributions.png"
        return {
            c["attribute"]: gr.update(interactive=False, visible=False),
            c["attribution"]: gr.update(
                value=str(save_png(attribution_chart(analysis, person), path)), visible=True
            ),
            c["attribution_note"]: gr.update(
                value=ATTRIBUTION_NOTE.format(target=analysis.target_name(person)), visible=True
            ),
            c["attribution_table"]: gr.update(value=coalition_rows(analysis, person), visible=True),
        }

    def _maps_view(self, analysis: Analysis, person: int, stem: str) -> dict:
        """The panels that change with the maps or the person (the scores change with the person too)."""
        c = self.c
        files = self._files(analysis, person, stem)
        labels = {
            c[f"label_{key}"]: dict(analysis.predictions[key].top(person, analysis.labels, 5))
            for key in MODELS
        }
        return {
            **labels,
            c["people"]: files["people"],
            c["figure_wide"]: files["wide"],
            c["figure_narrow"]: files["narrow"],
            c["strip"]: files["strip"],
            c["branch_table"]: gr.update(value=branch_table(analysis, person), visible=True),
            c["download_figure"]: gr.update(value=files["wide"], interactive=True),
            c["download_json"]: gr.update(value=files["json"], interactive=True),
            c["message"]: "",
            **self._attribution_view(analysis, person, stem),
        }

    def _full_view(self, analysis: Analysis, person: int, stem: str) -> dict:
        c = self.c
        base = {
            c["state"]: analysis,
            c["stem"]: stem,
            c["notices"]: notices_markdown(analysis, self.analyzer),
        }
        base[c["details"]] = details_markdown(analysis, self.analyzer)
        if not analysis.people:
            return {
                **base,
                c["people"]: self._people_only(analysis, stem),
                c["person"]: gr.update(choices=[], value=None, interactive=False),
                **{c[f"label_{key}"]: None for key in MODELS},
                c["figure_wide"]: None,
                c["figure_narrow"]: None,
                c["strip"]: None,
                c["branch_table"]: gr.update(value=[], visible=False),
                c["download_figure"]: gr.update(value=None, interactive=False),
                c["download_json"]: gr.update(value=None, interactive=False),
                **self._attribution_view(analysis, 0, stem),
                c["message"]: "No person was found in this photo: no face was detected. Try a photo where "
                "faces are visible and at least about 20 pixels tall.",
            }
        choices = person_choices(analysis)
        return {
            **base,
            **self._maps_view(analysis, person, stem),
            c["person"]: gr.update(choices=choices, value=person, interactive=len(choices) > 1),
        }

    def _people_only(self, analysis: Analysis, stem: str) -> str:
        path = self.store.new_folder() / f"{stem}_people.jpg"
        Image.fromarray(people_overlay(analysis)).save(path, quality=JPEG_QUALITY)
        return str(path)

    def _failed(self, err: BaseException) -> dict:
        """Keep every panel as it is; say what went wrong in one sentence."""
        return {self.c["message"]: f"⚠️ {sentence(err)}"}

    # --- the events ---

    @gpu
    def analyze(
        self,
        photo: Any,
        method: Any,
        target: Any,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> dict:
        """A new photo: detection, the three models, all maps.

        Every return sets the photo input: an output missing from a returned dict is a ``gr.skip()``, which
        Gradio treats as a property update and answers by rebuilding the component for this session from its
        constructor, without the intake :func:`demo.ui.photo_input` sets on the instance, so the session's next
        upload would be decoded by Gradio itself (its raw error on a bad file, its limits instead of ours).
        """
        try:
            path = self._photo(photo)
        except UserError as err:  # no photo, or a refused upload (not left in the input as a broken image)
            return {**self._failed(err), self.c["photo"]: None}
        try:
            analysis = self._analysis(
                path, self._method(method), self._target(target), lambda f, s: progress(f, desc=s)
            )
            return {**self._full_view(analysis, 0, display_stem(path)), self.c["photo"]: path}
        except Exception as err:  # noqa: BLE001 - every failure becomes one sentence; bugs are logged in sentence()
            return {**self._failed(err), self.c["photo"]: path}

    @gpu
    def example(
        self,
        method: Any,
        target: Any,
        evt: gr.SelectData,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio injects progress through this default
    ) -> dict:
        """An example photo: shown in the photo input (as a plain value, so the input keeps its own intake)
        and analysed with the current controls."""
        if not isinstance(evt.index, int) or not 0 <= evt.index < len(self.examples):
            return {}
        path = self.examples[evt.index]
        return {self.c["photo"]: path, **self.analyze(path, method, target, progress)}

    def select_person(self, analysis: Analysis | None, stem: str, person: Any) -> dict:
        """Another person: the maps already exist, only redraw."""
        if analysis is None or not analysis.people:
            return {}
        try:
            return self._maps_view(analysis, self._person(person, analysis), stem)
        except Exception as err:  # noqa: BLE001 - see analyze
            return self._failed(err)

    def click_people(self, analysis: Analysis | None, stem: str, evt: gr.SelectData) -> dict:
        """A click on the people image picks the person whose box holds the point."""
        if analysis is None or not analysis.people or not isinstance(evt.index, (list, tuple)):
            return {}
        person = person_at(analysis, float(evt.index[0]), float(evt.index[1]))
        if person is None:
            return {}
        view = self.select_person(analysis, stem, person)
        view[self.c["person"]] = gr.update(value=person)
        return view

    @gpu
    def reexplain(self, analysis: Analysis | None, stem: str, person: Any, method: Any, target: Any) -> dict:
        """Another target or method: recompute the maps only; the target is greyed out where it does not apply."""
        c = self.c
        try:
            method = self._method(method)
            grey = {c["target"]: gr.update(interactive=method not in CLASS_AGNOSTIC)}
            if analysis is None or not analysis.people:
                return grey  # nothing to recompute yet: the new settings apply to the next photo
            person = self._person(person, analysis)
            updated = self.analyzer.explain(analysis, target=self._target(target), method=method)
            return {**grey, c["state"]: updated, **self._maps_view(updated, person, stem)}
        except Exception as err:  # noqa: BLE001 - see analyze
            return self._failed(err)

    @gpu
    def attribute(self, analysis: Analysis | None, stem: str, person: Any) -> dict:
        """The contributions of face, body and scene (on demand: about the cost of one more analysis)."""
        if analysis is None or not analysis.people:
            return {}
        try:
            person = self._person(person, analysis)
            updated = self.analyzer.attribute(analysis, budget_s=REQUEST_BUDGET_S)
            json_path = self._json_file(
                updated, person, stem
            )  # the figure and the other panels stay as they are
            return {
                self.c["state"]: updated,
                self.c["download_json"]: gr.update(value=json_path, interactive=True),
                self.c["message"]: "",
                **self._attribution_view(updated, person, stem),
            }
        except Exception as err:  # noqa: BLE001 - see analyze
            return self._failed(err)

    @gpu
    def api_analyze(self, photo: Any, method: Any, target: Any, person: Any) -> tuple:
        """API endpoint: (photo, method, target, person) → (predictions JSON, Figure-5 PNG of that person)."""
        try:
            path = self._photo(photo)
            method, target = self._method(method), self._target(target)
            analysis = self._analysis(path, method, target)
            analysis = self.analyzer.attribute(analysis, budget_s=REQUEST_BUDGET_S)
            data = analysis.to_json()
            if not analysis.people:
                return data, None
            person = self._person(person, analysis)
            data["selected_person"] = person
            folder = self.store.new_folder()
            name = f"{display_stem(path)}_person-{person + 1}_{method.replace('+', 'plus')}.png"
            return data, str(save_png(figure5(analysis, person), folder / name))
        except Exception as err:
            raise gr.Error(sentence(err), print_exception=False) from err


def sentence(err: BaseException) -> str:
    """One plain sentence for a visitor; anything that is not the visitor's doing is logged in full."""
    if isinstance(err, UserError):
        return str(err)
    if isinstance(err, gr.Error):
        return str(err.message)
    if isinstance(err, (*USER_ERRORS, ValueError)):
        log.info("refused: %s: %s", type(err).__name__, err)
        text = " ".join(str(err).split())
        # Library messages may name server paths or variables: keep the sentence, drop what follows a path.
        text = text if len(text) <= 300 else text[:299] + "…"
        return without_paths(text or "The request could not be processed.")
    log.exception("analysis failed")
    return "Something went wrong on the server while analysing this photo; it has been logged. Try another photo."


def without_paths(text: str) -> str:
    """Drop local file paths from a message (the visitor's own file is named by the message's start)."""
    return re.sub(r"(/[\w.\-]+){2,}", "the file", text)
