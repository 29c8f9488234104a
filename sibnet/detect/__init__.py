"""Detection of the people SIB-Net analyses: faces (MTCNN), bodies (YOLO) and their pairing (paper §4.2).

Importing this package is cheap: facenet-pytorch and ultralytics are imported, and their models built, only
when a :class:`FaceDetector` or :class:`PersonDetector` is constructed (once, in a pipeline object).
"""

from __future__ import annotations

import numpy as np

from sibnet.detect.faces import FACE_MIN_PROB, MIN_FACE_SIZE, FaceDetection, FaceDetector
from sibnet.detect.pairing import MIN_FACE_IN_BODY, Person, match_score, pair_people
from sibnet.detect.persons import (
    DEFAULT_WEIGHTS,
    PERSON_MIN_CONF,
    PERSON_NMS_IOU,
    WEIGHTS_ENV,
    DetectorUnavailable,
    PersonDetection,
    PersonDetector,
    configure_ultralytics_env,
)

__all__ = [
    "DEFAULT_WEIGHTS",
    "FACE_MIN_PROB",
    "MIN_FACE_IN_BODY",
    "MIN_FACE_SIZE",
    "PERSON_MIN_CONF",
    "PERSON_NMS_IOU",
    "WEIGHTS_ENV",
    "DetectorUnavailable",
    "FaceDetection",
    "FaceDetector",
    "Person",
    "PersonDetection",
    "PersonDetector",
    "configure_ultralytics_env",
    "detect_people",
    "match_score",
    "pair_people",
]


def detect_people(rgb: np.ndarray, faces: FaceDetector, persons: PersonDetector | None) -> list[Person]:
    """Detect faces and bodies in one image and pair them into people.

    Args:
        rgb: ``H x W x 3`` uint8 RGB image.
        faces: the face detector.
        persons: the person detector, or None when none is available (every body is then estimated from
            its face and flagged as such).

    Returns:
        The people, left to right, with ids in that order (see :func:`pair_people`).
    """
    height, width = rgb.shape[:2]
    face_detections = faces.detect(rgb)
    bodies = persons.detect(rgb) if persons is not None else []
    return pair_people(face_detections, bodies, width, height)
