"""What the web app says, as plain data: its texts, the header, the notices, the tables, the person list.

No gradio here (only :mod:`demo.ui` and :mod:`demo.handlers` import it): these functions turn an
:class:`~demo.results.Analysis` and an :class:`~demo.pipeline.Analyzer` into the strings and rows the
components show, so they can be read and tested without a server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from demo.pipeline import Analyzer
from demo.results import MODELS, UNTRAINED, Analysis

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = ROOT / "assets" / "examples"
TOP_TARGET = "SIB-Net's top emotion"
MAX_QUOTED = 80  # user input is quoted back at most this long
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
# On page load: a refused upload (a file that is not an image) would sit in the photo input as a broken image
# (the server's empty value does not clear the preview Gradio drew at upload): hide a photo that fails to load
# until one loads there again. error and load do not bubble, so they are caught on their way down.
HIDE_BROKEN_PHOTO = """() => {
  const inPhoto = (e) => e.target instanceof HTMLImageElement && e.target.closest('#photo');
  document.addEventListener('error', (e) => { if (inPhoto(e)) e.target.style.visibility = 'hidden'; }, true);
  document.addEventListener('load', (e) => { if (inPhoto(e)) e.target.style.visibility = ''; }, true);
}"""
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


def quoted(value: Any) -> str:
    """User input for a message: at most :data:`MAX_QUOTED` characters, single line."""
    text = " ".join(str(value).split())
    return text if len(text) <= MAX_QUOTED else text[: MAX_QUOTED - 1] + "…"


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


def notices_markdown(analysis: Analysis, analyzer: Analyzer) -> str:
    """The notices a visitor needs, in plain words. What the models and detectors are is the header's and the
    log's business (load notices name folders and download hosts); the missing person detector becomes one
    sentence about what it means for the result."""
    lines = [n for n in analysis.notices if n not in analyzer.load_notices]
    return "\n".join(f"- {n[0].upper()}{n[1:]}{'' if n.endswith('.') else '.'}" for n in lines)


def details_markdown(analysis: Analysis, analyzer: Analyzer) -> str:
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


def coalition_rows(analysis: Analysis, person: int) -> list[list[Any]]:
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


def person_choices(analysis: Analysis) -> list[tuple[str, int]]:
    out = []
    for p in analysis.people:
        flags = [name for name, est in (("face", p.face_estimated), ("body", p.body_estimated)) if est]
        out.append((f"Person {p.id + 1}" + (f" (estimated {', '.join(flags)})" if flags else ""), p.id))
    return out


def branch_table(analysis: Analysis, person: int) -> list[list[Any]]:
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
