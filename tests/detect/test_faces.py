"""Face detection with MTCNN (sibnet.detect.faces) on real photos, offline; the package stays cheap to import."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from sibnet.boxes import containment
from sibnet.detect import (
    FACE_MIN_PROB,
    FaceDetection,
    FaceDetector,
)
from tests import _images

REPO = Path(__file__).resolve().parents[2]


def assert_float_box_inside(box, width: int, height: int) -> None:
    assert len(box) == 4 and all(type(v) is float for v in box)
    x1, y1, x2, y2 = box
    assert 0.0 <= x1 < x2 <= width and 0.0 <= y1 < y2 <= height


def test_importing_the_package_builds_and_imports_nothing_heavy():
    code = (
        "import sys, sibnet.detect\n"
        "heavy = [m for m in ('facenet_pytorch', 'ultralytics', 'gradio') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)


@pytest.mark.parametrize(
    ("name", "expected_box"),
    [("grace_hopper", (174, 120, 356, 340)), ("astronaut", (181, 62, 268, 172))],
)
def test_one_face_on_portraits(face_detector, name, expected_box):
    rgb = _images.photo_rgb(name)
    height, width = rgb.shape[:2]
    faces = face_detector.detect(rgb)
    assert len(faces) == 1
    face = faces[0]
    assert isinstance(face, FaceDetection)
    assert face.prob > 0.99
    assert_float_box_inside(face.box, width, height)
    side = face.box[2] - face.box[0]
    assert 0.1 * width < side < 0.6 * width  # a portrait's face, not a speck or the whole frame
    assert np.allclose(face.box, expected_box, atol=8)
    assert face.landmarks.shape == (5, 2) and face.landmarks.dtype == np.float32
    # Eyes above the mouth, inside the face box.
    assert face.landmarks[0, 1] < face.landmarks[3, 1]
    assert containment((*face.landmarks.min(0), *face.landmarks.max(0)), face.box) == 1.0


@pytest.mark.parametrize("name", ["bus", "zidane"])
def test_several_faces_on_group_photos(face_detector, name):
    rgb = _images.photo_rgb(name)
    faces = face_detector.detect(rgb)
    assert len(faces) >= _images.EXPECTED_FACES[name]
    for face in faces:
        assert face.prob >= FACE_MIN_PROB
        assert_float_box_inside(face.box, rgb.shape[1], rgb.shape[0])
    assert [f.prob for f in faces] == sorted((f.prob for f in faces), reverse=True)


def test_threshold_is_respected_and_boxes_are_clipped():
    # zidane.jpg has two false candidates at 0.76-0.78; one of them sticks out above the top edge.
    rgb = _images.photo_rgb("zidane")
    loose = FaceDetector(min_prob=0.5).detect(rgb)
    strict = FaceDetector(min_prob=0.999).detect(rgb)
    assert len(loose) > _images.EXPECTED_FACES["zidane"] > len(strict) >= 1
    assert any(f.prob < FACE_MIN_PROB for f in loose)
    assert all(f.prob >= 0.999 for f in strict)
    for face in loose:
        assert_float_box_inside(face.box, rgb.shape[1], rgb.shape[0])
    assert min(f.box[1] for f in loose) == 0.0  # the candidate at y = -13.6 was clipped


def test_no_face_and_tiny_images(face_detector):
    assert face_detector.detect(np.full((64, 80, 3), 127, np.uint8)) == []
    assert face_detector.detect(np.zeros((16, 16, 3), np.uint8)) == []  # below MTCNN's smallest face


def test_face_detector_rejects_non_rgb(face_detector):
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        face_detector.detect(np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        face_detector.detect(np.zeros((64, 64, 3), np.float32))


def test_face_detector_is_thread_safe(face_detector):
    rgb = _images.photo_rgb("astronaut")
    expected = face_detector.detect(rgb)
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(face_detector.detect(rgb))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [expected] * 3


def face(box, prob=0.99) -> FaceDetection:
    return FaceDetection(box=tuple(float(v) for v in box), prob=prob, landmarks=np.zeros((5, 2), np.float32))
