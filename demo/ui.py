"""The Gradio app: wires components to an :class:`demo.pipeline.Analyzer` and :mod:`demo.render`, nothing else.

Layout: the photo (upload, paste or webcam; examples from ``assets/examples``) → the people found, boxed and
numbered, with a person selector → each model's top emotions → the target-emotion and CAM-method selectors →
the Figure-5 grid (lossless PNG), the three masked branch inputs, downloads (figure, JSON) and a status line
with every notice. Changing the person only redraws; changing the target or the method recomputes the maps
alone (:meth:`Analyzer.explain`: cached backbone features, head-only backward).

API: ``/analyze`` (photo, method, target, person) → (predictions JSON, Figure-5 PNG) for ``gradio_client``.

Safety: uploads are capped (:data:`MAX_FILE_SIZE`); the queue is bounded and every model event shares one
concurrency slot, so CAM hooks never see two requests at once and memory stays bounded; no ``allowed_paths``;
errors reach the user as one readable message (``gr.Error``), never a traceback, and the server stays up.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from demo.pipeline import Analyzer
from demo.render import branch_strip, figure5, people_overlay, save_png
from demo.results import MODELS, NO_PERSON, UNTRAINED, Analysis
from sibnet.cam import CAM_METHODS, METHOD_TITLES

log = logging.getLogger("sibnet.demo")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = ROOT / "assets" / "examples"
MAX_FILE_SIZE = "20mb"
QUEUE_MAX_SIZE = 16  # waiting requests beyond this are turned away with "queue full" instead of piling up
CONCURRENCY_ID = "models"  # every event that runs the models shares this one slot
TOP_TARGET = "SIB-Net's top emotion"
GPU_DURATION_S = 60  # ZeroGPU: seconds of GPU one request may hold
OUTPUT_DIR = Path(tempfile.gettempdir()) / "sibnet-demo"  # images and downloads; Gradio serves the temp dir
OUTPUT_MAX_AGE_S = 3600  # files written for a request are removed after an hour (a server runs for weeks)
JPEG_QUALITY = 92  # the boxed photo only; the figure and the branch inputs stay lossless PNG

CSS = """
#status { font-size: 0.9em; }
@media (max-width: 640px) { .gradio-container { padding: 4px !important; } }
"""


def gpu(fn: Any) -> Any:
    """``spaces.GPU`` on Hugging Face ZeroGPU Spaces (where the ``spaces`` package is installed), else a no-op."""
    try:
        import spaces
    except ImportError:
        return fn
    return spaces.GPU(duration=GPU_DURATION_S)(fn)


def photo_input(**kwargs: Any) -> gr.Image:
    """A ``gr.Image`` (type "filepath") that hands the uploaded file to our intake untouched.

    Gradio's own preprocessing opens the file with PIL first, so a broken or non-image upload would fail
    inside Gradio with a generic message. Passing the path through lets :func:`sibnet.io.load_image` refuse
    it precisely (and apply EXIF orientation, colour modes and the size limits in one place). The override is
    set on the instance: a ``gr.Image`` subclass would make Gradio write a ``.pyi`` stub beside this module.
    """
    image = gr.Image(type="filepath", image_mode=None, **kwargs)
    gradio_preprocess = image.preprocess

    def preprocess(payload: Any) -> str | None:
        if payload is not None and getattr(payload, "path", None):
            return str(payload.path)
        return gradio_preprocess(payload)  # None, or a pasted data: URL that Gradio decodes

    image.preprocess = preprocess  # type: ignore[method-assign]
    return image


def example_photos(folder: Path = EXAMPLES_DIR) -> list[str]:
    suffixes = {".jpg", ".jpeg", ".png", ".webp"}
    return (
        [str(p) for p in sorted(folder.iterdir()) if p.suffix.lower() in suffixes] if folder.is_dir() else []
    )


def status_markdown(analysis: Analysis) -> str:
    lines = []
    for notice in analysis.notices:
        prefix = "⚠️ " if UNTRAINED in notice or notice == NO_PERSON else "• "
        lines.append(prefix + notice)
    main = ["intake", "detect faces", "detect persons", "masking"]
    stages = [f"{k} {analysis.timings[k]:.0f}" for k in main if k in analysis.timings]
    for prefix in ("forward", "cam"):
        total = sum(v for k, v in analysis.timings.items() if k.startswith(prefix + " "))
        if total:
            stages.append(f"{prefix} {total:.0f}")
    if "total" in analysis.timings:
        stages.append(f"total {analysis.timings['total']:.0f}")
    lines.append(f"device **{analysis.device}** · " + " · ".join(stages) + " ms")
    return "\n\n".join(lines)


def _person_choices(analysis: Analysis) -> list[tuple[str, int]]:
    out = []
    for p in analysis.people:
        flags = [name for name, est in (("face", p.face_estimated), ("body", p.body_estimated)) if est]
        out.append((f"person {p.id}" + (f" (estimated {', '.join(flags)})" if flags else ""), p.id))
    return out


def _labels(analysis: Analysis, person: int) -> list[dict[str, float]]:
    out = []
    for key in MODELS:
        pred = analysis.predictions[key]
        out.append({name: score for name, score in pred.top(person, analysis.labels, 5)})
    return out


_pruned_at = 0.0
_prune_lock = threading.Lock()


def _prune_outputs(now: float) -> None:
    """Remove this app's files older than :data:`OUTPUT_MAX_AGE_S` (at most once a minute)."""
    global _pruned_at
    with _prune_lock:
        if now - _pruned_at < 60:
            return
        _pruned_at = now
    for path in OUTPUT_DIR.glob("sibnet-*"):
        try:
            if now - path.stat().st_mtime > OUTPUT_MAX_AGE_S:
                path.unlink()
        except OSError:  # removed meanwhile, or not ours to remove: leave it
            continue


