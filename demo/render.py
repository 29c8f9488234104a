"""Drawing an :class:`demo.results.Analysis`: the paper's Figure 5 grid, the branch inputs, the people.

- :func:`figure5` — rows concatenation, attention, SIB-Net; columns face, body, scene (each map over the masked
  image that branch saw) and the photo with all three maps composited; the target emotion and each model's
  score beside each row, one colour bar. Two layouts: ``"wide"`` (one row of four panels per model, for a
  desktop screen and the download) and ``"narrow"`` (a 2 × 2 block per model, 600 px wide, whose text stays
  at least 10 px tall when a phone shows the image at its ~370 px width). Overlays are pytorch-grad-cam's
  ``show_cam_on_image`` (OpenCV's JET colormap, which the colour bar reproduces).
- :func:`branch_strip` — the three masked branch inputs of one person, side by side.
- :func:`attribution_chart` — how much face, body and scene each moved every model's score (one shared axis).
- :func:`people_overlay` — the photo with every person's face and body boxes, numbered from 1; estimated boxes
  are dashed (:data:`LEGEND` says so in words).

Everything is composed as pixels with Pillow (text in matplotlib's bundled DejaVu Sans): no figure layout per
request. Measured on 2 cores for the 3-model grid of one person: ≈ 20 ms, where laying out the same grid in
matplotlib took 105-145 ms. All functions return RGB uint8 arrays; :func:`save_png` writes one losslessly.
Rendering holds no global state, so it is thread-safe and needs no display.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path

import cv2
import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pytorch_grad_cam.utils.image import show_cam_on_image

from demo.results import MODELS, Analysis, PersonMaps
from sibnet.boxes import scale_box
from sibnet.cam import CLASS_AGNOSTIC, METHOD_TITLES, composite_map, project_map
from sibnet.data.masking import BRANCHES

BRANCH_TITLES = {"face": "face", "body": "body (face masked)", "scene": "scene (body masked)"}
COMPOSITE_TITLE = "photo (all branches)"
FIGURE_WIDTH_PX = 1200  # the wide layout
NARROW_WIDTH_PX = 600  # the narrow layout, shown ~360-370 px wide on a phone (a 390 px screen, page margins)
NARROW_FONT_PX = 20  # its smallest text: shown 324-370 px wide, 20 px become 10.8-12 px on that screen
PANEL_PX = 224  # branch-input resolution; the photo for the composite column is prepared at twice that
FACE_COLOUR = (255, 208, 0)
BODY_COLOUR = (0, 160, 255)
WARNING_COLOUR = (176, 0, 32)
TEXT_COLOUR = (20, 20, 20)
MUTED_COLOUR = (90, 90, 90)
LEGEND = (
    "Yellow box: face · blue box: body · dashed: estimated (not detected) · "
    "click a person's box to show their maps"
)


@cache
def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name), size)


def overlay(image: np.ndarray, cam: np.ndarray, image_weight: float = 0.5) -> np.ndarray:
    """A map over an RGB uint8 image (resized to the image), as pytorch-grad-cam draws it."""
    if cam.shape != image.shape[:2]:
        cam = cv2.resize(
            cam.astype(np.float32), (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR
        )
    return show_cam_on_image(
        image.astype(np.float32) / 255.0, np.clip(cam, 0, 1), use_rgb=True, image_weight=image_weight
    )


def _shrink(image: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    """Downsize so the longest side is at most ``side`` (aspect kept); returns the image and the factor."""
    h, w = image.shape[:2]
    if max(h, w) <= side:
        return image, 1.0
    s = side / max(h, w)
    size = (max(round(w * s), 1), max(round(h * s), 1))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), s


def _fit(image: np.ndarray, side: int) -> np.ndarray:
    """Letterbox an image into a side×side tile (aspect kept, white margins)."""
    h, w = image.shape[:2]
    s = side / max(h, w)
    nw, nh = max(round(w * s), 1), max(round(h * s), 1)
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    tile = np.full((side, side, 3), 255, np.uint8)
    y, x = (side - nh) // 2, (side - nw) // 2
    tile[y : y + nh, x : x + nw] = resized
    return tile


def _tile(image: np.ndarray, side: int) -> np.ndarray:
    """Exactly side×side: resized when square (branch inputs), letterboxed otherwise (the photo)."""
    if image.shape[0] == image.shape[1]:
        if image.shape[0] == side:
            return image
        return cv2.resize(image, (side, side), interpolation=cv2.INTER_LINEAR)
    return _fit(image, side)


def _resolve_person(analysis: Analysis, person: int | None) -> int:
    if not analysis.people:
        raise ValueError("this analysis found no person: there is nothing to draw")
    person = 0 if person is None else person
    if not 0 <= person < len(analysis.people):
        raise ValueError(
            f"person {person} out of range: {len(analysis.people)} people (0-{len(analysis.people) - 1})"
        )
    if any(person not in maps for maps in analysis.maps.values()):
        raise ValueError(
            f"no maps were computed for person {person}; call Analyzer.explain(analysis, person={person})"
        )
    return person


def _composite(pmaps: PersonMaps, shape: tuple[int, int], scale: float) -> np.ndarray:
    """The composite map drawn at a (downscaled) copy of the analysed image: regions scaled, then pasted."""
    projected = {b: project_map(m, scale_box(pmaps.regions[b], scale)) for b, m in pmaps.maps.items()}
    return composite_map(projected, shape[0], shape[1])


def _panels(analysis: Analysis, person: int, key: str, photo: np.ndarray, s: float, side: int) -> list:
    """The four tiles of one model's row: face, body, scene (None where the model has no such branch), photo."""
    pmaps = analysis.maps[key][person]
    masked = dict(zip(BRANCHES, analysis.masked_inputs[person]))
    tiles: list[np.ndarray | None] = [
        _tile(overlay(masked[b], pmaps.maps[b]), side) if b in pmaps.maps else None for b in BRANCHES
    ]
    tiles.append(_tile(overlay(photo, _composite(pmaps, photo.shape[:2], s)), side))
    return tiles


