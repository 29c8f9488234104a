"""The Gradio app: wires components to an :class:`demo.pipeline.Analyzer` and :mod:`demo.render`, nothing else.

Layout: the photo (upload, paste or webcam; examples from ``assets/examples``), the CAM method and target →
the results: a progress/message line, the people found (boxed, numbered from 1; click a box to pick that
person) with a legend, each model's top emotions, the Figure-5 grid (a wide layout on a desktop, a narrow one
on a phone, chosen by CSS), "How to read this", the branch heads' scores, the three masked inputs, downloads
(disabled until there is a result) and a collapsed "Details" with the operator's view (device, timings).

One computation per action: a new photo runs everything; a method or target change recomputes the maps alone
(:meth:`Analyzer.explain`: cached backbone features, head-only backward) and leaves the other panels as they
are; a person change only redraws. Each event sends one request and shows its progress once.

API: ``/analyze`` (photo, method, target, person) → (predictions JSON, Figure-5 PNG) for ``gradio_client``.
Its parameters are validated before use; a bad one is one readable error.

Safety: every way a photo arrives goes through :mod:`demo.uploads` (size cap before any decode, no fetching of
web addresses) and then :func:`sibnet.io.load_image` (formats, pixel limit); :mod:`demo.server` caps request
bodies, uploads per client and the disk the app fills; one photo has at most ``MAX_PEOPLE`` people analysed and
a time budget. The queue is bounded and every model event shares one concurrency slot, so CAM hooks never see
two requests at once. What a visitor sees is plain sentences; operator detail (paths, exception types,
download hosts) goes to the log.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image
from starlette.middleware import Middleware

from demo.pipeline import MAX_PEOPLE, Analyzer
from demo.render import LEGEND, attribution_chart, branch_strip, figure5, people_overlay, person_at, save_png
from demo.results import MODELS, NO_PERSON, UNTRAINED, Analysis
from demo.server import DISK_CAP_BYTES, OUTPUT_MAX_AGE_S, OutputStore, RequestGuard
from demo.uploads import MAX_UPLOAD_MB, Refusal, accept, display_stem
from sibnet.cam import CAM_METHODS, CLASS_AGNOSTIC, METHOD_TITLES
from sibnet.data.masking import BRANCHES
from sibnet.errors import USER_ERRORS

log = logging.getLogger("sibnet.demo")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = ROOT / "assets" / "examples"
MAX_FILE_SIZE = f"{MAX_UPLOAD_MB}mb"  # Gradio's cap on the upload route; inline photos get the same cap
QUEUE_MAX_SIZE = 16  # waiting requests beyond this are turned away with "queue full" instead of piling up
CONCURRENCY_ID = "models"  # every event that runs the models shares this one slot
TOP_TARGET = "SIB-Net's top emotion"
GPU_DURATION_S = 60  # ZeroGPU: seconds of GPU one request may hold
REQUEST_BUDGET_S = 10.0  # one photo may hold the processing slot this long at most (checked between stages)
JPEG_QUALITY = 92  # the boxed photo only; the figure and the branch inputs stay lossless PNG
MAX_QUOTED = 80  # user input is quoted back at most this long
ANALYSIS_CACHE = 8  # the last analyses, by photo and settings: a repeated example click is instant
PAPER = (
    "Xinpeng Li, Xiaojiang Peng, Changxing Ding: *Sequential Interactive Biased Network for Context-Aware "
    "Emotion Recognition*, IEEE International Joint Conference on Biometrics (IJCB), 2021"
)
CODE_URL_ENV = "SIBNET_CODE_URL"
NARROW_PX = 700  # below this width the narrow figure replaces the wide one

CSS = f"""
#message {{ font-weight: 600; }}
#figure-narrow {{ display: none; }}
@media (max-width: {NARROW_PX}px) {{
  #figure-wide {{ display: none; }}
  #figure-narrow {{ display: block; }}
  .gradio-container {{ padding: 4px !important; }}
}}
"""
# After an analysis on a narrow screen, bring the results into view (runs in the browser: no request).
SCROLL_TO_RESULTS = f"""() => {{
  if (window.innerWidth <= {NARROW_PX}) {{
    const el = document.getElementById('results');
    if (el) el.scrollIntoView({{behavior: 'smooth', block: 'start'}});
  }}
}}"""
HOW_TO_READ = """
**What a map shows.** Each panel is one branch's class activation map for the target emotion: warm colours
mark the parts of that branch's input that raised the model's score for the target most (Grad-CAM and its
variants weight the branch's final feature map by the score's gradient). Eigen-CAM and the activation map do
not depend on the target: the target selector is greyed out for them.

