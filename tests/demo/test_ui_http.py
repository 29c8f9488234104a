"""The web app over real HTTP: launched in the test process, driven with gradio_client."""

from __future__ import annotations

import base64
import concurrent.futures
import importlib
import json
import sys
import tempfile
import time
import types
import urllib.error
import urllib.request
from pathlib import Path

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
    for person in data["people"]:  # the branch contributions come with the API's result, to its target
        for model in person["models"].values():
            a = model["attribution"]
            assert a["target"] == "Anger" and set(a["values"]) == {"face", "body", "scene"}
            assert sum(a["values"].values()) == pytest.approx(a["score_all"] - a["score_none"], abs=1e-4)
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
    with pytest.raises(Exception, match="Unknown target emotion “Joy”"):
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
    """The web layer (demo/ui.py: the layout, demo/handlers.py: its callbacks) is the only one with gradio."""
    import pathlib

    root = pathlib.Path(ui.__file__).resolve().parent.parent
    offenders = []
    for path in [*root.glob("sibnet/**/*.py"), *root.glob("demo/*.py")]:
        if path.name in ("ui.py", "handlers.py"):
            continue
        text = path.read_text()
        if "import gradio" in text or "from gradio" in text:
            offenders.append(str(path))
    assert offenders == []
    assert importlib.util.find_spec("gradio") is not None


# --- hostile input over HTTP (issue: hostile input runs no code and cannot exhaust the server) ---


def _raw_call(url: str, payload: dict, params: list) -> tuple[int, str]:
    """POST /gradio_api/call/analyze with a hand-made payload, then read the event stream's result."""
    body = json.dumps({"data": [payload, *params]}).encode()
    request = urllib.request.Request(
        url + "gradio_api/call/analyze", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            event_id = json.loads(response.read())["event_id"]
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")
    except (urllib.error.URLError, ConnectionError):  # refused before the body was read: the server hung up
        return 0, "connection closed by the server"
    with urllib.request.urlopen(url + f"gradio_api/call/analyze/{event_id}", timeout=120) as response:
        return 200, response.read().decode(errors="replace")


def _data_url(data: bytes, mime: str = "image/jpeg") -> dict:
    return {
        "url": f"data:{mime};base64," + base64.b64encode(data).decode(),
        "meta": {"_type": "gradio.FileData"},
    }


def test_inline_data_urls_go_through_the_same_limits(served):
    client, _ = served
    url = client.src if client.src.endswith("/") else client.src + "/"
    params = ["gradcam", TOP, 0]
    # a real photo inline works
    status, text = _raw_call(url, _data_url(_images.photo_path("grace_hopper").read_bytes()), params)
    assert status == 200 and "event: complete" in text and "untrained" in text
    # 22 MB of inline data: refused before decoding, by size
    status, text = _raw_call(url, _data_url(b"\xff\xd8" + b"0" * (22 * 2**20)), params)
    assert ("limit is 20 MB" in text) or status == 413, (status, text[:300])
    # a 60 MB payload never reaches Gradio's JSON parser
    big = {"url": "data:image/jpeg;base64," + "A" * (60 * 2**20), "meta": {"_type": "gradio.FileData"}}
    status, text = _raw_call(url, big, params)
    assert status in (0, 413), (status, text[:300])  # 413, or the connection closed mid-upload
    assert _raw_call(url, _data_url(_images.photo_path("astronaut").read_bytes()), params)[0] == 200
    # a format outside the allow-list (TGA), inline
    tga = _images.encode(Image.new("RGB", (64, 64), (200, 10, 10)), "TGA")
    status, text = _raw_call(url, _data_url(tga, "image/x-tga"), params)
    assert "event: error" in text and "Accepted formats" in text
    # an 81-megapixel PNG in 0.1 MB: refused from its header by the app's pixel limit, not decoded
    started = time.perf_counter()
    status, text = _raw_call(url, _data_url(_images.png_header(9000, 9000), "image/png"), params)
    assert "event: error" in text and "megapixels" in text
    assert time.perf_counter() - started < 10
    # a web address is never fetched
    remote = {"path": "https://photos.example.com/a.jpg", "url": "https://photos.example.com/a.jpg",
              "meta": {"_type": "gradio.FileData"}}  # fmt: skip
    status, text = _raw_call(url, remote, params)
    assert "event: error" in text and "does not fetch web addresses" in text
    assert "Traceback" not in text and "/tmp" not in text


@pytest.mark.parametrize(
    ("method", "target", "person", "message"),
    [
        (None, TOP, 0, "Unknown CAM method"),
        (7, TOP, 0, "Unknown CAM method"),
        ("magic", TOP, 0, "Unknown CAM method"),
        ("gradcam", "x" * 100_000, 0, "Unknown target emotion"),
        ("gradcam", 3.5, 0, "Unknown target emotion"),
        ("gradcam", TOP, 5, "no person 6"),
        ("gradcam", TOP, -1, "no person 0"),
        ("gradcam", TOP, 0.5, "whole number"),
        ("gradcam", TOP, "two", "whole number"),
        ("gradcam", TOP, "nan", "whole number"),
        ("gradcam", TOP, "1e999", "whole number"),
    ],
)
def test_every_api_parameter_is_validated(served, method, target, person, message):
    client, _ = served
    url = client.src if client.src.endswith("/") else client.src + "/"
    payload = _data_url(_images.photo_path("grace_hopper").read_bytes())
    status, text = _raw_call(url, payload, [method, target, person])
    assert "event: error" in text or status >= 400, text[:300]
    if status == 200:
        assert message in text, text[:300]
        assert len(text) < 600  # user input quoted truncated, never echoed whole
        assert "Traceback" not in text and "AttributeError" not in text and "Internal error" not in text


def test_no_photo_is_one_sentence(served):
    client, _ = served
    with pytest.raises(Exception, match="Upload a photo first"):
        client.predict(None, "gradcam", TOP, 0, api_name="/analyze")


def test_a_crowd_photo_is_bounded(served):
    client, _ = served
    crowd = _images.crowd(12)
    path = Path(tempfile.mkdtemp()) / "crowd.jpg"
    path.write_bytes(_images.encode(Image.fromarray(crowd), "JPEG", quality=92))
    started = time.perf_counter()
    data, _ = _call(client, path)
    seconds = time.perf_counter() - started
    assert len(data["people"]) == ui.MAX_PEOPLE
    assert any("not analysed" in n and f"at most {ui.MAX_PEOPLE}" in n for n in data["notices"])
    assert [p["number"] for p in data["people"]] == list(range(1, ui.MAX_PEOPLE + 1))
    print(f"crowd of 12 faces: {seconds:.2f} s in the slot")  # the closing note reports it
