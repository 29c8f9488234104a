"""The Gradio app's layout: components and events, wired to :class:`demo.handlers.DemoApp` (the callbacks),
with texts and rows from :mod:`demo.views` and images from :mod:`demo.render`; nothing else.

Layout: the photo (upload, paste or webcam; examples from ``assets/examples``), the CAM method and target →
the results: a progress/message line, the people found (boxed, numbered from 1; click a box to pick that
person) with a legend, each model's top emotions, the Figure-5 grid (a wide layout on a desktop, a narrow one
on a phone, chosen by CSS), "How to read this", the branch heads' scores, the three masked inputs, downloads
(disabled until there is a result), the branch contributions on demand (:mod:`sibnet.attribution`) and a
collapsed "Details" with the operator's view (device, timings).

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

import os
from pathlib import Path
from typing import Any

import gradio as gr
from starlette.middleware import Middleware

from demo.handlers import GPU_DURATION_S, REQUEST_BUDGET_S, DemoApp, gpu
from demo.pipeline import MAX_PEOPLE, Analyzer
from demo.render import LEGEND
from demo.results import MODELS, NO_PERSON
from demo.server import DISK_CAP_BYTES, OUTPUT_MAX_AGE_S, OutputStore, RequestGuard
from demo.uploads import MAX_UPLOAD_MB, Refusal, accept
from demo.views import (
    ATTRIBUTE_LABEL,
    CODE_URL_ENV,
    CSS,
    EXAMPLES_DIR,
    HIDE_BROKEN_PHOTO,
    HOW_TO_READ,
    PAPER,
    SCROLL_TO_RESULTS,
    SHORT_TITLES,
    TOP_TARGET,
    example_photos,
    models_markdown,
)
from sibnet.cam import CAM_METHODS, METHOD_TITLES
from sibnet.data.masking import BRANCHES

MAX_FILE_SIZE = f"{MAX_UPLOAD_MB}mb"  # Gradio's cap on the upload route; inline photos get the same cap
QUEUE_MAX_SIZE = 16  # waiting requests beyond this are turned away with "queue full" instead of piling up
CONCURRENCY_ID = "models"  # every event that runs the models shares this one slot


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
        "show_error": True,  # gr.Error messages reach the user; tracebacks never do (see demo.handlers.sentence)
        "css": CSS,
        "js": HIDE_BROKEN_PHOTO,
        "footer_links": ["api", "gradio"],
        "app_kwargs": {"middleware": [Middleware(RequestGuard, disk_root=root, **guard)]},
    }


__all__ = [  # what tests, app.py and a Space import from here
    "DISK_CAP_BYTES", "EXAMPLES_DIR", "GPU_DURATION_S", "MAX_PEOPLE", "NO_PERSON", "REQUEST_BUDGET_S", "TOP_TARGET",
    "DemoApp", "build_ui", "gpu", "launch_kwargs",
]  # fmt: skip
