"""Person detection with YOLO (sibnet.detect.persons): offline plumbing, weights resolution, the wrapper."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sibnet.detect import (
    DetectorUnavailable,
    PersonDetection,
    PersonDetector,
    configure_ultralytics_env,
    persons,
)
from tests import _images
from tests.detect._stubs import StubYOLO

REPO = Path(__file__).resolve().parents[2]


def assert_float_box_inside(box, width: int, height: int) -> None:
    assert len(box) == 4 and all(type(v) is float for v in box)
    x1, y1, x2, y2 = box
    assert 0.0 <= x1 < x2 <= width and 0.0 <= y1 < y2 <= height


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