def _output_stem() -> Path:
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    _prune_outputs(time.time())
    return OUTPUT_DIR / f"sibnet-{uuid.uuid4().hex[:12]}"


def _write_image(image: np.ndarray, stem: Path, kind: str) -> str:
    """Encode once, here, and hand Gradio the file: given an array it would encode it again (Pillow's slower
    default PNG level). The boxed photo is a JPEG (~6 ms for a 1080 × 810 photo against 110 ms as PNG)."""
    if kind == "people":
        path = stem.with_name(f"{stem.name}-{kind}.jpg")
        Image.fromarray(image).save(path, format="JPEG", quality=JPEG_QUALITY)
        return str(path)
    return str(save_png(image, stem.with_name(f"{stem.name}-{kind}.png")))


def _write_json(analysis: Analysis, person: int, stem: Path) -> str:
    data = analysis.to_json()
    data["selected_person"] = person
    path = stem.with_name(f"{stem.name}-results.json")
    path.write_text(json.dumps(data, indent=2) + "\n")
    return str(path)


class DemoApp:
    """The callbacks of the UI, bound to one analyzer."""

    def __init__(self, analyzer: Analyzer) -> None:
        self.analyzer = analyzer

    def _target(self, choice: str | None) -> str | None:
        return None if not choice or choice == TOP_TARGET else choice

    def _views(self, analysis: Analysis, person: int) -> tuple:
        """Everything drawn for one person of an analysis, in the order of the UI's outputs."""
        stem = _output_stem()
        if not analysis.people:
            empty = gr.update(choices=[], value=None, interactive=False)
            return (
                _write_image(people_overlay(analysis), stem, "people"),
                empty,
                *({},) * len(MODELS),
                None,
                None,
                None,
                None,
                status_markdown(analysis),
            )
        figure = _write_image(figure5(analysis, person), stem, "figure5")
        return (
            _write_image(people_overlay(analysis, selected=person), stem, "people"),
            gr.update(choices=_person_choices(analysis), value=person, interactive=len(analysis.people) > 1),
            *_labels(analysis, person),
            figure,
            _write_image(branch_strip(analysis, person), stem, "branches"),
            figure,  # the download is the very file shown
            _write_json(analysis, person, stem),
            status_markdown(analysis),
        )

    @gpu
    def analyze(
        self,
        photo: str | None,
        method: str,
        target: str | None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio injects progress through this default
    ) -> tuple:
        """New photo: detection, the three models, all maps."""
        if photo is None:
            raise gr.Error("Upload a photo first (or pick an example).")

        def callback(fraction: float, stage: str) -> None:
            progress(fraction, desc=stage)

        analysis = _guard(
            lambda: self.analyzer.analyze(
                photo, target=self._target(target), method=method, progress=callback
            )
        )
        return (analysis, *self._views(analysis, 0))

    def select_person(self, analysis: Analysis | None, person: int | None) -> tuple:
        """Another person: the maps already exist, only redraw."""
        if analysis is None or person is None or not analysis.people:
            raise gr.Error("Analyse a photo first.")
        return _guard(lambda: self._views(analysis, int(person)))

    @gpu
    def reexplain(
        self, analysis: Analysis | None, person: int | None, method: str, target: str | None
    ) -> tuple:
        """Another target or method: recompute the maps only."""
        if analysis is None:
            raise gr.Error("Analyse a photo first.")
        if not analysis.people:
            return (analysis, *self._views(analysis, 0))
        updated = _guard(lambda: self.analyzer.explain(analysis, target=self._target(target), method=method))
        return (updated, *self._views(updated, int(person or 0)))

    @gpu
    def api_analyze(self, photo: str | None, method: str, target: str | None, person: float | None) -> tuple:
        """API endpoint: (photo, method, target, person) → (predictions JSON, Figure-5 PNG of that person)."""
        if photo is None:
            raise gr.Error("no photo given")
        analysis = _guard(lambda: self.analyzer.analyze(photo, target=self._target(target), method=method))
        data = analysis.to_json()
        if not analysis.people:
            return data, None
        person = int(person or 0)
        if not 0 <= person < len(analysis.people):
            raise gr.Error(f"person {person} out of range: this photo has {len(analysis.people)} people")
        data["selected_person"] = person
        return data, _write_image(_guard(lambda: figure5(analysis, person)), _output_stem(), "figure5")


