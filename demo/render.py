"""Drawing an :class:`demo.pipeline.Analysis`: the paper's Figure 5 grid, the branch inputs, the people.

- :func:`figure5` — rows concatenation, attention, SIB-Net; columns face, body, scene (each map over the masked
  image that branch saw) and the photo with all three maps composited; the target emotion and each model's
  score in the titles, one colour bar. Overlays are pytorch-grad-cam's ``show_cam_on_image`` (JET colormap,
  so the colour bar uses matplotlib's ``jet``).
- :func:`branch_strip` — the three masked branch inputs of one person, side by side.
- :func:`people_overlay` — the photo with every person's face and body boxes, numbered; estimated boxes are
  dashed.

All return RGB uint8 arrays; :func:`save_png` writes one losslessly. Matplotlib runs on its Agg canvas, with
no pyplot state, so rendering is thread-safe and needs no display.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont
from pytorch_grad_cam.utils.image import show_cam_on_image

from demo.results import MODELS, Analysis
from sibnet.cam import METHOD_TITLES
from sibnet.data.masking import BRANCHES

BRANCH_TITLES = {"face": "face", "body": "body (face masked)", "scene": "scene (body masked)"}
COMPOSITE_TITLE = "photo (all branches)"
FIGURE_WIDTH_PX = 1200
PANEL_PX = 224  # branch-input resolution; the photo for the composite column is prepared at twice that
FACE_COLOUR = (255, 208, 0)
BODY_COLOUR = (0, 160, 255)
WARNING_COLOUR = "#b00020"


def overlay(image: np.ndarray, cam: np.ndarray, image_weight: float = 0.5) -> np.ndarray:
    """A map over an RGB uint8 image (resized to the image), as pytorch-grad-cam draws it."""
    import cv2

    if cam.shape != image.shape[:2]:
        cam = cv2.resize(
            cam.astype(np.float32), (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR
        )
    return show_cam_on_image(
        image.astype(np.float32) / 255.0, np.clip(cam, 0, 1), use_rgb=True, image_weight=image_weight
    )


def _shrink(image: np.ndarray, side: int) -> np.ndarray:
    """Downsize so the longest side is at most ``side`` (aspect kept)."""
    h, w = image.shape[:2]
    if max(h, w) <= side:
        return image
    s = side / max(h, w)
    return np.asarray(
        Image.fromarray(image).resize((max(round(w * s), 1), max(round(h * s), 1)), Image.Resampling.BILINEAR)
    )


def _fit(image: np.ndarray, side: int) -> np.ndarray:
    """Letterbox an image into a side×side tile (aspect kept, white margins)."""
    h, w = image.shape[:2]
    s = side / max(h, w)
    nw, nh = max(round(w * s), 1), max(round(h * s), 1)
    resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BILINEAR))
    tile = np.full((side, side, 3), 255, np.uint8)
    y, x = (side - nh) // 2, (side - nw) // 2
    tile[y : y + nh, x : x + nw] = resized
    return tile


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


def _tile(image: np.ndarray, side: int) -> np.ndarray:
    """Exactly side×side: resized when square (branch inputs), letterboxed otherwise (the photo)."""
    if image.shape[0] == image.shape[1]:
        if image.shape[0] == side:
            return image
        return np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.BILINEAR))
    return _fit(image, side)


def figure5(analysis: Analysis, person: int | None = None, width_px: int = FIGURE_WIDTH_PX) -> np.ndarray:
    """The Figure-5 grid for one person, as an RGB uint8 array ``width_px`` wide.

    The panels are composed as one pixel canvas and copied into matplotlib's rendering of the text and the
    colour bar (no axes per panel, no resampling): one axes instead of thirteen keeps a figure fast.

    Raises:
        ValueError: no people, person out of range, or maps not computed for that person.
    """
    person = _resolve_person(analysis, person)
    keys = [k for k in MODELS if k in analysis.maps]
    masked = dict(zip(BRANCHES, analysis.masked_inputs[person]))
    image = analysis.image
    photo = _shrink(image, 2 * PANEL_PX)  # once; each composite is overlaid at this size, then letterboxed
    target = analysis.target_name(person)

    # Pixel layout: row-label column | 4 panels | colour bar; a header band above, a title line per row.
    label_w, bar_w, gap = 135, 105, 10
    panel = (width_px - label_w - bar_w - 5 * gap) // 4
    header, row_title = 70, 26
    rows = len(keys)
    row_h = row_title + panel + gap
    height = header + rows * row_h + 6
    canvas = np.full((height, width_px, 3), 255, np.uint8)
    lefts = [label_w + gap + c * (panel + gap) for c in range(4)]
    blank = np.full((panel, panel, 3), 235, np.uint8)
    unused: list[tuple[int, int]] = []
    for r, key in enumerate(keys):
        pmaps = analysis.maps[key][person]
        top = header + r * row_h + row_title
        tiles = []
        for c, branch in enumerate(BRANCHES):
            if branch in pmaps.maps:
                tiles.append(_tile(overlay(masked[branch], pmaps.maps[branch]), panel))
            else:
                tiles.append(blank)
                unused.append((r, c))
        comp = pmaps.composite(image.shape[0], image.shape[1])
        tiles.append(_tile(overlay(photo, comp), panel))
        for left, tile in zip(lefts, tiles):
            canvas[top : top + panel, left : left + panel] = tile

    dpi = 100
    fig = Figure(figsize=(width_px / dpi, height / dpi), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)

    def at(x: float, y: float) -> tuple[float, float]:  # pixel (from top-left) → figure fraction
        return x / width_px, 1 - y / height

    centre = (label_w + width_px - bar_w) / 2
    method = METHOD_TITLES.get(analysis.method, analysis.method)
    who = f"person {person}" + (f" of {len(analysis.people)}" if len(analysis.people) > 1 else "")
    title = f"{method} for target “{target}” — {who}"
    fig.text(*at(centre, 22), title, ha="center", va="center", fontsize=15, weight="bold")
    if not analysis.trained:
        warning = "UNTRAINED WEIGHTS — predictions and maps are meaningless"
        fig.text(
            *at(centre, 48),
            warning,
            ha="center",
            va="center",
            fontsize=11,
            color=WARNING_COLOUR,
            weight="bold",
        )
    column_titles = [*(BRANCH_TITLES[b] for b in BRANCHES), COMPOSITE_TITLE]
    for left, text in zip(lefts, column_titles):
        fig.text(*at(left + panel / 2, header + row_title - 6), text, ha="center", va="bottom", fontsize=10)
    score_name = "p" if analysis.multi_label else "softmax"
    for r, key in enumerate(keys):
        score = analysis.maps[key][person].target_score
        y = header + r * row_h + row_title + panel / 2
        weight = "bold" if key == "sibnet" else "normal"
        label = f"{MODELS[key]}\n{target}\n{score_name} = {score:.3f}"
        fig.text(*at(8, y), label, ha="left", va="center", fontsize=11, weight=weight)
    for r, c in unused:
        y = header + r * row_h + row_title + panel / 2
        fig.text(
            *at(lefts[c] + panel / 2, y), "not used by\nthis model", ha="center", va="center", fontsize=10
        )
    bar_top, bar_bottom = header + row_title, height - 6 - gap
    cax = fig.add_axes(
        (*at(width_px - bar_w + 18, bar_bottom), 16 / width_px, (bar_bottom - bar_top) / height)
    )
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), colormaps["jet"]), cax=cax)
    bar.set_label("relevance (per-map min-max)", fontsize=9)
    bar.ax.tick_params(labelsize=8)
    out = _to_rgb(fig)
    # The panels go in as pixels after matplotlib drew the text around them: no resampling, no axes.
    for r in range(rows):
        top = header + r * row_h + row_title
        for left in lefts:
            out[top : top + panel, left : left + panel] = canvas[top : top + panel, left : left + panel]
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
    """The analysed photo with each person's boxes (face yellow, body blue; estimated boxes dashed) and id."""
    image = Image.fromarray(analysis.image).convert("RGB")
    draw = ImageDraw.Draw(image)
    side = max(image.size)
    width = max(2, round(side / 320))
    try:
        font = ImageFont.load_default(size=max(14, round(side / 40)))
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
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
        fx1, fy1 = p.face_box[0], p.face_box[1]
        label = str(p.id)
        tx, ty = fx1, max(fy1 - font.size - 2 * width, 0) if hasattr(font, "size") else fy1
        bbox = draw.textbbox((tx, ty), label, font=font)
        draw.rectangle((bbox[0] - 3, bbox[1] - 2, bbox[2] + 3, bbox[3] + 2), fill=(0, 0, 0))
        draw.text((tx, ty), label, fill=(255, 255, 255), font=font)
    return np.asarray(image)


def _to_rgb(fig: Figure) -> np.ndarray:
    canvas = fig.canvas
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


# zlib level for PNGs: measured on the 1200 × 865 Figure-5 grid on 2 cores, level 1 took 70-78 ms and level 6
# (Pillow's default) 212-240 ms, for 16 % more bytes (816 KB against 701 KB). Either is lossless.
PNG_COMPRESS_LEVEL = 1


def save_png(image: np.ndarray, path: str | Path, compress_level: int = PNG_COMPRESS_LEVEL) -> Path:
    """Write an RGB uint8 array as a (lossless) PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="PNG", compress_level=compress_level)
    return path
