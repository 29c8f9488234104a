"""Tests for sibnet.detect: MTCNN faces on real photos, the YOLO wrapper's plumbing, and face-body pairing.

No YOLO weights can be downloaded here, so the person detector is exercised with an untrained model built
from ``yolo11n.yaml`` (real ultralytics code, meaningless boxes) and with a stub model whose output is known.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from sibnet.boxes import containment, estimate_body_from_face, estimate_face_from_body
from sibnet.detect import (
    FACE_MIN_PROB,
    MIN_FACE_IN_BODY,
    DetectorUnavailable,
    FaceDetection,
    FaceDetector,
    Person,
    PersonDetection,
    PersonDetector,
    configure_ultralytics_env,
    detect_people,
    pair_people,
    persons,
)
from tests import _images

REPO = Path(__file__).resolve().parents[1]


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


# ---- faces -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def face_detector() -> FaceDetector:
    return FaceDetector()


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


# ---- persons ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def untrained_yolo():
    configure_ultralytics_env()
    from ultralytics import YOLO

    return YOLO("yolo11n.yaml")


def test_ultralytics_is_configured_to_stay_local_and_quiet(tmp_path):
    # A fresh interpreter with no YOLO_* variables and a throw-away home: ultralytics must keep its
    # settings in the project cache, report itself offline, and write nothing into the home folder.
    env = {k: v for k, v in os.environ.items() if not k.startswith("YOLO_")}
    env["HOME"] = str(tmp_path)
    env.pop("XDG_CONFIG_HOME", None)
    code = (
        "from sibnet.detect.persons import cache_dir, configure_ultralytics_env\n"
        "configure_ultralytics_env()\n"
        "import ultralytics.utils as u\n"
        "assert u.SETTINGS_FILE.is_relative_to(cache_dir()), u.SETTINGS_FILE\n"
        "assert u.ONLINE is False and u.AUTOINSTALL is False\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=env, timeout=120)
    assert list(tmp_path.iterdir()) == []


def test_untrained_yolo_plumbing(untrained_yolo):
    rgb = _images.photo_rgb("bus")
    height, width = rgb.shape[:2]
    detector = PersonDetector(untrained_yolo, conf=0.0)
    people = detector.detect(rgb)
    assert len(people) > 10  # an untrained model scores every anchor about equally
    for person in people:
        assert isinstance(person, PersonDetection)
        assert_float_box_inside(person.box, width, height)
        assert type(person.score) is float and person.score >= 0.0
    assert [p.score for p in people] == sorted((p.score for p in people), reverse=True)
    # Its scores are tiny, so the real threshold leaves nothing.
    assert PersonDetector(untrained_yolo).detect(rgb) == []


def test_untrained_yolo_checkpoint_through_the_env_var(untrained_yolo, tmp_path, monkeypatch):
    path = tmp_path / "untrained.pt"
    untrained_yolo.save(path)
    monkeypatch.setenv(persons.WEIGHTS_ENV, str(path))
    detector = PersonDetector(conf=0.0)
    assert detector.weights == str(path)
    assert len(detector.detect(_images.photo_rgb("zidane"))) > 0
    # An explicit argument wins over the variable.
    with pytest.raises(DetectorUnavailable, match=r"other\.pt"):
        PersonDetector(weights=tmp_path / "other.pt")


def test_env_var_names_missing_weights(monkeypatch, tmp_path):
    missing = tmp_path / "custom" / "people.pt"
    monkeypatch.setenv(persons.WEIGHTS_ENV, str(missing))
    with pytest.raises(DetectorUnavailable) as info:
        PersonDetector()
    message = str(info.value)
    assert "no such file" in message and str(missing) in message
    assert persons.WEIGHTS_ENV in message


def test_default_weights_offline_fail_fast_with_advice(monkeypatch, tmp_path):
    configure_ultralytics_env()  # before cache_dir is redirected, so the session's settings stay put

    def no_network(*args, **kwargs):
        raise socket.gaierror("no network in this test")

    # Offline even where the machine has network: DNS fails at once, as it does here.
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(persons, "cache_dir", lambda: tmp_path / "cache")
    monkeypatch.delenv(persons.WEIGHTS_ENV, raising=False)
    for var in ("SIBNET_OFFLINE", "HF_HUB_OFFLINE"):  # let it try: the download itself must fail fast
        monkeypatch.delenv(var, raising=False)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    start = time.perf_counter()
    with pytest.raises(DetectorUnavailable) as info:
        PersonDetector()
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert persons.DEFAULT_WEIGHTS in message
    assert "ConnectionError" in message
    assert persons.WEIGHTS_ENV in message and "PersonDetector(weights=" in message
    assert str(tmp_path / "cache" / "weights" / "yolo11n.pt") in message
    assert persons.WEIGHTS_URL in message
    assert list(workdir.iterdir()) == []  # nothing downloaded (or half-downloaded) into the working dir
    assert not any((tmp_path / "cache").rglob("*.pt"))


def test_offline_flag_refuses_before_any_download(monkeypatch, tmp_path):
    from ultralytics.utils import downloads

    def forbidden(*args, **kwargs):
        raise AssertionError("no download may be attempted when SIBNET_OFFLINE=1")

    monkeypatch.setattr(downloads, "safe_download", forbidden)
    monkeypatch.setattr(downloads, "attempt_download_asset", forbidden)
    monkeypatch.setattr(persons, "cache_dir", lambda: tmp_path / "cache")
    monkeypatch.delenv(persons.WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("SIBNET_OFFLINE", "1")
    with pytest.raises(DetectorUnavailable, match=r"downloads are off \(SIBNET_OFFLINE=1\)") as info:
        PersonDetector()
    assert persons.WEIGHTS_ENV in str(info.value)


def test_unreadable_weights_file(tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(DetectorUnavailable, match=r"cannot load YOLO weights .*broken\.pt"):
        PersonDetector(weights=broken)


def test_architecture_files_are_refused():
    with pytest.raises(DetectorUnavailable, match="untrained"):
        PersonDetector(weights="yolo11n.yaml")


def test_unknown_bare_name_is_refused_without_network(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DetectorUnavailable, match=r"no such file 'my-people\.pt'"):
        PersonDetector(weights="my-people.pt")


class StubYOLO:
    """Stands in for ``ultralytics.YOLO``: returns fixed boxes and records how it was called."""

    task = "detect"

    def __init__(self, xyxy, conf, cls, names=None):
        self.names = names if names is not None else {0: "person", 1: "bicycle", 2: "car"}
        self._boxes = SimpleNamespace(
            xyxy=np.asarray(xyxy, np.float32), conf=np.asarray(conf, np.float32), cls=np.asarray(cls)
        )
        self.calls: list = []

    def predict(self, source, **kwargs):
        self.calls.append((source, kwargs))
        return [SimpleNamespace(boxes=self._boxes)]


def test_wrapper_filters_class_and_confidence_and_clips():
    stub = StubYOLO(
        xyxy=[[-20, 10, 50, 120], [10, 10, 60, 60], [30, 5, 90, 130], [5, 5, 40, 40], [50, 50, 50.5, 90]],
        conf=[0.9, 0.95, 0.7, 0.3, 0.8],
        cls=[0, 2, 0, 0, 0],
    )
    rgb = np.zeros((100, 80, 3), np.uint8)
    rgb[..., 0] = 255  # red
    people = PersonDetector(stub).detect(rgb)
    # car dropped, 0.3 under the threshold dropped, the sliver (0.5 px wide) dropped; sorted by score.
    assert [p.score for p in people] == pytest.approx([0.9, 0.7])
    assert people[0].box == (0.0, 10.0, 50.0, 100.0)
    assert people[1].box == (30.0, 5.0, 80.0, 100.0)
    for person in people:
        assert_float_box_inside(person.box, 80, 100)
    source, kwargs = stub.calls[0]
    assert kwargs["classes"] == [0] and kwargs["conf"] == persons.PERSON_MIN_CONF
    assert kwargs["verbose"] is False
    assert (source[..., 2] == 255).all() and (source[..., 0] == 0).all()  # ultralytics wants BGR
    assert source.flags.c_contiguous


def test_wrapper_finds_the_person_class_by_name():
    stub = StubYOLO([[0, 0, 10, 20], [0, 0, 30, 30]], [0.9, 0.9], [0, 3], names={0: "dog", 3: "person"})
    detector = PersonDetector(stub)
    assert detector.person_class == 3
    assert [p.box for p in detector.detect(np.zeros((40, 40, 3), np.uint8))] == [(0.0, 0.0, 30.0, 30.0)]


def test_wrapper_refuses_non_detection_models():
    stub = StubYOLO([], [], [])
    stub.task = "classify"
    with pytest.raises(DetectorUnavailable, match="'classify' model, not a box detector"):
        PersonDetector(stub)
    with pytest.raises(TypeError, match="ultralytics model"):
        PersonDetector(object())


# ---- pairing ---------------------------------------------------------------------------------------------


def face(box, prob=0.99) -> FaceDetection:
    return FaceDetection(box=tuple(float(v) for v in box), prob=prob, landmarks=np.zeros((5, 2), np.float32))


def body(box, score=0.9) -> PersonDetection:
    return PersonDetection(box=tuple(float(v) for v in box), score=score)


W, H = 640, 480


def by_face(people: list[Person]) -> dict:
    return {p.face_box: p for p in people}


def test_two_faces_two_bodies_listed_crosswise():
    faces = [face((100, 20, 140, 60)), face((400, 30, 440, 70))]
    bodies = [body((370, 10, 470, 400), 0.8), body((70, 5, 170, 420), 0.7)]
    people = pair_people(faces, bodies, W, H)
    assert [p.id for p in people] == [0, 1]
    left, right = people
    assert left.face_box == faces[0].box and left.body_box == bodies[1].box and left.body_score == 0.7
    assert right.face_box == faces[1].box and right.body_box == bodies[0].box and right.body_score == 0.8
    for person in people:
        assert person.face_source == "mtcnn" and person.body_source == "yolo"
        assert not person.face_estimated and not person.body_estimated
        assert person.face_prob == 0.99 and person.landmarks is not None


def test_assignment_beats_greedy():
    # Face A fits both bodies (body 1 slightly better); face B fits only body 1. Greedy would give body 1
    # to A and leave B without a body; the assignment gives each face a body.
    body1, body2 = body((0, 0, 200, 400)), body((90, 0, 300, 400))
    face_a, face_b = face((100, 20, 140, 60)), face((20, 20, 60, 60))
    people = by_face(pair_people([face_a, face_b], [body1, body2], W, H))
    assert people[face_a.box].body_box == body2.box
    assert people[face_b.box].body_box == body1.box
    assert len(people) == 2


def test_face_without_body_gets_an_estimated_body():
    lone = face((500, 100, 540, 150))
    bodies = [body((50, 50, 150, 400))]
    people = pair_people([lone], bodies, W, H)
    assert len(people) == 2
    estimated = by_face(people)[lone.box]
    assert estimated.body_estimated and estimated.body_source == "estimated"
    assert estimated.body_score is None and estimated.face_prob == 0.99
    assert estimated.body_box == estimate_body_from_face(lone.box, W, H)
    assert containment(lone.box, estimated.body_box) == 1.0


def test_body_without_face_gets_an_estimated_face():
    people = pair_people([], [body((200, 100, 300, 450), 0.6)], W, H)
    (person,) = people
    assert person.face_estimated and person.face_source == "estimated"
    assert person.face_prob is None and person.landmarks is None
    assert person.body_source == "yolo" and person.body_score == 0.6
    assert person.face_box == estimate_face_from_body((200, 100, 300, 450), W, H)


def test_face_goes_to_the_body_that_contains_it_best():
    target = face((100, 20, 140, 60))
    full, partial = body((80, 0, 200, 400)), body((116, 0, 260, 400))  # contains all / 60 % of the face
    assert containment(target.box, partial.box) == pytest.approx(0.6)
    people = pair_people([target], [partial, full], W, H)
    paired = by_face(people)[target.box]
    assert paired.body_box == full.box
    others = [p for p in people if p is not paired]
    assert len(others) == 1 and others[0].body_box == partial.box and others[0].face_estimated


def test_face_near_the_top_of_a_body_wins_a_tie():
    # A child in front of an adult: the child's face is inside both boxes, centred in both, but at the
    # top of only the child's.
    adult, child = body((0, 0, 200, 400)), body((60, 200, 140, 400))
    child_face = face((85, 210, 115, 240))
    people = pair_people([child_face], [adult, child], W, H)
    assert by_face(people)[child_face.box].body_box == child.box


def test_too_little_containment_is_no_match():
    half_out = face((100, 20, 140, 60))
    edge = body((125, 0, 300, 400))  # holds 37.5 % of the face
    assert containment(half_out.box, edge.box) < MIN_FACE_IN_BODY
    people = pair_people([half_out], [edge], W, H)
    assert len(people) == 2
    assert by_face(people)[half_out.box].body_estimated


def test_people_are_ordered_left_to_right_with_ids():
    faces = [face((500, 20, 540, 60)), face((20, 20, 60, 60)), face((300, 20, 340, 60))]
    bodies = [body((280, 0, 360, 400)), body((150, 0, 250, 400))]  # the second has no face
    people = pair_people(faces, bodies, W, H)
    assert [p.id for p in people] == [0, 1, 2, 3]
    centres = [(p.body_box[0] + p.body_box[2]) / 2 for p in people]
    assert centres == sorted(centres)
    assert [p.face_source for p in people] == ["mtcnn", "estimated", "mtcnn", "mtcnn"]
    assert [p.body_source for p in people] == ["estimated", "yolo", "yolo", "estimated"]


def test_no_detections_no_people():
    assert pair_people([], [], W, H) == []


def test_person_is_frozen_and_compares_without_landmarks():
    (person,) = pair_people([face((10, 10, 50, 50))], [], W, H)
    with pytest.raises(AttributeError):
        person.id = 3
    assert person == pair_people([face((10, 10, 50, 50))], [], W, H)[0]


# ---- end to end ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", _images.PHOTOS)
def test_detect_people_without_a_person_detector(face_detector, name):
    rgb = _images.photo_rgb(name)
    people = detect_people(rgb, face_detector, None)
    assert len(people) == _images.EXPECTED_FACES[name]
    assert [p.id for p in people] == list(range(len(people)))
    for person in people:
        assert person.body_estimated and person.body_score is None
        assert person.face_source == "mtcnn" and person.face_prob >= FACE_MIN_PROB
        assert person.landmarks.shape == (5, 2)
        assert_float_box_inside(person.face_box, rgb.shape[1], rgb.shape[0])
        assert_float_box_inside(person.body_box, rgb.shape[1], rgb.shape[0])
        assert containment(person.face_box, person.body_box) == 1.0


def test_detect_people_with_a_person_detector(face_detector):
    rgb = _images.photo_rgb("grace_hopper")
    stub = StubYOLO([[60, 80, 500, 600], [0, 300, 30, 600]], [0.92, 0.6], [0, 0])
    people = detect_people(rgb, face_detector, PersonDetector(stub))
    assert len(people) == 2
    edge, grace = people  # the sliver at the left edge sorts first
    assert edge.face_estimated and edge.body_box == (0.0, 300.0, 30.0, 600.0)
    assert grace.face_source == "mtcnn" and grace.body_source == "yolo"
    assert grace.body_score == pytest.approx(0.92)
