"""Pair detected faces with detected bodies into people: SIB-Net's unit of analysis (paper §3.1, Eq. 3).

Each person needs a face box and a body box (the body branch sees the body with the face zeroed, the
scene branch the photo with the body zeroed). MTCNN and YOLO run independently, so their boxes must be
matched. A face belongs to a body when most of the face lies inside it (``containment`` of the face in
the body at least :data:`MIN_FACE_IN_BODY`); among several such bodies, the one containing it best wins,
with small preferences for a face near the body's top and near its horizontal centre (a child in front
of an adult is fully inside both boxes, but at the top of only one; two people side by side each have
their face centred in their own box). Matching is solved as one assignment over all faces and bodies
(``scipy.optimize.linear_sum_assignment``, maximising the summed scores), so one greedy choice cannot
steal the only body another face fits.

What is left unmatched is completed with the proportions of ``sibnet.boxes``: a body without a face gets
a face estimated at its top, a face without a body gets an estimated body, and both are flagged, so the
demo can say so and never presents an estimate as a detection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from sibnet.boxes import (
    Box,
    containment,
    estimate_body_from_face,
    estimate_face_from_body,
    is_empty,
    normalize_box,
)
from sibnet.detect.faces import FaceDetection
from sibnet.detect.persons import PersonDetection

# At least half the face's area must lie inside the body box. Person boxes are tight around what is
# visible and faces from MTCNN often stick out at the hair line or a turned cheek, so requiring full
# containment would drop real pairs; below a half the face is more outside than inside.
MIN_FACE_IN_BODY = 0.5
# Tie-break weights subtracted from the containment score (which is in [0.5, 1] for a valid pair): the
# face centre's vertical position in the body (0 at the top edge, 1 at the bottom) and its horizontal
# distance from the body's centre line (0 centred, 1 at a side edge). Together at most 0.2, they decide
# between bodies that contain the face about equally and cannot make a face that is mostly outside a body
# beat one that is inside.
TOP_WEIGHT = 0.1
CENTRE_WEIGHT = 0.1


@dataclass(frozen=True)
class Person:
    """One person: a face box and a body box, each detected or estimated.

    Attributes:
        id: 0-based index, people ordered left to right.
        face_box: ``(x1, y1, x2, y2)`` of the face.
        body_box: ``(x1, y1, x2, y2)`` of the body.
        face_source: ``"mtcnn"`` or ``"estimated"`` (from the body box).
        body_source: ``"yolo"`` or ``"estimated"`` (from the face box).
        face_prob: MTCNN's probability; None when estimated.
        body_score: YOLO's confidence; None when estimated.
        landmarks: MTCNN's ``(5, 2)`` facial landmarks; None when the face is estimated.
    """

    id: int
    face_box: Box
    body_box: Box
    face_source: str
    body_source: str
    face_prob: float | None = None
    body_score: float | None = None
    landmarks: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def face_estimated(self) -> bool:
        return self.face_source == "estimated"

    @property
    def body_estimated(self) -> bool:
        return self.body_source == "estimated"


def match_score(face: Box, body: Box) -> float:
    """How well a face fits a body: containment minus the tie-breaks; 0.0 when it does not fit at all."""
    inside = containment(face, body)
    if inside < MIN_FACE_IN_BODY:
        return 0.0
    fx1, fy1, fx2, fy2 = normalize_box(face)
    bx1, by1, bx2, by2 = normalize_box(body)
    body_w, body_h = max(bx2 - bx1, 1e-9), max(by2 - by1, 1e-9)
    depth = min(max(((fy1 + fy2) / 2 - by1) / body_h, 0.0), 1.0)
    off_centre = min(abs((fx1 + fx2) / 2 - (bx1 + bx2) / 2) / (body_w / 2), 1.0)
    return inside - TOP_WEIGHT * depth - CENTRE_WEIGHT * off_centre


def pair_people(
    faces: Sequence[FaceDetection], persons: Sequence[PersonDetection], width: int, height: int
) -> list[Person]:
    """Match faces to bodies one-to-one and complete the unmatched ones with estimated boxes.

    Args:
        faces: MTCNN detections, in pixels of the image.
        persons: YOLO detections in the same image (empty when no person detector is available: every body
            is then estimated).
        width: the image's width in pixels (estimated boxes are clipped to it).
        height: the image's height in pixels.

    Returns:
        One ``Person`` per matched pair, unmatched face and unmatched body, ordered left to right by the
        body box's centre (then the face box's), with ids 0, 1, ... in that order. A body so small that its
        estimated face would be under a pixel is dropped: there is nothing in it to analyse.
    """
    scores = np.zeros((len(faces), len(persons)))
    for i, face in enumerate(faces):
        for j, person in enumerate(persons):
            scores[i, j] = match_score(face.box, person.box)
    pairs: list[tuple[int, int]] = []
    if scores.size:
        rows, cols = linear_sum_assignment(scores, maximize=True)
        # The solver pairs min(faces, bodies) rows and columns; a zero score means "does not fit".
        pairs = [(int(i), int(j)) for i, j in zip(rows, cols) if scores[i, j] > 0]

    people: list[dict] = []
    for i, j in pairs:
        people.append(_from_face(faces[i], body=persons[j]))
    matched_faces = {i for i, _ in pairs}
    matched_bodies = {j for _, j in pairs}
    for i, face in enumerate(faces):
        if i not in matched_faces:
            body = estimate_body_from_face(face.box, width, height)
            people.append(_from_face(face, body=None, estimated_body=body))
    for j, person in enumerate(persons):
        if j not in matched_bodies:
            face_box = estimate_face_from_body(person.box, width, height)
            if is_empty(face_box):
                continue
            people.append(
                dict(
                    face_box=face_box,
                    body_box=person.box,
                    face_source="estimated",
                    body_source="yolo",
                    body_score=person.score,
                )
            )

    def centre_x(box: Box) -> float:
        return (box[0] + box[2]) / 2

    people.sort(key=lambda p: (centre_x(p["body_box"]), centre_x(p["face_box"])))
    return [Person(id=k, **p) for k, p in enumerate(people)]


def _from_face(
    face: FaceDetection, *, body: PersonDetection | None, estimated_body: Box | None = None
) -> dict:
    return dict(
        face_box=face.box,
        body_box=body.box if body is not None else estimated_body,
        face_source="mtcnn",
        body_source="yolo" if body is not None else "estimated",
        face_prob=face.prob,
        body_score=body.score if body is not None else None,
        landmarks=face.landmarks,
    )
