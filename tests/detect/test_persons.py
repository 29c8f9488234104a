"""Person detection with YOLO (sibnet.detect.persons): offline plumbing, weights resolution, the wrapper."""

from __future__ import annotations

import os
import re
import shutil
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


# --- issue 12: no file a user or a folder supplies is ever unpickled ------------------------------------------


class _ExecPayload:
    """Unpickles into ``exec(code)``: the classic malicious checkpoint. Here the code writes a marker file."""

    def __init__(self, marker: Path):
        self.code = f"open({str(marker)!r}, 'w').write('code ran')"

    def __reduce__(self):
        return (exec, (self.code,))


class _ChainPayload:
    """Names only an ultralytics module: ``tasks.torch_safe_load(inner, safe_only=False)`` unpickles ``inner``."""

    def __init__(self, inner: Path):
        self.inner = str(inner)

    def __reduce__(self):
        from ultralytics.nn.tasks import torch_safe_load

        return (torch_safe_load, (self.inner, False))


def _write_payload(path: Path, marker: Path, kind: str = "exec") -> Path:
    """A ``.pt`` laid out like an Ultralytics checkpoint whose ``model`` runs code when unpickled."""
    import torch

    if kind == "exec":
        payload = _ExecPayload(marker)
    else:
        inner = _write_payload(path.with_name(f"inner-{path.name}"), marker)
        configure_ultralytics_env()
        payload = _ChainPayload(inner)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": payload, "train_args": {}, "version": "8.4.0"}, path)
    return path


@pytest.fixture(params=["exec", "chain"])
def payload(request, tmp_path):
    """(payload file, marker its code would create), after proving on a twin that the payload is live."""
    import torch

    twin_marker = tmp_path / "twin-ran"
    twin = _write_payload(tmp_path / "twin" / "evil.pt", twin_marker, request.param)
    if request.param == "exec":
        torch.load(twin, weights_only=False)  # what ultralytics does when its safe mode is off
    else:
        from ultralytics.nn.tasks import torch_safe_load

        torch_safe_load(twin, safe_only=False)
    assert twin_marker.read_text() == "code ran", (
        "the payload must really run code, or the tests prove nothing"
    )
    marker = tmp_path / "payload-ran"
    return _write_payload(tmp_path / "evil" / "evil.pt", marker, request.param), marker


def _assert_refused_cleanly(err: DetectorUnavailable, marker: Path) -> str:
    message = str(err)
    assert not marker.exists(), "code inside the weights ran"
    assert "\n" not in message and "Traceback" not in message
    return message


@pytest.mark.parametrize("how", ["flag", "env"])
def test_pickle_payload_is_refused_before_ultralytics_reads_it(payload, how, monkeypatch):
    path, marker = payload
    if how == "env":
        monkeypatch.setenv(persons.WEIGHTS_ENV, str(path))
    with pytest.raises(DetectorUnavailable) as info:
        PersonDetector(weights=str(path) if how == "flag" else None)
    message = _assert_refused_cleanly(info.value, marker)
    assert f"cannot load YOLO weights {str(path)!r}" in message
    assert re.search(r"it would build (builtins\.exec|ultralytics\.nn\.tasks\.torch_safe_load)", message)
    assert "not loaded" in message


def test_ultralytics_safe_mode_alone_refuses_the_payload(payload, monkeypatch):
    # Gate 2 on its own: with the opcode scan switched off, ultralytics' weights_only load must refuse.
    path, marker = payload
    scanned = []
    monkeypatch.setattr(persons, "_refuse_pickled_code", lambda *args: scanned.append(args))
    with pytest.raises(DetectorUnavailable) as info:
        PersonDetector(weights=path)
    assert scanned, "the scan was bypassed, so ultralytics did read the file"
    message = _assert_refused_cleanly(info.value, marker)
    assert "references types outside the supported Ultralytics checkpoint format" in message


