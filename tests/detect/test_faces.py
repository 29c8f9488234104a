"""Face detection with MTCNN (sibnet.detect.faces) on real photos, offline; the package stays cheap to import."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from sibnet.boxes import containment, iou
from sibnet.detect import (
    FACE_MIN_PROB,
    MIN_FACE_SIZE,
    FaceDetection,
    FaceDetector,
)
from sibnet.detect.faces import MIN_FACE_FRACTION, search_min_face
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


# The faces facenet-pytorch's MTCNN finds with its fixed 20 px minimum (min_face_fraction=0 here), in pixels.
FACES_20PX = {
    "grace_hopper": [(174, 120, 356, 340)],
    "astronaut": [(181, 62, 268, 172)],
    "bus": [(118, 423, 152, 468), (272, 428, 305, 470)],
    "zidane": [(909, 97, 1048, 285), (559, 262, 670, 430)],
}


@pytest.mark.parametrize(
    ("name", "expected_box"),
    [("grace_hopper", (171, 110, 355, 342)), ("astronaut", (179, 61, 267, 173))],
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


@pytest.mark.parametrize("name", list(FACES_20PX))
def test_the_fitted_pyramid_finds_the_same_faces(face_detector, name):
    """The default search (smallest face 1/16 of the short side) finds the faces of the 20 px search: as many,
    each the same face (IoU >= 0.8; the pyramid moves MTCNN's boxes by a few pixels)."""
    rgb = _images.photo_rgb(name)
    height, width = rgb.shape[:2]
    assert face_detector.search_size(width, height) == max(MIN_FACE_SIZE, round(min(width, height) / 16))
    faces = face_detector.detect(rgb)
    assert len(faces) == len(FACES_20PX[name]) == _images.EXPECTED_FACES[name]
    for expected in FACES_20PX[name]:
        assert max(iou(f.box, expected) for f in faces) >= 0.8, (expected, [f.box for f in faces])


@pytest.mark.parametrize("name", list(FACES_20PX))
def test_the_cascade_is_facenet_pytorchs(name):
    """With the same minimum face size, the detector's own cascade (integral-image resampling, channels-last
    networks) gives facenet-pytorch's boxes, probabilities and landmarks, candidates below 0.90 included."""
    from facenet_pytorch import MTCNN

    rgb = _images.photo_rgb(name)
    for size in (20, 43):
        library = MTCNN(keep_all=True, post_process=False, select_largest=False, min_face_size=size)
        boxes, probs, points = library.detect(np.array(rgb), landmarks=True)
        ours = FaceDetector(min_prob=0.0, min_face_size=size, min_face_fraction=0).detect(rgb)
        assert len(ours) == len(boxes) >= _images.EXPECTED_FACES[name]
        order = np.argsort(-np.asarray(probs, float), kind="stable")
        height, width = rgb.shape[:2]
        for face, k in zip(ours, order):
            clipped = np.clip(np.asarray(boxes[k], float), 0, [width, height, width, height])
            np.testing.assert_allclose(face.box, clipped, atol=1e-3)
            assert face.prob == pytest.approx(float(probs[k]), abs=1e-5)
            np.testing.assert_allclose(face.landmarks, np.asarray(points[k], np.float32), atol=1e-3)
        if size == 20:  # the table above is this search's result
            kept = [f.box for f in ours if f.prob >= FACE_MIN_PROB]
            assert len(kept) == len(FACES_20PX[name])
            for expected in FACES_20PX[name]:
                assert min(np.abs(np.subtract(box, expected)).max() for box in kept) <= 1.0


def test_search_size_rule_and_bad_settings():
    assert search_min_face(512, 600) == 32  # a portrait
    assert search_min_face(1280, 720) == 45
    assert search_min_face(1280, 1280) == 80  # the demo's analysis limit
    assert search_min_face(300, 200) == MIN_FACE_SIZE  # small images: MTCNN's own minimum
    assert search_min_face(1280, 720, fraction=0) == MIN_FACE_SIZE
    assert FaceDetector(min_face_fraction=0).search_size(1280, 720) == MIN_FACE_SIZE
    assert pytest.approx(1 / 16) == MIN_FACE_FRACTION
    with pytest.raises(ValueError, match="min_face_size"):
        FaceDetector(min_face_size=8)
    with pytest.raises(ValueError, match="min_face_fraction"):
        FaceDetector(min_face_fraction=1.5)


def test_threshold_is_respected_and_boxes_are_clipped():
    # zidane.jpg has two false candidates at 0.76-0.78 in the 20 px search; one sticks out above the top edge.
    rgb = _images.photo_rgb("zidane")
    loose = FaceDetector(min_prob=0.5, min_face_fraction=0).detect(rgb)
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