def _guard(fn: Any) -> Any:
    """Run ``fn``; bad input becomes one readable message, anything else is logged and reported briefly."""
    try:
        return fn()
    except gr.Error:
        raise
    except (ValueError, OSError) as err:  # ImageError, CheckpointError, bad targets... (all ValueErrors)
        raise gr.Error(str(err), print_exception=False) from err
    except Exception as err:
        log.exception("analysis failed")
        raise gr.Error(f"Internal error ({type(err).__name__}); the server logged the details.") from err


def build_ui(analyzer: Analyzer, examples: list[str] | None = None) -> gr.Blocks:
    """The Blocks app over ``analyzer``. Launch it with :func:`launch_kwargs`."""
    app = DemoApp(analyzer)
    examples = example_photos() if examples is None else examples
    method_choices = [(METHOD_TITLES[m], m) for m in CAM_METHODS]
    target_choices = [TOP_TARGET, *analyzer.labels]
    model_state = (
        "trained checkpoints loaded."
        if analyzer.trained
        else f"⚠️ **{UNTRAINED}**. No trained checkpoints were given (see `--weights`); the maps below show the "
        "machinery, not what a trained SIB-Net looks at."
    )
    with gr.Blocks(
        title="SIB-Net: where does each branch look?",
        analytics_enabled=None,
        delete_cache=(OUTPUT_MAX_AGE_S, OUTPUT_MAX_AGE_S),  # uploads and Gradio's copies, hourly
    ) as demo:
        gr.Markdown(
            "# SIB-Net: context-aware emotion recognition, explained\n"
            "Upload a photo. The app finds each person's face and body, masks the **face**, the **body** "
            "(face masked) and the **scene** (body masked), runs SIB-Net and the concatenation and attention "
            "baselines, and shows where each branch of each model looks (the paper's Figure 5).\n\n"
            f"Models: {model_state}",
            elem_id="intro",
        )
        state = gr.State(None)
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                photo = photo_input(
                    label="Photo",
                    sources=["upload", "clipboard", "webcam"],
                    elem_id="photo",
                    height=320,
                )
                with gr.Row():
                    method = gr.Dropdown(
                        method_choices, value="gradcam", label="CAM method", elem_id="method"
                    )
                    target = gr.Dropdown(
                        target_choices, value=TOP_TARGET, label="Target emotion", elem_id="target"
                    )
                run = gr.Button("Analyse", variant="primary", elem_id="analyse")
                examples_slot = gr.Column()
                people = gr.Image(
                    label="People found", format="jpeg", interactive=False, elem_id="people", height=320
                )
                person = gr.Dropdown(choices=[], label="Person", interactive=False, elem_id="person")
            with gr.Column(scale=2, min_width=320):
                with gr.Row():
                    labels = [
                        gr.Label(num_top_classes=5, label=title, elem_id=f"label-{key}", min_width=160)
                        for key, title in MODELS.items()
                    ]
                figure = gr.Image(
                    label="Figure 5: branch maps", format="png", interactive=False, elem_id="figure"
                )
                strip = gr.Image(
                    label="What each branch sees (face · body with face masked · scene with body masked)",
                    format="png",
                    interactive=False,
                    elem_id="strip",
                )
                with gr.Row():
                    figure_file = gr.DownloadButton("Download figure (PNG)", elem_id="download-figure")
                    json_file = gr.DownloadButton("Download results (JSON)", elem_id="download-json")
                status = gr.Markdown(elem_id="status")

        views = [people, person, *labels, figure, strip, figure_file, json_file, status]
        common = {"concurrency_id": CONCURRENCY_ID, "concurrency_limit": 1}
        run.click(
            app.analyze,
            [photo, method, target],
            [state, *views],
            api_name="ui_analyze",
            api_visibility="private",
            **common,
        )
        if examples:
            with examples_slot:  # clicking an example loads it and runs the analysis
                gr.Examples(
                    examples=[[p] for p in examples],
                    inputs=[photo],
                    outputs=[state, *views],
                    fn=lambda p: app.analyze(p, "gradcam", TOP_TARGET),
                    run_on_click=True,
                    cache_examples=False,
                    api_name="ui_example",
                    label="Examples (public domain)",
                )
        person.input(
            app.select_person,
            [state, person],
            views,
            api_name="ui_person",
            api_visibility="private",
            **common,
        )
        for name, control in (("ui_method", method), ("ui_target", target)):
            control.input(
                app.reexplain,
                [state, person, method, target],
                [state, *views],
                api_name=name,
                api_visibility="private",
                **common,
            )

        # API-only endpoint (hidden components): /analyze → predictions JSON + Figure-5 PNG.
        with gr.Row(visible=False):
            api_person = gr.Number(value=0, precision=0, label="person")
            api_json = gr.JSON(label="predictions")
            api_figure = gr.Image(format="png", label="figure")
            api_button = gr.Button("api")
        api_button.click(
            app.api_analyze,
            [photo, method, target, api_person],
            [api_json, api_figure],
            api_name="analyze",
            api_description="Analyse a photo: people, each model's scores, and the Figure-5 PNG of one person.",
            **common,
        )
    demo.queue(max_size=QUEUE_MAX_SIZE, default_concurrency_limit=1)
    return demo


def launch_kwargs(host: str, port: int, share: bool) -> dict[str, Any]:
    """Launch settings: SSR off, upload cap, no extra allowed paths."""
    return {
        "server_name": host,
        "server_port": port,
        "share": share,
        "ssr_mode": False,
        "max_file_size": MAX_FILE_SIZE,
        "show_error": True,  # gr.Error messages reach the user; tracebacks never do (see _guard)
        "css": CSS,
        "footer_links": ["api", "gradio"],
    }
