"""Planted-cue scenes: one image of one or two person-like figures with a class's cue planted in one known
region (the face, the body outside the face, or the scene outside the body), for :mod:`sibnet.data.synthetic`.

Each image: a textured background with muted clutter shapes, a person-like layout (a body rectangle of
clothing texture, a skin-coloured face ellipse at its top, both jittered in size and position), cues (a solid
square in a class's colour, :data:`PALETTE`, sized to its region) and distractors (thin rings in the colours of
classes the person does not have). :func:`draw_scene` returns the image and, per person, its boxes, cues and
distractors in image pixels (``x2``/``y2`` exclusive).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from sibnet.data.masking import BRANCHES

# Saturated colours, far from the muted background/clothing palette and from skin tones.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 25),  # red
    (30, 200, 40),  # green
    (30, 70, 240),  # blue
    (245, 225, 20),  # yellow
    (225, 30, 225),  # magenta
    (20, 220, 230),  # cyan
    (255, 128, 0),  # orange
)
REGIONS: tuple[str, ...] = BRANCHES  # a cue sits in the region one branch sees
SKIN: tuple[tuple[int, int, int], ...] = ((228, 190, 160), (205, 155, 115), (165, 115, 85), (115, 80, 60))

Rect = tuple[int, int, int, int]


def _overlaps(a: Rect, b: Rect, pad: int = 2) -> bool:
    return a[0] < b[2] + pad and b[0] < a[2] + pad and a[1] < b[3] + pad and b[1] < a[3] + pad


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Muted base colour + low-frequency blotches + pixel noise + a few muted clutter shapes."""
    base = rng.uniform(70, 150) + rng.uniform(-20, 20, size=3)
    low = np.asarray(
        Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize(
            (width, height), Image.BICUBIC
        ),
        dtype=np.float32,
    )
    # float32 throughout: the pixel noise is most of the drawing time.
    img = rng.standard_normal((height, width, 3), dtype=np.float32)
    img *= 8
    img += (low - 128) * 0.2 + base.astype(np.float32)
    for _ in range(int(rng.integers(3, 7))):
        colour = rng.uniform(50, 170) + rng.uniform(-25, 25, size=3)
        w, h = (int(v) for v in rng.integers(max(width // 12, 3), max(width // 4, 4), size=2))
        x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        if rng.random() < 0.5:
            img[y : y + h, x : x + w] = colour
        else:
            d = min(w, h)
            _disc(img, (x, y, x + d, y + d), colour)
    return img


def _disc(img: np.ndarray, rect: Rect, colour: Any, inner: float = 0.0) -> None:
    """Fill the disc inscribed in ``rect`` (a ring when ``inner`` > 0: the inner radius fraction is empty)."""
    x1, y1, x2, y2 = rect
    yy, xx = np.mgrid[y1:y2, x1:x2]
    cx, cy, r = (x1 + x2 - 1) / 2, (y1 + y2 - 1) / 2, (min(x2 - x1, y2 - y1)) / 2
    d = np.hypot(xx - cx, yy - cy)
    mask = (d <= r) & (d >= r * inner)
    img[y1:y2, x1:x2][mask] = colour


def _person(rng: np.random.Generator, img: np.ndarray, body: Rect, face: Rect) -> None:
    bx1, by1, bx2, by2 = body
    clothing = rng.uniform(40, 120) + rng.uniform(-20, 20, size=3)
    h, w = by2 - by1, bx2 - bx1
    stripes = np.sin(np.arange(w) / max(w, 1) * np.pi * rng.integers(1, 4))[None, :, None] * 10
    img[by1:by2, bx1:bx2] = clothing + stripes + 6 * rng.standard_normal((h, w, 3), dtype=np.float32)
    skin = np.array(SKIN[int(rng.integers(len(SKIN)))], dtype=np.float32) + rng.uniform(-10, 10, size=3)
    fx1, fy1, fx2, fy2 = face
    hair = rng.uniform(20, 70, size=3)
    img[fy1 : fy1 + max((fy2 - fy1) // 5, 1), fx1:fx2] = hair
    inset = max((fx2 - fx1) // 10, 1)
    _disc(img, (fx1 + inset, fy1 + inset, fx2 - inset, fy2), skin)
    # Ellipse-ish: widen the disc a little vertically with a second disc.
    _disc(img, (fx1 + inset, fy1 + 2 * inset, fx2 - inset, fy2), skin)


def _layout(rng: np.random.Generator, width: int, height: int, people: int) -> list[tuple[Rect, Rect]]:
    """``(body, face)`` rectangles, jittered; two people stand side by side without overlapping."""
    out: list[tuple[Rect, Rect]] = []
    slots = [(0.0, 1.0)] if people == 1 else [(0.0, 0.5), (0.5, 1.0)]
    for lo, hi in slots:
        span = (hi - lo) * width
        bw = int(width * rng.uniform(0.26, 0.36) * (0.9 if people == 2 else 1.0))
        bh = int(height * rng.uniform(0.6, 0.85))
        bx1 = int(lo * width + rng.uniform(0.02, 0.98) * max(span - bw, 1))
        bx1 = min(max(bx1, 1), width - bw - 1)
        by1 = int(height * rng.uniform(0.06, 0.3))
        by2 = min(by1 + bh, height - 1)
        fs = int(min(bw * rng.uniform(0.45, 0.6), (by2 - by1) * 0.32))
        fx1 = int(bx1 + (bw - fs) / 2 + rng.uniform(-0.1, 0.1) * bw)
        fx1 = min(max(fx1, bx1), bx1 + bw - fs)
        fy1 = int(by1 + rng.uniform(0.0, 0.05) * (by2 - by1))
        out.append(((bx1, by1, bx1 + bw, by2), (fx1, fy1, fx1 + fs, fy1 + fs)))
    return out


def _place(
    rng: np.random.Generator,
    side: int,
    area: Rect,
    avoid: Sequence[Rect],
    tries: int = 40,
) -> Rect | None:
    """A ``side`` x ``side`` square inside ``area``, overlapping none of ``avoid``; None if none found."""
    x1, y1, x2, y2 = area
    if x2 - x1 < side or y2 - y1 < side:
        return None
    for _ in range(tries):
        x = int(rng.integers(x1, x2 - side + 1))
        y = int(rng.integers(y1, y2 - side + 1))
        rect = (x, y, x + side, y + side)
        if not any(_overlaps(rect, a) for a in avoid):
            return rect
    return None


def _region_spot(
    rng: np.random.Generator,
    region: str,
    body: Rect,
    face: Rect,
    width: int,
    height: int,
    avoid: list[Rect],
    scale: float = 1.0,
) -> Rect | None:
    """A cue-sized square in a region of one person: inside the face, in the body below the face, or in the
    scene outside every body (the bodies are in ``avoid``)."""
    bx1, _by1, bx2, by2 = body
    fx1, fy1, fx2, fy2 = face
    if region == "face":
        fs = fx2 - fx1
        side = max(int(fs * rng.uniform(0.6, 0.7) * scale), 3)
        pad = max(fs // 12, 1)
        return _place(rng, side, (fx1 + pad, fy1 + pad, fx2 - pad, fy2 - pad), avoid)
    if region == "body":
        side = max(int(min((bx2 - bx1) * rng.uniform(0.45, 0.55), (by2 - fy2) * 0.7) * scale), 3)
        pad = max((bx2 - bx1) // 12, 1)
        return _place(rng, side, (bx1 + pad, fy2 + pad, bx2 - pad, by2 - pad), avoid)
    side = max(int(min(width, height) * rng.uniform(0.26, 0.32) * scale), 3)
    return _place(rng, side, (1, 1, width - 1, height - 1), avoid)


def check_regions(cue_regions: Sequence[str]) -> None:
    bad = [r for r in cue_regions if r not in REGIONS]
    if bad or not cue_regions:
        raise ValueError(f"cue regions must be drawn from {REGIONS}, got {list(cue_regions)}")


SCENE_CUE_NOTE = """Scene cues are 26-32 % of the image's short side, which after the scene branch's resize is a
far smaller share of its input than a face cue is of the face crop (60-70 % of the face). A scene-only ResNet-18
from scratch (64 px inputs, 150 scene-cue frames, 8 epochs) reached 0.73 accuracy with them (0.88 with cues 1.6×
larger, an experiment not kept); the CAM-faithfulness test therefore plants face and body cues only
(``cue_regions``), and ``make bench-cam`` reports the scene branch."""


def cue_labels(labels: Sequence[int], repeat_single: bool) -> list[int]:
    """The cues to plant for a person: one per label, or, with ``repeat_single``, a one-label person's cue twice
    (in two different regions).

    Measured (CAER-S format, SIB-Net from scratch on 2 CPU cores): with one cue per person, people whose only cue
    lies in the scene are learned far slower than the others (after 10 epochs of 420 frames, ~5 minutes, val
    accuracy 0.86; by region face 1.0, body 0.96, scene 0.55); with the cue twice, 0.92-0.99 after 2-3 epochs.
    Every region still carries cues, and multi-label people are unchanged. Tests use it to fit their budget.
    """
    labels = list(labels)
    return [*labels, *labels] if repeat_single and len(labels) == 1 else labels


def draw_scene(
    rng: np.random.Generator,
    width: int,
    height: int,
    label_sets: Sequence[Sequence[int]],
    n_classes: int,
    distractors: int,
    one_cue_per_region: bool,
    cue_regions: Sequence[str] = REGIONS,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Draw one image: background, people, cues, distractors. Returns the image and one record per person
    with ``body``, ``face``, ``cues`` (own and, for two people, the other's as scene cues), ``distractors``."""
    img = _background(rng, width, height)
    layout = _layout(rng, width, height, len(label_sets))
    for body, face in layout:
        _person(rng, img, body, face)
    bodies = [b for b, _ in layout]
    occupied: list[Rect] = []
    people: list[dict[str, Any]] = [{"body": b, "face": f, "cues": [], "distractors": []} for b, f in layout]
    two = len(layout) == 2
    for p, ((body, face), labels) in enumerate(zip(layout, label_sets)):
        # Two people: cues on face/body only (the scene of one is the other person).
        choices = [r for r in (("face", "body") if two else REGIONS) if r in cue_regions]
        regions = list(rng.choice(choices, size=len(labels), replace=False)) if one_cue_per_region else []
        for k, label in enumerate(labels):
            region = str(regions[k]) if regions else str(rng.choice(choices))
            # Scene cues avoid the bodies; face/body cues avoid each other only.
            avoid = occupied + (bodies if region == "scene" else [])
            if region == "body":
                avoid = [*avoid, face]
            rect = _region_spot(rng, region, body, face, width, height, avoid)
            if rect is None and region == "scene":  # no room outside the body: fall back to the body
                region = "body"
                rect = _region_spot(rng, region, body, face, width, height, [*occupied, face])
            if rect is None:
                raise RuntimeError("synthetic layout left no room for a cue; increase --size")
            img[rect[1] : rect[3], rect[0] : rect[2]] = PALETTE[label]
            occupied.append(rect)
            people[p]["cues"].append({"label": int(label), "region": region, "box": list(rect)})
    if two:  # each person's cues lie in the other's scene
        for p, q in ((0, 1), (1, 0)):
            people[p]["cues"] += [
                {**c, "region": "scene", "other_person": True}
                for c in people[q]["cues"]
                if not c.get("other_person")
            ]
    absent = [c for c in range(n_classes) if all(c not in labels for labels in label_sets)]
    for _ in range(distractors if absent else 0):
        colour = int(rng.choice(absent))
        for region in rng.permutation(REGIONS):
            p = int(rng.integers(len(layout)))
            body, face = layout[p]
            avoid = occupied + (bodies if region == "scene" else []) + ([face] if region == "body" else [])
            rect = _region_spot(rng, str(region), body, face, width, height, avoid, scale=1.1)
            if rect is not None:
                _disc(img, rect, PALETTE[colour], inner=0.7)
                occupied.append(rect)
                for person in people:
                    where = _region_of(rect, person["body"], person["face"])
                    person["distractors"].append({"colour_of": colour, "region": where, "box": list(rect)})
                break
    return np.clip(img, 0, 255).astype(np.uint8), people


def _region_of(rect: Rect, body: Rect, face: Rect) -> str:
    cx, cy = (rect[0] + rect[2]) / 2, (rect[1] + rect[3]) / 2
    inside = lambda r: r[0] <= cx < r[2] and r[1] <= cy < r[3]  # noqa: E731
    return "face" if inside(face) else "body" if inside(body) else "scene"
