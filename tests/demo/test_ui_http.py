"""The web app over real HTTP: launched in the test process, driven with gradio_client."""

from __future__ import annotations

import concurrent.futures
import importlib
import os
import sys
import types

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

import app as app_module
from demo import ui
from tests import _images
from tests._app import running_app

TOP = ui.TOP_TARGET


@pytest.fixture(scope="module")
def served(analyzer):
    with running_app(analyzer) as (url, analyzer):
        yield Client(url, verbose=False), analyzer


def _call(client: Client, path, method="gradcam", target=TOP, person=0):
    return client.predict(handle_file(str(path)), method, target, person, api_name="/analyze")


def test_analyze_endpoint_returns_three_models_and_a_png(served):
    client, _ = served
    data, figure = _call(client, _images.photo_path("grace_hopper"))
    assert data["trained"] is False and any("untrained weights" in n for n in data["notices"])
    assert len(data["people"]) == 1
    assert set(data["people"][0]["models"]) == {"concat", "attention", "sibnet"}
    for model in data["people"][0]["models"].values():
        assert len(model["scores"]) == 26 and len(model["top"]) == 5
    with Image.open(figure) as img:
        assert img.format == "PNG"
        assert img.width == 1200 and 850 <= img.height <= 1000


def test_api_options_target_person_and_method(served):
    client, _ = served
    data, figure = _call(client, _images.photo_path("zidane"), "layercam", "Anger", 1)
    assert data["method"] == "layercam" and data["selected_person"] == 1
    assert [p["target"] for p in data["people"]] == ["Anger", "Anger"]
    assert figure is not None


def test_bad_files_return_messages_and_the_server_keeps_serving(served, tmp_path):
    client, _ = served
    cases = {
        "notes.txt": (b"definitely not a photo", "text file"),
        "broken.jpg": (_images.truncated_jpeg(), "truncated"),
        "empty.png": (b"", "empty"),
        "bomb.png": (_images.png_header(100_000, 100_000), "too large"),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(Exception, match=message) as err:
            _call(client, path)
        assert "Traceback" not in str(err.value)
    with pytest.raises(Exception, match="Joy is not in the list of choices"):
        _call(client, _images.photo_path("grace_hopper"), target="Joy")
    data, _ = _call(client, _images.photo_path("astronaut"))
    assert len(data["people"]) == 1


def test_concurrent_clients_get_what_a_serial_run_gets(served):
    client, _ = served
    url = client.src
    jobs = [
        ("grace_hopper", "gradcam"),
        ("zidane", "gradcam++"),
        ("astronaut", "layercam"),
        ("grace_hopper", "eigencam"),
    ]
    serial = [_call(client, _images.photo_path(name), method) for name, method in jobs]

    def one(job):
        name, method = job
        return _call(Client(url, verbose=False), _images.photo_path(name), method)

    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        parallel = list(pool.map(one, jobs))
    for (s_json, s_fig), (p_json, p_fig) in zip(serial, parallel):
        assert [p["models"] for p in s_json["people"]] == [p["models"] for p in p_json["people"]]
        assert np.array_equal(np.asarray(Image.open(s_fig)), np.asarray(Image.open(p_fig)))


def test_launch_settings_are_safe():
    kwargs = ui.launch_kwargs("127.0.0.1", 7860, share=False)
    assert kwargs["ssr_mode"] is False
    assert kwargs["max_file_size"] == ui.MAX_FILE_SIZE
    assert "allowed_paths" not in kwargs
    assert ui.QUEUE_MAX_SIZE > 0


def test_app_flags_and_environment(monkeypatch):
    monkeypatch.setenv("SIBNET_PORT", "9001")
    monkeypatch.setenv("SIBNET_SHARE", "1")
    monkeypatch.setenv("SIBNET_HOST", "0.0.0.0")
    args = app_module.build_parser().parse_args(["--device", "cpu", "--weights", "/w"])
    assert (args.port, args.share, args.host, args.device, args.weights) == (
        9001,
        True,
        "0.0.0.0",
        "cpu",
        "/w",
    )
    args = app_module.build_parser().parse_args(["--port", "7000"])
    assert args.port == 7000


def test_zerogpu_decorator_is_a_no_op_without_spaces_and_wraps_with_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "spaces", None)  # import fails: not on a Space
    fn = lambda x: x  # noqa: E731
    assert ui.gpu(fn) is fn
    calls = []
    fake = types.ModuleType("spaces")

    def GPU(duration):
        def wrap(f):
            calls.append(duration)
            return lambda *a, **k: ("gpu", f(*a, **k))

        return wrap

    fake.GPU = GPU
    monkeypatch.setitem(sys.modules, "spaces", fake)
    wrapped = ui.gpu(fn)
    assert wrapped(3) == ("gpu", 3) and calls == [ui.GPU_DURATION_S]


def test_ui_module_is_the_only_gradio_importer():
    import pathlib

    root = pathlib.Path(ui.__file__).resolve().parent.parent
    offenders = []
    for path in [*root.glob("sibnet/**/*.py"), *root.glob("demo/*.py")]:
        if path.name == "ui.py":
            continue
        text = path.read_text()
        if "import gradio" in text or "from gradio" in text:
            offenders.append(str(path))
    assert offenders == []
    assert importlib.util.find_spec("gradio") is not None


def test_request_files_older_than_the_limit_are_pruned(monkeypatch, tmp_path):
    monkeypatch.setattr(ui, "OUTPUT_DIR", tmp_path)
    monkeypatch.setattr(ui, "_pruned_at", 0.0)
    now = 1_000_000.0
    old, fresh, other = (
        tmp_path / "sibnet-old-figure5.png",
        tmp_path / "sibnet-new.json",
        tmp_path / "keep.txt",
    )
    for path, age in ((old, ui.OUTPUT_MAX_AGE_S + 5), (fresh, 10), (other, ui.OUTPUT_MAX_AGE_S + 5)):
        path.write_text("x")
        os.utime(path, (now - age, now - age))
    ui._prune_outputs(now)
    assert not old.exists() and fresh.exists() and other.exists()  # only this app's expired files go
    old.write_text("x")
    os.utime(old, (now - ui.OUTPUT_MAX_AGE_S - 5,) * 2)
    ui._prune_outputs(now + 30)  # within a minute of the last sweep: no directory scan
    assert old.exists()
    ui._prune_outputs(now + 61)
    assert not old.exists()
