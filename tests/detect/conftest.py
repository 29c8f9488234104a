"""The detection tests share one MTCNN."""

from __future__ import annotations

import pytest

from sibnet.detect import FaceDetector


@pytest.fixture(scope="module")
def face_detector() -> FaceDetector:
    return FaceDetector()
