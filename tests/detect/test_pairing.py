"""Pairing faces with bodies into people (sibnet.detect.pairing), and detect_people end to end."""

from __future__ import annotations

import numpy as np
import pytest

from sibnet.boxes import containment, estimate_body_from_face, estimate_face_from_body
from sibnet.detect import (
    FACE_MIN_PROB,
    MIN_FACE_IN_BODY,
    FaceDetection,
    Person,
    PersonDetection,
    PersonDetector,
    detect_people,
    pair_people,
)
from tests import _images
from tests.detect._stubs import StubYOLO


def assert_float_box_inside(box, width: int, height: int) -> None:
    assert len(box) == 4 and all(type(v) is float for v in box)
    x1, y1, x2, y2 = box
    assert 0.0 <= x1 < x2 <= width and 0.0 <= y1 < y2 <= height


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