def _jet_bar(height: int, width: int) -> np.ndarray:
    """A vertical colour bar of OpenCV's JET (1 at the top), the colormap of the overlays."""
    ramp = np.linspace(255, 0, height).astype(np.uint8)[:, None].repeat(width, axis=1)
    return cv2.cvtColor(cv2.applyColorMap(ramp, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def method_title(method: str, target: str) -> str:
    """What the maps show, saying so when a method ignores the target class."""
    title = METHOD_TITLES.get(method, method)
    if method in CLASS_AGNOSTIC:
        return f"{title} (the same for every target)"
    return f"{title} for target “{target}”"


def figure5(
    analysis: Analysis, person: int | None = None, layout: str = "wide", width_px: int | None = None
) -> np.ndarray:
    """The Figure-5 grid for one person, as an RGB uint8 array.

    Args:
        analysis: the result to draw.
        person: the person's id (0-based; the figure numbers people from 1).
        layout: ``"wide"`` (1200 px, one row per model) or ``"narrow"`` (600 px, a 2 × 2 block per model).
        width_px: the wide layout's width (default :data:`FIGURE_WIDTH_PX`).

    Raises:
        ValueError: no people, person out of range, maps not computed for that person, or an unknown layout.
    """
    person = _resolve_person(analysis, person)
    if layout == "wide":
        return _wide(analysis, person, width_px or FIGURE_WIDTH_PX)
    if layout == "narrow":
        return _narrow(analysis, person)
    raise ValueError(f"unknown layout {layout!r}; valid layouts: wide, narrow")


def _who(analysis: Analysis, person: int) -> str:
    n = len(analysis.people)
    return f"person {person + 1}" + (f" of {n}" if n > 1 else "")


def _score_name(analysis: Analysis) -> str:
    return "p" if analysis.multi_label else "softmax"


def _header(draw: ImageDraw.ImageDraw, analysis: Analysis, person: int, centre: float, size: int) -> None:
    target = analysis.target_name(person)
    title = f"{method_title(analysis.method, target)} — {_who(analysis, person)}"
    draw.text((centre, 22), title, fill=TEXT_COLOUR, font=_font(size, bold=True), anchor="mm")
    if not analysis.trained:
        warning = "UNTRAINED WEIGHTS — predictions and maps are meaningless"
        draw.text((centre, 50), warning, fill=WARNING_COLOUR, font=_font(size - 6, bold=True), anchor="mm")


def _wide(analysis: Analysis, person: int, width_px: int) -> np.ndarray:
    keys = [k for k in MODELS if k in analysis.maps]
    photo, s = _shrink(analysis.image, 2 * PANEL_PX)  # once; every composite is overlaid at this size
    label_w, bar_w, gap = 135, 105, 10
    panel = (width_px - label_w - bar_w - 5 * gap) // 4
    header, row_title = 70, 26
    row_h = row_title + panel + gap
    height = header + len(keys) * row_h + 6
    lefts = [label_w + gap + c * (panel + gap) for c in range(4)]
    canvas = np.full((height, width_px, 3), 255, np.uint8)
    blanks: list[tuple[int, int]] = []
    for r, key in enumerate(keys):
        top = header + r * row_h + row_title
        for left, tile in zip(lefts, _panels(analysis, person, key, photo, s, panel)):
            if tile is None:
                canvas[top : top + panel, left : left + panel] = 235
                blanks.append((left, top))
            else:
                canvas[top : top + panel, left : left + panel] = tile
    bar_top, bar_bottom = header + row_title, height - 6 - gap
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    centre = (label_w + width_px - bar_w) / 2
    _header(draw, analysis, person, centre, 21)
    titles = [*(BRANCH_TITLES[b] for b in BRANCHES), COMPOSITE_TITLE]
    for left, text in zip(lefts, titles):
        draw.text(
            (left + panel / 2, header + row_title - 6), text, fill=TEXT_COLOUR, font=_font(14), anchor="ms"
        )
    target = analysis.target_name(person)
    for r, key in enumerate(keys):
        y = header + r * row_h + row_title + panel / 2
        score = analysis.maps[key][person].target_score
        label = f"{MODELS[key]}\n{target}\n{_score_name(analysis)} = {score:.3f}"
        font = _font(15, bold=key == "sibnet")
        draw.multiline_text((8, y), label, fill=TEXT_COLOUR, font=font, anchor="lm", spacing=5)
    for left, top in blanks:
        draw.multiline_text(
            (left + panel / 2, top + panel / 2), "not used by\nthis model", fill=MUTED_COLOUR,
            font=_font(14), anchor="mm", align="center",
        )  # fmt: skip
    bar_x = width_px - bar_w + 18
    for value in (0.0, 0.5, 1.0):
        y = bar_bottom - value * (bar_bottom - bar_top)
        draw.text((bar_x + 22, y), f"{value:.1f}", fill=TEXT_COLOUR, font=_font(12), anchor="lm")
    out = np.asarray(image).copy()
    out[bar_top:bar_bottom, bar_x : bar_x + 16] = _jet_bar(bar_bottom - bar_top, 16)
    _paste_vertical(
        out, "relevance (each map scaled to its own range)", width_px - 20, (bar_top + bar_bottom) // 2
    )
    return out


def _paste_vertical(out: np.ndarray, text: str, x: int, y: int, font_px: int = 12) -> None:
    """Text rotated by 90° (read bottom to top), centred on (x, y): the colour bar's caption."""
    font = _font(font_px)
    label = Image.new("RGB", (int(font.getlength(text)) + 4, font_px + 6), (255, 255, 255))
    ImageDraw.Draw(label).text((2, 1), text, fill=TEXT_COLOUR, font=font)
    rotated = np.asarray(label.rotate(90, expand=True))
    h, w = rotated.shape[:2]
    top, left = max(y - h // 2, 0), min(max(x - w // 2, 0), out.shape[1] - w)
    h = min(h, out.shape[0] - top)
    out[top : top + h, left : left + w] = rotated[:h]


def _narrow(analysis: Analysis, person: int) -> np.ndarray:
    keys = [k for k in MODELS if k in analysis.maps]
    width = NARROW_WIDTH_PX
    photo, s = _shrink(analysis.image, 2 * PANEL_PX)
    gap, caption = 8, 26
    panel = (width - 3 * gap) // 2
    header = 104 if not analysis.trained else 76
    title_h = 36
    block = title_h + 2 * (caption + panel) + gap
    bar_h = 46
    height = header + len(keys) * block + bar_h
    canvas = np.full((height, width, 3), 255, np.uint8)
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    target = analysis.target_name(person)
    bold = _font(NARROW_FONT_PX, bold=True)
    draw.text(
        (width / 2, 18), method_title(analysis.method, target), fill=TEXT_COLOUR, font=bold, anchor="mm"
    )
    draw.text(
        (width / 2, 46), _who(analysis, person), fill=TEXT_COLOUR, font=_font(NARROW_FONT_PX), anchor="mm"
    )
    if not analysis.trained:
        draw.text(
            (width / 2, 76), "UNTRAINED WEIGHTS — meaningless", fill=WARNING_COLOUR, font=bold, anchor="mm"
        )
    titles = [*(BRANCH_TITLES[b] for b in BRANCHES), COMPOSITE_TITLE]
    tiles_at: list[tuple[np.ndarray | None, int, int]] = []
    for r, key in enumerate(keys):
        top = header + r * block
        score = analysis.maps[key][person].target_score
        line = f"{MODELS[key]} · {_score_name(analysis)}({target}) = {score:.3f}"
        draw.text(
            (gap, top + title_h / 2),
            line,
            fill=TEXT_COLOUR,
            font=_font(NARROW_FONT_PX, bold=True),
            anchor="lm",
        )
        for i, tile in enumerate(_panels(analysis, person, key, photo, s, panel)):
            x = gap + (i % 2) * (panel + gap)
            y = top + title_h + (i // 2) * (caption + panel)
            draw.text(
                (x + panel / 2, y + caption - 5),
                titles[i],
                fill=TEXT_COLOUR,
                font=_font(NARROW_FONT_PX),
                anchor="ms",
            )
            tiles_at.append((tile, x, y + caption))
            if tile is None:
                draw.rectangle((x, y + caption, x + panel - 1, y + caption + panel - 1), fill=(235, 235, 235))
                draw.text(
                    (x + panel / 2, y + caption + panel / 2), "not used by this model", fill=MUTED_COLOUR,
                    font=_font(NARROW_FONT_PX), anchor="mm",
                )  # fmt: skip
    bar_top = height - bar_h + 6
    draw.text((gap, bar_top + 8), "0", fill=TEXT_COLOUR, font=_font(NARROW_FONT_PX), anchor="lm")
    draw.text((width - gap, bar_top + 8), "1", fill=TEXT_COLOUR, font=_font(NARROW_FONT_PX), anchor="rm")
    draw.text(
        (width / 2, bar_top + 30), "relevance, each map scaled to its own range", fill=TEXT_COLOUR,
        font=_font(NARROW_FONT_PX), anchor="mm",
    )  # fmt: skip
    out = np.asarray(image).copy()
    for tile, x, y in tiles_at:
        if tile is not None:
            out[y : y + panel, x : x + panel] = tile
    bar = np.rot90(_jet_bar(width - 60, 16), k=-1)  # 0 on the left, 1 on the right
    out[bar_top : bar_top + 16, 30 : width - 30] = bar
    return out


def branch_strip(analysis: Analysis, person: int | None = None, side: int = 224) -> np.ndarray:
    """The three masked branch inputs (face, body with face masked, scene with body masked) side by side."""
    person = 0 if person is None else person
    if not 0 <= person < len(analysis.people):
        raise ValueError(f"person {person} out of range: {len(analysis.people)} people")
    gap = 8
    tiles = [_fit(img, side) for img in analysis.masked_inputs[person]]
    strip = np.full((side, 3 * side + 2 * gap, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        strip[:, i * (side + gap) : i * (side + gap) + side] = tile
    return strip


def _dashed_rectangle(
    draw: ImageDraw.ImageDraw, box: Sequence[float], colour: tuple, width: int, dash: int
) -> None:
    x1, y1, x2, y2 = box
    for (ax, ay), (bx, by) in (
        ((x1, y1), (x2, y1)),
        ((x2, y1), (x2, y2)),
        ((x2, y2), (x1, y2)),
        ((x1, y2), (x1, y1)),
    ):
        length = max(abs(bx - ax), abs(by - ay))
        steps = max(int(length // dash), 1)
        for i in range(0, steps, 2):
            t0, t1 = i / steps, min((i + 1) / steps, 1.0)
            draw.line(
                [(ax + (bx - ax) * t0, ay + (by - ay) * t0), (ax + (bx - ax) * t1, ay + (by - ay) * t1)],
                fill=colour,
                width=width,
            )


def people_overlay(analysis: Analysis, selected: int | None = None) -> np.ndarray:
    """The analysed photo with each person's boxes (face yellow, body blue; estimated boxes dashed), numbered
    from 1; the selected person's boxes are thicker."""
    image = Image.fromarray(analysis.image).convert("RGB")
    draw = ImageDraw.Draw(image)
    side = max(image.size)
    width = max(2, round(side / 320))
    font = _font(max(14, round(side / 40)), bold=True)
    for p in analysis.people:
        thick = width * 2 if selected is not None and p.id == selected else width
        for box, colour, estimated in (
            (p.body_box, BODY_COLOUR, p.body_estimated),
            (p.face_box, FACE_COLOUR, p.face_estimated),
        ):
            if estimated:
                _dashed_rectangle(draw, box, colour, thick, dash=max(6, round(side / 90)))
            else:
                draw.rectangle(box, outline=colour, width=thick)
        label = str(p.id + 1)
        tx, ty = p.face_box[0], max(p.face_box[1] - font.size - 2 * width, 0)
        bbox = draw.textbbox((tx, ty), label, font=font)
        draw.rectangle((bbox[0] - 3, bbox[1] - 2, bbox[2] + 3, bbox[3] + 2), fill=(0, 0, 0))
        draw.text((tx, ty), label, fill=(255, 255, 255), font=font)
    return np.asarray(image)


def person_at(analysis: Analysis, x: float, y: float) -> int | None:
    """The person whose box holds the point (analysed-image pixels): a face box first, then the smallest body
    box; None when the point is on nobody."""
    faces = [p for p in analysis.people if _inside(p.face_box, x, y)]
    if faces:
        return faces[0].id
    bodies = [p for p in analysis.people if _inside(p.body_box, x, y)]
    if bodies:
        return min(bodies, key=lambda p: (p.body_box[2] - p.body_box[0]) * (p.body_box[3] - p.body_box[1])).id
    return None


def _inside(box: Sequence[float], x: float, y: float) -> bool:
    return box[0] <= x <= box[2] and box[1] <= y <= box[3]


ATTRIBUTION_WIDTH_PX = 600  # shown ~370 px wide on a phone, like the narrow figure: text ≥ NARROW_FONT_PX
BRANCH_COLOURS = {"face": FACE_COLOUR, "body": BODY_COLOUR, "scene": (60, 170, 90)}


def attribution_chart(analysis: Analysis, person: int | None = None) -> np.ndarray:
    """Per model, a bar per branch: how much it moved the probability of the person's target (Shapley values).

    Every model shares one axis, centred on zero, so bars compare across branches *and* models (unlike the
    maps, each scaled on its own). Each row gives the model's no-evidence score → its prediction; its bars add
    up to the difference. Needs :meth:`demo.pipeline.Analyzer.attribute` to have run.

    Raises:
        ValueError: no attributions in ``analysis``, or no such person.
    """
    person = _resolve_person(analysis, person)
    rows = [(key, analysis.attribution(key, person)) for key in MODELS if key in analysis.predictions]
    rows = [(key, a) for key, a in rows if a is not None]
    if not rows:
        raise ValueError("no attributions in this analysis: run Analyzer.attribute first")
    font, bold, small = _font(NARROW_FONT_PX), _font(NARROW_FONT_PX + 2, True), _font(NARROW_FONT_PX - 2)
    width, label_w, pad, bar_h, gap = ATTRIBUTION_WIDTH_PX, 78, 14, 26, 8
    row_h = 36 + len(BRANCHES) * (bar_h + gap) + 12
    header_h = 64
    image = Image.new("RGB", (width, header_h + row_h * len(rows) + 8), "white")
    draw = ImageDraw.Draw(image)
    draw.text((pad, 8), f"Contributions to {rows[0][1]['target']}", fill=TEXT_COLOUR, font=bold)
    draw.text((pad, 38), f"{_who(analysis, person)} · one scale for all bars", fill=MUTED_COLOUR, font=small)
    values = [v or 0.0 for _, a in rows for v in a["values"].values()]
    span = max(0.05, *(abs(v) for v in values)) * 1.05
    left, right = pad + label_w, width - pad - 76
    zero = (left + right) / 2
    unit = (right - left) / 2 / span
    y = header_h
    for key, a in rows:
        before, after = a["score_none"] or 0.0, a["score_all"] or 0.0
        draw.text((pad, y + 4), MODELS[key], fill=TEXT_COLOUR, font=bold)
        title_w = draw.textlength(MODELS[key], font=bold)
        change = f"p {before:.2f} with nothing → {after:.2f} with all"
        draw.text((pad + title_w + 12, y + 6), change, fill=MUTED_COLOUR, font=font)
        top = y + 36
        draw.line([(zero, top - 2), (zero, top + len(BRANCHES) * (bar_h + gap))], fill=MUTED_COLOUR, width=2)
        for b, branch in enumerate(BRANCHES):
            v = a["values"].get(branch) or 0.0
            by = top + b * (bar_h + gap)
            draw.text((pad, by + 1), branch, fill=TEXT_COLOUR, font=font)
            x1 = zero + v * unit
            draw.rectangle([min(zero, x1), by, max(zero, x1), by + bar_h], fill=BRANCH_COLOURS[branch])
            draw.text((right + 8, by + 1), f"{v:+.3f}", fill=TEXT_COLOUR, font=font)
        y += row_h
    return np.asarray(image)


# zlib level for PNGs: measured on the 1200 × 865 Figure-5 grid on 2 cores, level 1 took 70-78 ms and level 6
# (Pillow's default) 212-240 ms, for 16 % more bytes (816 KB against 701 KB). Either is lossless.
PNG_COMPRESS_LEVEL = 1


def save_png(image: np.ndarray, path: str | Path, compress_level: int = PNG_COMPRESS_LEVEL) -> Path:
    """Write an RGB uint8 array as a (lossless) PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="PNG", compress_level=compress_level)
    return path
