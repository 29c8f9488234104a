"""Server-side limits of the web app: request bodies, uploads per client, and the disk the app may fill.

An ASGI middleware (:class:`RequestGuard`, passed to Gradio's FastAPI app through ``launch(app_kwargs=...)``)
runs before Gradio parses anything:

- every request body is capped at :data:`MAX_BODY_BYTES` (a 20 MB photo as a base64 ``data:`` URL inside the
  JSON payload is ~27 MB), so no payload can make the server buffer more;
- uploads (``POST …/upload``) are counted per client address (the first ``X-Forwarded-For`` address behind a
  proxy such as Spaces', else the peer) over a sliding window: at most :data:`UPLOADS_PER_WINDOW` files and
  :data:`UPLOAD_BYTES_PER_WINDOW` bytes per :data:`WINDOW_S` seconds; beyond that a client gets 429 with a
  plain sentence;
- uploads are refused (507) while the app's files on disk exceed :data:`DISK_CAP_BYTES` after pruning.

:class:`OutputStore` keeps what a request writes (figures, JSON, decoded inline photos) in one folder inside
Gradio's cache (so Gradio serves the files without copying them: each result is stored once), removes files
older than :data:`OUTPUT_MAX_AGE_S`, and the oldest first while the folder is over its size cap. Nothing here
imports gradio.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

MAX_BODY_BYTES = 32 * 1024 * 1024
WINDOW_S = 60.0
UPLOADS_PER_WINDOW = 30
UPLOAD_BYTES_PER_WINDOW = 120 * 1024 * 1024
DISK_CAP_BYTES = 512 * 1024 * 1024  # uploads and results together
OUTPUT_MAX_AGE_S = 900  # a result's files live 15 minutes (the page shows them; downloads happen at once)
OUTPUT_CAP_BYTES = 256 * 1024 * 1024


def folder_size(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file():
                total += path.stat().st_size
        except OSError:
            continue
    return total


class OutputStore:
    """Files written for requests, under ``root``: one subfolder per request, pruned by age and size."""

    def __init__(self, root: Path, max_age_s: float = OUTPUT_MAX_AGE_S, cap_bytes: int = OUTPUT_CAP_BYTES):
        self.root = Path(root)
        self.max_age_s = max_age_s
        self.cap_bytes = cap_bytes
        self._lock = threading.Lock()
        self._pruned_at = 0.0

    def new_folder(self) -> Path:
        self.prune()
        folder = self.root / uuid.uuid4().hex[:16]
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def prune(self, now: float | None = None, force: bool = False) -> None:
        """Remove request folders older than ``max_age_s``, then the oldest while over ``cap_bytes`` (at most
        every 10 s unless ``force``)."""
        now = time.time() if now is None else now
        with self._lock:
            if not force and now - self._pruned_at < 10:
                return
            self._pruned_at = now
            if not self.root.is_dir():
                return
            folders = []
            for folder in self.root.iterdir():
                try:
                    mtime = folder.stat().st_mtime
                except OSError:
                    continue
                if now - mtime > self.max_age_s:
                    _remove(folder)
                else:
                    folders.append((mtime, folder))
            total = sum(folder_size(f) for _, f in folders)
            for _, folder in sorted(folders):
                if total <= self.cap_bytes:
                    break
                size = folder_size(folder)
                _remove(folder)
                total -= size


def _remove(path: Path) -> None:
    try:
        if path.is_dir():
            for child in sorted(path.rglob("*"), reverse=True):
                child.rmdir() if child.is_dir() else child.unlink()
            path.rmdir()
        else:
            path.unlink()
    except OSError:  # removed meanwhile, or still open on a platform that refuses: try again next sweep
        pass


class RequestGuard:
    """ASGI middleware: body cap on every request, per-client upload budget, disk cap for uploads.

    The limits default to the module's constants; tests pass others.
    """

    def __init__(
        self,
        app: Any,
        disk_root: Path | None = None,
        disk_usage: Callable[[], int] | None = None,
        now: Callable[[], float] = time.monotonic,
        max_body: int = MAX_BODY_BYTES,
        uploads_per_window: int = UPLOADS_PER_WINDOW,
        upload_bytes_per_window: int = UPLOAD_BYTES_PER_WINDOW,
        disk_cap: int = DISK_CAP_BYTES,
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.uploads_per_window = uploads_per_window
        self.upload_bytes_per_window = upload_bytes_per_window
        self.disk_cap = disk_cap
        self.disk_usage = disk_usage or ((lambda: folder_size(disk_root)) if disk_root else (lambda: 0))
        self.now = now
        self._uploads: dict[str, deque[tuple[float, int]]] = {}
        self._lock = threading.Lock()

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length is not None and length > self.max_body:
            await _refuse(send, 413, f"The request is too large; the limit is {self.max_body // 2**20} MB.")
            return
        if scope.get("path", "").rstrip("/").endswith("/upload"):
            problem = self._upload_problem(_client(scope), length or 0)
            if problem is not None:
                await _drain(
                    receive, self.max_body
                )  # read (and drop) the body, so the client gets the answer
                await _refuse(send, *problem)
                return
        await self.app(scope, _capped(receive, self.max_body), send)

    def _upload_problem(self, client: str, length: int) -> tuple[int, str] | None:
        now = self.now()
        with self._lock:
            recent = self._uploads.setdefault(client, deque())
            while recent and now - recent[0][0] > WINDOW_S:
                recent.popleft()
            files, sent = len(recent), sum(n for _, n in recent)
            if files >= self.uploads_per_window or sent + length > self.upload_bytes_per_window:
                return 429, "Too many uploads from this address; wait a minute and try again."
            recent.append((now, length))
            if len(self._uploads) > 10_000:  # forget idle clients
                for key in [k for k, q in self._uploads.items() if not q]:
                    del self._uploads[key]
        if self.disk_usage() > self.disk_cap:
            return 507, "The server is busy (its storage is full); try again in a few minutes."
        return None


def _content_length(scope: dict) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _client(scope: dict) -> str:
    for name, value in scope.get("headers", []):
        if name == b"x-forwarded-for":
            return value.decode("latin-1").split(",")[0].strip() or "unknown"
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _capped(receive: Callable, limit: int) -> Callable:
    """A receive() that stops a body (sent without, or lying about, its length) at ``limit`` bytes."""
    seen = 0

    async def wrapped() -> dict:
        nonlocal seen
        message = await receive()
        if message.get("type") == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise ValueError("request body over the limit")
        return message

    return wrapped


async def _drain(receive: Callable, limit: int) -> None:
    seen = 0
    while seen <= limit:
        message = await receive()
        if message.get("type") != "http.request":
            return
        seen += len(message.get("body", b""))
        if not message.get("more_body"):
            return


async def _refuse(send: Callable, status: int, message: str) -> None:
    body = json.dumps({"error": message, "detail": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
