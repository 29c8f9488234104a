"""The server's limits (demo.server, demo.uploads): body cap, uploads per client, disk cap, result files."""

from __future__ import annotations

import asyncio
import base64
import os
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from demo import server
from demo.server import OutputStore, RequestGuard, folder_size
from demo.uploads import MAX_UPLOAD_BYTES, Refusal, accept, display_stem
from tests import _images
from tests._app import running_app


def _scope(path: str, length: int | None, client: str = "10.0.0.1", forwarded: str | None = None) -> dict:
    headers = [] if length is None else [(b"content-length", str(length).encode())]
    if forwarded:
        headers.append((b"x-forwarded-for", forwarded.encode()))
    return {"type": "http", "method": "POST", "path": path, "headers": headers, "client": (client, 5000)}


def _run(guard: RequestGuard, scope: dict, body: bytes = b"") -> tuple[int, bool]:
    """(status sent, whether the wrapped app was reached)."""
    reached: list[bool] = []
    sent: list[dict] = []

    async def app(scope, receive, send):
        reached.append(True)
        while True:
            message = await receive()
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    guard.app = app
    asyncio.run(guard(scope, receive, send))
    return sent[0]["status"], bool(reached)


def test_bodies_over_the_cap_never_reach_gradio():
    guard = RequestGuard(None, max_body=1000)
    assert _run(guard, _scope("/gradio_api/queue/join", 2000)) == (413, False)
    assert _run(guard, _scope("/gradio_api/queue/join", 500), b"x" * 500) == (200, True)
    with pytest.raises(ValueError, match="over the limit"):  # no or a lying content-length: cut while reading
        _run(guard, _scope("/gradio_api/queue/join", None), b"x" * 2000)


def test_uploads_per_client_are_counted_over_a_window():
    clock = [0.0]
    guard = RequestGuard(None, now=lambda: clock[0], uploads_per_window=3, upload_bytes_per_window=10_000)
    up = "/gradio_api/upload"
    assert [_run(guard, _scope(up, 100))[0] for _ in range(3)] == [200, 200, 200]
    assert _run(guard, _scope(up, 100)) == (429, False)
    assert _run(guard, _scope(up, 100, client="10.0.0.2"))[0] == 200  # another client has its own budget
    assert _run(guard, _scope(up, 100, forwarded="203.0.113.9, 10.0.0.1"))[0] == 200  # behind a proxy
    assert _run(guard, _scope(up, 20_000, client="10.0.0.3")) == (429, False)  # bytes count too
    clock[0] += server.WINDOW_S + 1
    assert _run(guard, _scope(up, 100))[0] == 200  # the window moved on
    assert _run(guard, _scope("/gradio_api/queue/join", 100))[0] == 200  # other routes are not uploads


def test_uploads_are_refused_while_the_disk_is_full():
    usage = [0]
    guard = RequestGuard(None, disk_usage=lambda: usage[0], disk_cap=1000)
    assert _run(guard, _scope("/gradio_api/upload", 10))[0] == 200
    usage[0] = 2000
    assert _run(guard, _scope("/gradio_api/upload", 10)) == (507, False)


def test_result_files_go_by_age_and_by_size(tmp_path: Path):
    store = OutputStore(tmp_path, max_age_s=100, cap_bytes=2500)
    folders = [store.new_folder() for _ in range(4)]
    for i, folder in enumerate(folders):
        (folder / "figure.png").write_bytes(b"x" * 1000)
        os.utime(folder, (1000 + i, 1000 + i))
    store.prune(now=1050, force=True)  # none too old; 4000 bytes over a 2500 cap: the two oldest go
    assert [f.exists() for f in folders] == [False, False, True, True]
    store.prune(now=1200, force=True)  # all older than 100 s now
    assert not any(f.exists() for f in folders)


def test_inline_and_remote_photos(tmp_path: Path):
    jpeg = _images.photo_path("grace_hopper").read_bytes()
    path = accept({"url": "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()}, tmp_path)
    assert isinstance(path, str) and Path(path).read_bytes() == jpeg and Path(path).parent == tmp_path
    too_big = "data:image/png;base64," + "A" * (MAX_UPLOAD_BYTES * 4 // 3 + 8)
    refused = accept({"url": too_big}, tmp_path)
    assert isinstance(refused, Refusal) and "limit is 20 MB" in refused.message
    assert isinstance(accept({"url": "data:image/png,notbase64"}, tmp_path), Refusal)
    assert isinstance(accept({"url": "data:image/png;base64,@@@@"}, tmp_path), Refusal)
    assert "does not fetch" in accept({"path": "https://example.com/x.jpg"}, tmp_path).message
    assert "does not fetch" in accept({"url": "https://example.com/x.jpg"}, tmp_path).message
    assert accept(None, tmp_path) is None
    big = tmp_path / "big.jpg"
    with big.open("wb") as f:
        f.truncate(MAX_UPLOAD_BYTES + 1)
    assert "limit is 20 MB" in accept({"path": str(big)}, tmp_path).message
    assert display_stem("/tmp/x/Bus photo (2).JPG") == "Bus_photo_2" and display_stem(path) == "photo"


def test_a_burst_of_uploads_cannot_fill_the_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, analyzer):
    uploads = tmp_path / "gradio"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(uploads))
    cap = 3 * 2**20
    with running_app(analyzer, uploads_per_window=1000, disk_cap=cap) as (url, _):
        statuses = []
        for _ in range(10):  # ten 1 MB files, as fast as one client can send them
            body, boundary = _multipart(os.urandom(2**20))
            request = urllib.request.Request(
                url + "gradio_api/upload", data=body,
                headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            )  # fmt: skip
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    statuses.append(response.status)
            except urllib.error.HTTPError as err:
                statuses.append(err.code)
        assert 200 in statuses and statuses[-1] == 507, statuses
        # The check comes before each upload, so the folder ends at most one upload over the cap.
        assert folder_size(uploads) <= cap + 2**20 + 64 * 1024, folder_size(uploads)
    with running_app(analyzer, uploads_per_window=3) as (url, _):
        codes = []
        for _ in range(5):
            body, boundary = _multipart(b"tiny")
            request = urllib.request.Request(
                url + "gradio_api/upload", data=body,
                headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            )  # fmt: skip
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    codes.append(response.status)
            except urllib.error.HTTPError as err:
                codes.append(err.code)
                assert "Too many uploads" in err.read().decode()
        assert codes == [200, 200, 200, 429, 429]


def _multipart(data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="x.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, boundary
