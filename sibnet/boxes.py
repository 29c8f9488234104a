"""Box geometry shared by the masking (paper Eq. 3), the detectors and the pairing of faces with bodies.

Boxes are ``(x1, y1, x2, y2)`` tuples of floats in pixel coordinates of the image they belong to, with
``x2``/``y2`` exclusive (a box ``(0, 0, W, H)`` is the whole image).

When a detector misses a face or a body, the missing box is *estimated* from the other one with the fixed
proportions below. They follow the usual artist's canon (a standing adult is about 7-8 heads tall, the
shoulders about 3 heads wide) and are deliberately simple: an estimated box is always flagged as such,
never presented as a detection.
"""

from __future__ import annotations

from collections.abc import Sequence

Box = tuple[float, float, float, float]

# Body estimated from a face of width w and height h, centred on the face horizontally:
BODY_WIDTH_PER_FACE_WIDTH = 3.5  # shoulders plus arms at rest
BODY_TOP_ABOVE_FACE = 0.25  # x face height: hair above the detected face box
BODY_HEIGHT_PER_FACE_HEIGHT = 7.0  # x face height below the face's top edge: head-to-knees or more
# Face estimated from a body box of width bw and height bh: a square of side
# min(FACE_SIDE_PER_BODY_WIDTH * bw, FACE_SIDE_PER_BODY_HEIGHT * bh), centred horizontally,
# FACE_TOP_OFFSET * bh below the body's top edge.
FACE_SIDE_PER_BODY_WIDTH = 0.4
FACE_SIDE_PER_BODY_HEIGHT = 0.25
FACE_TOP_OFFSET = 0.02


def as_box(values: Sequence[float]) -> Box:
    """Cast four numbers (list, tuple, numpy array of any dtype) to a ``Box`` of Python floats.

    Raises:
        ValueError: not exactly four finite numbers.
    """
    try:
        x1, y1, x2, y2 = (float(v) for v in values)
    except (TypeError, ValueError) as err:
        raise ValueError(f"a box is four numbers (x1, y1, x2, y2), got {values!r}") from err
    if any(v != v or v in (float("inf"), float("-inf")) for v in (x1, y1, x2, y2)):
        raise ValueError(f"a box must be finite, got {values!r}")
    return (x1, y1, x2, y2)


def normalize_box(box: Sequence[float]) -> Box:
    """Return the box with corners ordered (``x1 <= x2``, ``y1 <= y2``); swapped corners are fixed."""
    x1, y1, x2, y2 = as_box(box)
    return (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))


def clip_box(box: Sequence[float], width: float, height: float) -> Box:
    """Normalise the corners and clip the box to an image of ``width`` x ``height`` pixels."""
    x1, y1, x2, y2 = normalize_box(box)
    return (
        min(max(x1, 0.0), float(width)),
        min(max(y1, 0.0), float(height)),
        min(max(x2, 0.0), float(width)),
        min(max(y2, 0.0), float(height)),
    )


def box_area(box: Sequence[float]) -> float:
    x1, y1, x2, y2 = normalize_box(box)
    return (x2 - x1) * (y2 - y1)


def is_empty(box: Sequence[float] | None, min_side: float = 1.0) -> bool:
    """True for ``None`` or a box with a side shorter than ``min_side`` pixels."""
    if box is None:
        return True
    x1, y1, x2, y2 = normalize_box(box)
    return (x2 - x1) < min_side or (y2 - y1) < min_side


def intersection_area(a: Sequence[float], b: Sequence[float]) -> float:
    ax1, ay1, ax2, ay2 = normalize_box(a)
    bx1, by1, bx2, by2 = normalize_box(b)
    w = min(ax2, bx2) - max(ax1, bx1)
    h = min(ay2, by2) - max(ay1, by1)
    return max(w, 0.0) * max(h, 0.0)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union; 0 when both are empty."""
    inter = intersection_area(a, b)
    union = box_area(a) + box_area(b) - inter
    return inter / union if union > 0 else 0.0


def containment(inner: Sequence[float], outer: Sequence[float]) -> float:
    """Fraction of ``inner``'s area that lies inside ``outer`` (1.0 = fully inside)."""
    area = box_area(inner)
    return intersection_area(inner, outer) / area if area > 0 else 0.0


def scale_box(box: Sequence[float], sx: float, sy: float | None = None) -> Box:
    """Multiply coordinates by ``sx`` (x) and ``sy`` (y, defaults to ``sx``): moves a box between image sizes."""
    sy = sx if sy is None else sy
    x1, y1, x2, y2 = as_box(box)
    return (x1 * sx, y1 * sy, x2 * sx, y2 * sy)


def estimate_body_from_face(face: Sequence[float], width: float, height: float) -> Box:
    """Body box estimated from a face box with the module's documented proportions, clipped to the image."""
    x1, y1, x2, y2 = normalize_box(face)
    fw, fh = x2 - x1, y2 - y1
    cx = (x1 + x2) / 2
    half = BODY_WIDTH_PER_FACE_WIDTH * fw / 2
    body = (cx - half, y1 - BODY_TOP_ABOVE_FACE * fh, cx + half, y1 + BODY_HEIGHT_PER_FACE_HEIGHT * fh)
    return clip_box(body, width, height)


def estimate_face_from_body(body: Sequence[float], width: float, height: float) -> Box:
    """Face box estimated from the top of a body box with the documented proportions, clipped to the image."""
    x1, y1, x2, y2 = normalize_box(body)
    bw, bh = x2 - x1, y2 - y1
    side = min(FACE_SIDE_PER_BODY_WIDTH * bw, FACE_SIDE_PER_BODY_HEIGHT * bh)
    cx = (x1 + x2) / 2
    top = y1 + FACE_TOP_OFFSET * bh
    return clip_box((cx - side / 2, top, cx + side / 2, top + side), width, height)