@pytest.mark.parametrize(("weights", "offline"), [(None, True), ("yolo11n.pt", False), ("yolo11n", True)])
def test_planted_default_in_the_working_folder_is_never_loaded(
    payload, weights, offline, monkeypatch, tmp_path
):
    path, marker = payload
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    shutil.copy(path, workdir / "yolo11n.pt")
    if path.with_name(f"inner-{path.name}").exists():  # the chain payload's second file, next to it
        shutil.copy(path.with_name(f"inner-{path.name}"), workdir / f"inner-{path.name}")
    monkeypatch.chdir(workdir)
    monkeypatch.setattr(persons, "cache_dir", lambda: tmp_path / "cache")
    monkeypatch.delenv(persons.WEIGHTS_ENV, raising=False)
    for var in ("SIBNET_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    if offline:
        monkeypatch.setenv("SIBNET_OFFLINE", "1")
    else:  # downloads allowed but impossible: the cache is tried, never the working folder

        def no_network(*args, **kwargs):
            raise socket.gaierror("no network in this test")

        configure_ultralytics_env()
        monkeypatch.setattr(socket, "getaddrinfo", no_network)
    with pytest.raises(DetectorUnavailable) as info:
        PersonDetector(weights=weights)
    message = _assert_refused_cleanly(info.value, marker)
    assert "it would build" not in message  # the planted file was not even read
    if offline:
        assert "the yolo11n.pt in the working folder is not used" in message and "./yolo11n.pt" in message
    assert str(tmp_path / "cache" / "weights" / "yolo11n.pt") in message
    assert sorted(p.name for p in workdir.iterdir() if not p.name.startswith("inner-")) == ["yolo11n.pt"]


def test_missing_default_is_decided_without_importing_ultralytics(tmp_path):
    # A fresh interpreter: a planted yolo11n.pt payload in the working folder, nothing cached, downloads off.
    # The default is refused, as are a missing explicit path and an exported format, and ultralytics (2 s,
    # the PIL patch) is never imported.
    marker = tmp_path / "payload-ran"
    _write_payload(tmp_path / "yolo11n.pt", marker)
    (tmp_path / "people.onnx").write_bytes(b"onnx")
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from sibnet.detect import persons, PersonDetector, DetectorUnavailable\n"
        f"persons.cache_dir = lambda: Path({str(tmp_path / 'cache')!r})\n"
        "for weights in (None, 'yolo11n', './missing.pt', 'people.onnx', 'nested/people.pt'):\n"
        "    try:\n"
        "        PersonDetector(weights=weights)\n"
        "    except DetectorUnavailable as err:\n"
        "        print('refused:', str(err)[:60])\n"
        "    else:\n"
        "        raise SystemExit(f'{weights} was accepted')\n"
        "assert 'ultralytics' not in sys.modules, 'ultralytics was imported'\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "SIBNET_OFFLINE": "1"}
    env.pop(persons.WEIGHTS_ENV, None)
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("refused:") == 5 and run.stdout.rstrip().endswith("ok")
    assert not marker.exists()


def test_cached_default_is_used_and_a_planted_one_ignored(untrained_yolo, payload, monkeypatch, tmp_path):
    path, marker = payload
    cache = tmp_path / "cache"
    (cache / "weights").mkdir(parents=True)
    untrained_yolo.save(cache / "weights" / "yolo11n.pt")
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    shutil.copy(path, workdir / "yolo11n.pt")
    monkeypatch.chdir(workdir)
    monkeypatch.setattr(persons, "cache_dir", lambda: cache)
    monkeypatch.delenv(persons.WEIGHTS_ENV, raising=False)
    detector = PersonDetector(conf=0.0)
    assert Path(detector._model.ckpt_path) == cache / "weights" / "yolo11n.pt"
    assert len(detector.detect(_images.photo_rgb("bus"))) > 0
    assert not marker.exists()
    # ./yolo11n.pt is an explicit path: the user asked for that file, and it is refused for what it holds.
    with pytest.raises(DetectorUnavailable) as info:
        PersonDetector(weights="./yolo11n.pt")
    _assert_refused_cleanly(info.value, marker)


def _trainer_checkpoint(untrained_yolo, path: Path) -> Path:
    """A checkpoint shaped like the one ultralytics' trainer writes (EMA model, args namespace, numpy
    metrics, paths), which is what official weights and a user's ``best.pt`` are made from."""
    from copy import deepcopy

    import torch
    import ultralytics
    from ultralytics.cfg import DEFAULT_CFG_DICT
    from ultralytics.utils import IterableSimpleNamespace

    ema = deepcopy(untrained_yolo.model).half()
    ema.args = IterableSimpleNamespace(**DEFAULT_CFG_DICT)
    ckpt = {
        "epoch": 9,
        "best_fitness": np.float64(0.4),
        "model": None,
        "ema": ema,
        "updates": 90,
        "optimizer": None,
        "train_args": {**DEFAULT_CFG_DICT, "model": "yolo11n.yaml", "save_dir": Path("runs/detect/train")},
        "train_metrics": {"metrics/mAP50(B)": np.float64(0.41), "fitness": np.float64(0.4)},
        "train_results": {"epoch": [1, 2], "metrics/mAP50(B)": [0.1, 0.41]},
        "date": "2026-12-02T00:00:00",
        "version": ultralytics.__version__,
    }
    torch.save(ckpt, path)
    return path


def test_genuine_ultralytics_checkpoints_still_load_in_safe_mode(untrained_yolo, tmp_path):
    # Both gates must let through what ultralytics itself writes: model.save(), the trainer's last.pt, and
    # the stripped best.pt released weights are made of (strip_optimizer).
    from ultralytics.nn import tasks
    from ultralytics.utils.torch_utils import strip_optimizer

    saved = tmp_path / "saved.pt"
    untrained_yolo.save(saved)
    last = _trainer_checkpoint(untrained_yolo, tmp_path / "last.pt")
    best = tmp_path / "best.pt"
    strip_optimizer(last, str(best))
    rgb = _images.photo_rgb("zidane")
    for path in (saved, last, best):
        detector = PersonDetector(weights=path, conf=0.0)
        assert tasks.SAFE_LOAD is True  # loaded with weights_only=True, not by luck of the file
        assert detector._model.task == "detect" and len(detector.detect(rgb)) > 0


def test_safe_mode_and_no_autoinstall_hold_when_ultralytics_was_imported_first(tmp_path):
    # A user's script imports ultralytics itself, with safe loading off and auto-install on, before the
    # detector is built: the flags must still be enforced (gate 1 is switched off to test gate 2 alone).
    marker = tmp_path / "payload-ran"
    evil = _write_payload(tmp_path / "evil.pt", marker)
    code = (
        "import ultralytics.nn.tasks as tasks, ultralytics.utils.checks as checks\n"
        "assert tasks.SAFE_LOAD is False and checks.AUTOINSTALL is True  # the precondition\n"
        "from sibnet.detect import persons, PersonDetector, DetectorUnavailable\n"
        "persons._refuse_pickled_code = lambda *args: None\n"
        "try:\n"
        f"    PersonDetector(weights={str(evil)!r})\n"
        "except DetectorUnavailable as err:\n"
        "    print('refused:', err)\n"
        "assert tasks.SAFE_LOAD is True and checks.AUTOINSTALL is False\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "ULTRALYTICS_SAFE_LOAD": "0", "YOLO_AUTOINSTALL": "True"}
    env["YOLO_CONFIG_DIR"] = str(tmp_path / "config")
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "refused:" in run.stdout and "references types outside" in run.stdout
    assert not marker.exists()


def test_ultralytics_never_pip_installs(monkeypatch):
    # Ultralytics pip-installs a missing requirement when online and YOLO_AUTOINSTALL is on (its PIL patch
    # asks for pi-heif on any unidentified upload). Pretend to be online and record every command it runs.
    configure_ultralytics_env()
    persons._import_ultralytics()
    from ultralytics.utils import checks

    commands = []

    def record(cmd, *args, **kwargs):
        commands.append(cmd)
        return ""

    monkeypatch.setattr(checks, "ONLINE", True)
    monkeypatch.setattr(checks.subprocess, "check_output", record)
    monkeypatch.setattr(checks.subprocess, "run", record)
    assert checks.check_requirements("sibnet-no-such-package-for-tests") is False
    assert commands == []
    assert os.environ["YOLO_AUTOINSTALL"] == "False" and os.environ["ULTRALYTICS_SAFE_LOAD"] == "1"


def test_checkpoints_unlike_torch_save_are_refused(tmp_path):
    import zipfile

    deflated = tmp_path / "deflated.pt"
    with zipfile.ZipFile(deflated, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("deflated/data.pkl", b"\x80\x02}q\x00.")  # an empty dict, compressed
    folder = tmp_path / "folder.pt"
    folder.mkdir()
    for path, why in ((deflated, "unexpected archive layout"), (folder, "is a folder, not a file")):
        with pytest.raises(DetectorUnavailable, match=why):
            PersonDetector(weights=path)
    script = tmp_path / "x.torchscript"  # TorchScript is code: refused before anything reads it
    script.write_bytes(b"PK")
    with pytest.raises(DetectorUnavailable, match=r"only Ultralytics \.pt checkpoints.*'\.torchscript'"):
        PersonDetector(weights=script)