**Each map is scaled on its own** (its minimum blue, its maximum red), so colours show *where* a branch looks,
not *how much* it matters compared with another branch or model.

**Columns.** *face*: the face crop; *body*: the body with the face blacked out; *scene*: the whole photo with
the body blacked out (the paper's masked inputs, Eq. 3); *photo*: the three maps put back where each branch's
input came from (scene first, then body, then face on top).

**How much each branch mattered** is what the contributions chart answers (the button below the figure): each
bar is the change a branch made to the model's probability of the target, between all three inputs blank and
the photo, and all bars share one scale.

**The score** beside each row is that model's probability for the target (sigmoid for the 26 EMOTIC
categories, which are not exclusive; softmax for CAER-S's 7 classes). Untrained weights give meaningless
scores and maps.
"""


def gpu(fn: Any) -> Any:
    """``spaces.GPU`` on Hugging Face ZeroGPU Spaces (where the ``spaces`` package is installed), else a no-op."""
    try:
        import spaces
    except ImportError:
        return fn
    return spaces.GPU(duration=GPU_DURATION_S)(fn)


class UserError(Exception):
    """Something the visitor can fix, with one plain sentence saying what."""


def quoted(value: Any) -> str:
    """User input for a message: at most :data:`MAX_QUOTED` characters, single line."""
    text = " ".join(str(value).split())
    return text if len(text) <= MAX_QUOTED else text[: MAX_QUOTED - 1] + "…"


def photo_input(store: OutputStore, **kwargs: Any) -> gr.Image:
    """A ``gr.Image`` whose preprocessing is :func:`demo.uploads.accept`: the photo reaches the app's own
    intake untouched (a path, or a :class:`~demo.uploads.Refusal`), never decoded by Gradio or by whatever
    patched Pillow. The overrides are set on the instance: a ``gr.Image`` subclass would make Gradio write a
    ``.pyi`` stub beside this module."""
    image = gr.Image(type="filepath", image_mode=None, **kwargs)
    fetch = image.move_resource_to_block_cache

    def preprocess(payload: Any) -> str | Refusal | None:
        return accept(payload, store.new_folder())

    fetch_async = image.async_move_resource_to_block_cache

    def refuse_addresses(url_or_file_path: Any) -> None:
        if isinstance(url_or_file_path, str) and "://" in url_or_file_path:
            raise gr.Error("Photos must be uploaded as files; the app does not fetch web addresses.")

    def move_resource(url_or_file_path: Any) -> str | None:
        refuse_addresses(url_or_file_path)
        return fetch(url_or_file_path)

    async def move_resource_async(url_or_file_path: Any) -> str | None:
        refuse_addresses(url_or_file_path)
        return await fetch_async(url_or_file_path)

    image.preprocess = preprocess  # type: ignore[method-assign]
    image.move_resource_to_block_cache = move_resource  # type: ignore[method-assign]
    image.async_move_resource_to_block_cache = move_resource_async  # type: ignore[method-assign]
    return image


def example_photos(folder: Path = EXAMPLES_DIR) -> list[str]:
    suffixes = {".jpg", ".jpeg", ".png", ".webp"}
    return (
        [str(p) for p in sorted(folder.iterdir()) if p.suffix.lower() in suffixes] if folder.is_dir() else []
    )


def models_markdown(analyzer: Analyzer) -> str:
    """What the loaded models are, for the header."""
    if not analyzer.trained:
        return (
            f"⚠️ **{UNTRAINED}.** No trained weights are loaded, so the scores and maps below show how the "
            "app works, not what a trained SIB-Net sees."
        )
    lines = [describe_model(analyzer, key) for key in MODELS]
    return "Models: " + " · ".join(lines)


def describe_model(analyzer: Analyzer, key: str) -> str:
    """ "SIB-Net · EMOTIC · test mAP 35.1 ± 0.3" from the checkpoint's recorded results, when it has them."""
    entry = analyzer.models[key]
    if not entry.trained:
        return f"{MODELS[key]} (untrained)"
    try:
        from sibnet.publish import describe  # written by the recipe that publishes weights
    except ImportError:
        describe = None
    text = describe(entry.model) if describe is not None else None
    return text or f"{MODELS[key]} (trained)"


def _notices(analysis: Analysis, analyzer: Analyzer) -> str:
    """The notices a visitor needs, in plain words. What the models and detectors are is the header's and the
    log's business (load notices name folders and download hosts); the missing person detector becomes one
    sentence about what it means for the result."""
    lines = [n for n in analysis.notices if n not in analyzer.load_notices]
    return "\n".join(f"- {n[0].upper()}{n[1:]}{'' if n.endswith('.') else '.'}" for n in lines)


def _details(analysis: Analysis, analyzer: Analyzer) -> str:
    """The operator's view, collapsed: device, per-stage milliseconds, where each model came from."""
    main = ["intake", "detect faces", "detect persons", "masking"]
    stages = [f"{k} {analysis.timings[k]:.0f}" for k in main if k in analysis.timings]
    for prefix in ("forward", "cam", "attribution"):
        total = sum(v for k, v in analysis.timings.items() if k.startswith(prefix + " "))
        if total:
            stages.append(f"{prefix} {total:.0f}")
    if "total" in analysis.timings:
        stages.append(f"total {analysis.timings['total']:.0f}")
    weights = "; ".join(
        f"{MODELS[k]}: {'trained' if m.trained else 'untrained'}" for k, m in analyzer.models.items()
    )
    detector = "person detector: " + ("YOLO" if analyzer.person_detector is not None else "none")
    return f"Device {analysis.device} · {' · '.join(stages)} ms  \n{weights} · {detector}"


SHORT_TITLES = {"concat": "Concat."}  # table headers narrow enough for a phone
ATTRIBUTE_LABEL = "How much did face, body and scene each contribute?"
ATTRIBUTION_NOTE = (
    "Each bar is how much one branch moved that model's probability of **{target}**: from its score with all "
    "three inputs blank (no evidence) to its score on this photo. A model's three bars add up to that change, "
    "and all bars share one scale, so they compare across branches and models (the maps cannot: each is scaled "
    "on its own). They are exact Shapley values over the 8 ways of showing or blanking face, body and scene; "
    "the table lists the score of each."
)


def _coalition_rows(analysis: Analysis, person: int) -> list[list[Any]]:
    """Rows: which branches were shown (the others blank), then each model's target probability."""
    found = {key: analysis.attribution(key, person) for key in MODELS}
    found = {key: a for key, a in found.items() if a is not None}
    if not found:
        return []
    names = list(next(iter(found.values()))["coalitions"])
    pretty = {"none": "none (all blank)", "face+body+scene": "all (the photo)"}
    return [
        [pretty.get(name, name.replace("+", " + ")), *(round(found[k]["coalitions"][name], 3) for k in found)]
        for name in names
    ]


def _person_choices(analysis: Analysis) -> list[tuple[str, int]]:
    out = []
    for p in analysis.people:
        flags = [name for name, est in (("face", p.face_estimated), ("body", p.body_estimated)) if est]
        out.append((f"Person {p.id + 1}" + (f" (estimated {', '.join(flags)})" if flags else ""), p.id))
    return out


def _branch_table(analysis: Analysis, person: int) -> list[list[Any]]:
    """Rows: the fused top emotions of each model with branch heads, beside each branch head's score (§3.4)."""
    rows = []
    for key, pred in analysis.predictions.items():
        if pred.branch_scores is None:
            continue
        for label, fused in pred.top(person, analysis.labels, 5):
            k = analysis.labels.index(label)
            rows.append(
                [
                    MODELS[key],
                    label,
                    round(fused, 3),
                    *(round(float(pred.branch_scores[person, b, k]), 3) for b in range(3)),
                ]
            )
    return rows


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
            c["attribution_table"]: gr.update(value=_coalition_rows(analysis, person), visible=True),
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
            c["branch_table"]: gr.update(value=_branch_table(analysis, person), visible=True),
            c["download_figure"]: gr.update(value=files["wide"], interactive=True),
            c["download_json"]: gr.update(value=files["json"], interactive=True),
            c["message"]: "",
            **self._attribution_view(analysis, person, stem),
        }

    def _full_view(self, analysis: Analysis, person: int, stem: str) -> dict:
        c = self.c
        base = {c["state"]: analysis, c["stem"]: stem, c["notices"]: _notices(analysis, self.analyzer)}
        base[c["details"]] = _details(analysis, self.analyzer)
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
        choices = _person_choices(analysis)
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
        return {self.c["message"]: f"⚠️ {_sentence(err)}"}

    # --- the events ---

    @gpu
    def analyze(
        self,
        photo: Any,
        method: Any,
        target: Any,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> dict:
        """A new photo: detection, the three models, all maps."""
        if isinstance(photo, Refusal):  # not shown as a broken image in the input; the last result stays
            return {**self._failed(UserError(photo.message)), self.c["photo"]: None}
        try:
            path = self._photo(photo)
            analysis = self._analysis(
                path, self._method(method), self._target(target), lambda f, s: progress(f, desc=s)
            )
            return self._full_view(analysis, 0, display_stem(path))
        except Exception as err:  # noqa: BLE001 - every failure becomes one sentence; bugs are logged in _sentence
            return self._failed(err)

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
            raise gr.Error(_sentence(err), print_exception=False) from err


def _sentence(err: BaseException) -> str:
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
        return _without_paths(text or "The request could not be processed.")
    log.exception("analysis failed")
    return "Something went wrong on the server while analysing this photo; it has been logged. Try another photo."


def _without_paths(text: str) -> str:
    """Drop local file paths from a message (the visitor's own file is named by the message's start)."""
    import re

    return re.sub(r"(/[\w.\-]+){2,}", "the file", text)


def build_ui(
    analyzer: Analyzer, examples: list[str] | None = None, store: OutputStore | None = None
) -> gr.Blocks:
    """The Blocks app over ``analyzer``. Launch it with :func:`launch_kwargs`."""
    store = store or OutputStore(Path(gr.utils.get_upload_folder()) / "sibnet")
    examples = example_photos() if examples is None else examples
    app = DemoApp(analyzer, store, examples)
    method_choices = [(METHOD_TITLES[m], m) for m in CAM_METHODS]
    target_choices = [TOP_TARGET, *analyzer.labels]
    code_url = os.environ.get(CODE_URL_ENV) or (
        f"https://huggingface.co/spaces/{os.environ['SPACE_ID']}/tree/main"
        if os.environ.get("SPACE_ID")
        else ""
    )
    code = f" · [Code]({code_url})" if code_url else ""
    with gr.Blocks(
        title="SIB-Net: where does each branch look?",
        analytics_enabled=None,
        delete_cache=(OUTPUT_MAX_AGE_S, OUTPUT_MAX_AGE_S),  # uploads and Gradio's own copies
    ) as demo:
        gr.Markdown(
            "# SIB-Net: context-aware emotion recognition, explained\n"
            "Upload a photo. The app finds each person's face and body, masks the **face**, the **body** "
            "(face masked) and the **scene** (body masked), runs SIB-Net and the concatenation and attention "
            "baselines, and shows where each branch of each model looks (the paper's Figure 5).\n\n"
            f"Paper: {PAPER}{code}\n\n{models_markdown(analyzer)}",
            elem_id="intro",
        )
        c = app.c
        c["state"] = gr.State(None)
        c["stem"] = gr.State("photo")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                photo = c["photo"] = photo_input(
                    store,
                    label="Photo",
                    sources=["upload", "clipboard", "webcam"],
                    elem_id="photo",
                    height=320,
                )
                with gr.Row():
                    c["method"] = gr.Dropdown(
                        method_choices, value="gradcam", label="CAM method", elem_id="method"
                    )
                    c["target"] = gr.Dropdown(
                        target_choices, value=TOP_TARGET, label="Target emotion", elem_id="target"
                    )
                run = gr.Button("Analyse", variant="primary", elem_id="analyse")
                examples_slot = gr.Column()
            with gr.Column(scale=2, min_width=320, elem_id="results"):
                c["message"] = gr.Markdown(elem_id="message")
                with gr.Row(equal_height=False):
                    with gr.Column(scale=1, min_width=260):
                        c["people"] = gr.Image(
                            label="People found (click a box to pick a person)", format="jpeg",
                            interactive=False, elem_id="people", height=300,
                        )  # fmt: skip
                        gr.Markdown(f"{LEGEND}.", elem_id="legend")
                        c["person"] = gr.Radio(
                            choices=[], label="Person", interactive=False, elem_id="person"
                        )
                        c["notices"] = gr.Markdown(elem_id="notices")
                    with gr.Column(scale=2, min_width=260), gr.Row():
                        for key, title in MODELS.items():
                            c[f"label_{key}"] = gr.Label(
                                num_top_classes=5, label=title, elem_id=f"label-{key}", min_width=170
                            )
                c["figure_wide"] = gr.Image(
                    label="Figure 5: branch maps",
                    show_label=False,
                    format="png",
                    interactive=False,
                    elem_id="figure-wide",
                )
                c["figure_narrow"] = gr.Image(
                    label="Figure 5: branch maps",
                    show_label=False,
                    format="png",
                    interactive=False,
                    elem_id="figure-narrow",
                )
                c["attribute"] = gr.Button(
                    ATTRIBUTE_LABEL, interactive=False, elem_id="attribute", variant="secondary"
                )
                with gr.Row(equal_height=False):
                    with gr.Column(scale=1, min_width=280):
                        c["attribution"] = gr.Image(
                            label="Contributions of face, body and scene", show_label=False, format="png",
                            interactive=False, visible=False, elem_id="attribution",
                        )  # fmt: skip
                    with gr.Column(scale=1, min_width=280):
                        c["attribution_note"] = gr.Markdown(visible=False, elem_id="attribution-note")
                        c["attribution_table"] = gr.Dataframe(
                            headers=["branches shown", *(SHORT_TITLES.get(k, t) for k, t in MODELS.items())],
                            label="Target probability with only these branches shown (the others blank)",
                            interactive=False, visible=False, elem_id="attribution-table", wrap=True,
                        )  # fmt: skip
                with gr.Accordion("How to read this", open=False, elem_id="how-to-read"):
                    gr.Markdown(HOW_TO_READ)
                c["branch_table"] = gr.Dataframe(
                    headers=["model", "emotion", "fused", *(f"{b} head" for b in BRANCHES)],
                    label="Branch heads (§3.4): each branch's own classifier beside the fused score",
                    interactive=False, visible=False, elem_id="branch-table", wrap=True,
                )  # fmt: skip
                c["strip"] = gr.Image(
                    label="What each branch sees (face · body with face masked · scene with body masked)",
                    format="png", interactive=False, elem_id="strip",
                )  # fmt: skip
                with gr.Row():
                    c["download_figure"] = gr.DownloadButton(
                        "Download figure (PNG)", interactive=False, elem_id="download-figure"
                    )
                    c["download_json"] = gr.DownloadButton(
                        "Download results (JSON)", interactive=False, elem_id="download-json"
                    )
                with gr.Accordion("Details", open=False, elem_id="details-box"):
                    c["details"] = gr.Markdown(elem_id="details")

        every = [v for k, v in c.items() if k not in ("method", "photo")]
        common = {"concurrency_id": CONCURRENCY_ID, "concurrency_limit": 1}
        progress_here = {"show_progress": "minimal", "show_progress_on": [c["message"]]}
        analysis_event = run.click(
            app.analyze, [photo, c["method"], c["target"]], [photo, *every], api_name="ui_analyze",
            api_visibility="private", **common, **progress_here,
        )  # fmt: skip
        analysis_event.then(None, js=SCROLL_TO_RESULTS)
        if examples:
            with examples_slot:  # a click analyses the example with the current controls (one request)
                gallery = gr.Gallery(
                    value=examples, label="Examples (public domain; click one)", columns=3, height=150,
                    allow_preview=False, elem_id="examples",
                )  # fmt: skip
            gallery.select(
                app.example, [c["method"], c["target"]], [photo, *every], api_name="ui_example",
                api_visibility="private",
                **common, **progress_here,
            ).then(None, js=SCROLL_TO_RESULTS)  # fmt: skip
        c["person"].input(
            app.select_person, [c["state"], c["stem"], c["person"]], every, api_name="ui_person",
            api_visibility="private",
            **common, **progress_here,
        )  # fmt: skip
        c["people"].select(
            app.click_people,
            [c["state"], c["stem"]],
            every,
            api_visibility="private",
            **common,
            **progress_here,
        )
        c["attribute"].click(
            app.attribute, [c["state"], c["stem"], c["person"]], every, api_name="ui_attribute",
            api_visibility="private", **common, **progress_here,
        )  # fmt: skip
        for name, control in (("method", c["method"]), ("target", c["target"])):
            control.select(  # .input fires twice per choice in Gradio 6.31; .select once
                app.reexplain, [c["state"], c["stem"], c["person"], c["method"], c["target"]], every,
                api_name=f"ui_{name}", api_visibility="private", **common, **progress_here,
            )  # fmt: skip

        # API-only endpoint (hidden components): /analyze → predictions JSON + Figure-5 PNG.
        # Its parameters arrive as plain JSON values (not through the dropdowns, whose own checks would echo a
        # 100,000-character value back), and DemoApp validates each one before use.
        with gr.Row(visible=False):
            api_method = gr.Textbox(value="gradcam", label="method")
            api_target = gr.Textbox(value=TOP_TARGET, label="target")
            api_person = gr.Textbox(value="0", label="person (0-based id)")
            api_json = gr.JSON(label="predictions")
            api_figure = gr.Image(format="png", label="figure")
            api_button = gr.Button("api")
        api_button.click(
            app.api_analyze, [photo, api_method, api_target, api_person], [api_json, api_figure],
            api_name="analyze",
            api_description="Analyse a photo: people (ids from 0), each model's scores, and the Figure-5 PNG "
            "of one person.",
            **common,
        )  # fmt: skip
    demo.queue(max_size=QUEUE_MAX_SIZE, default_concurrency_limit=1)
    return demo


def launch_kwargs(host: str, port: int, share: bool, **guard: Any) -> dict[str, Any]:
    """Launch settings: SSR off, upload cap, request guard (``guard`` overrides its limits), no extra allowed
    paths."""
    root = Path(gr.utils.get_upload_folder())
    return {
        "server_name": host,
        "server_port": port,
        "share": share,
        "ssr_mode": False,
        "max_file_size": MAX_FILE_SIZE,
        "show_error": True,  # gr.Error messages reach the user; tracebacks never do (see _sentence)
        "css": CSS,
        "footer_links": ["api", "gradio"],
        "app_kwargs": {"middleware": [Middleware(RequestGuard, disk_root=root, **guard)]},
    }


__all__ = ["DISK_CAP_BYTES", "MAX_PEOPLE", "NO_PERSON", "DemoApp", "build_ui", "launch_kwargs"]
