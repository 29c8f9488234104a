"""Every way a photo reaches the web app goes through the same limits, before anything decodes it.

A photo arrives as an upload (Gradio's ``/upload`` route writes it to its cache and hands the app a path), as
a ``data:`` URL inside the API payload (``{"url": "data:image/jpeg;base64,…"}``: Gradio would decode it
itself, skipping the upload size cap and with Pillow's own 179-megapixel limit), as a web address (Gradio would
fetch it: refused, the server fetches nothing on a visitor's behalf), or as an example from ``assets/``.
:func:`accept` turns any of them into a local file path that is within :data:`MAX_UPLOAD_BYTES`, or a
:class:`Refusal` with one plain sentence; :func:`sibnet.io.load_image` then applies the format allow-list and
the pixel limit from the file header, as for every other caller. Nothing here imports gradio.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_UPLOAD_MB = 20  # also Gradio's max_file_size for the upload route (demo/ui.py)
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+/-]*)(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,", re.I)


@dataclass(frozen=True)
class Refusal:
    """A photo the app will not read, and why, in one plain sentence for the visitor."""

    message: str


def accept(payload: Any, dest: Path) -> str | Refusal | None:
    """The local path of the photo in ``payload`` (a Gradio FileData-like object or dict), checked for size.

    Args:
        payload: what the Image component received; None when no photo was given.
        dest: a folder to write a decoded ``data:`` URL into.

    Returns:
        A path, a :class:`Refusal`, or None (no photo).
    """
    if payload is None:
        return None
    url = _get(payload, "url")
    path = _get(payload, "path")
    if isinstance(url, str) and url[:5].lower() == "data:":
        return _from_data_url(url, dest)
    if isinstance(path, str) and path:
        if re.match(r"^[a-z][a-z0-9+.-]*://", path, re.I):
            return Refusal("Photos must be uploaded as files; the app does not fetch web addresses.")
        return check_size(Path(path))
    if isinstance(url, str) and url:
        return Refusal("Photos must be uploaded as files; the app does not fetch web addresses.")
    return Refusal("No photo was received; upload a photo file.")


def check_size(path: Path) -> str | Refusal:
    """``path`` as a string when the file is within the size cap, else a :class:`Refusal`."""
    try:
        size = path.stat().st_size
    except OSError:
        return Refusal("The uploaded photo could not be found on the server; upload it again.")
    if size > MAX_UPLOAD_BYTES:
        return Refusal(f"The photo is {size / 2**20:.0f} MB; the limit is {MAX_UPLOAD_MB} MB.")
    return str(path)


def _from_data_url(url: str, dest: Path) -> str | Refusal:
    match = _DATA_URL.match(url[:200])
    if match is None or not match.group("b64"):
        return Refusal("The photo could not be read: inline photos must be base64-encoded data URLs.")
    payload = url[match.end() :]
    # The decoded size is known from the encoded length, before decoding anything.
    decoded = len(payload) * 3 // 4
    if decoded > MAX_UPLOAD_BYTES:
        return Refusal(f"The photo is {decoded / 2**20:.0f} MB; the limit is {MAX_UPLOAD_MB} MB.")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return Refusal("The photo could not be read: its inline data is not valid base64.")
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"inline-{uuid.uuid4().hex[:12]}"  # no suffix: the decoder decides what it is
    path.write_bytes(data)
    return str(path)


def _get(payload: Any, name: str) -> Any:
    return payload.get(name) if isinstance(payload, dict) else getattr(payload, name, None)


def display_stem(path: str | None, fallback: str = "photo") -> str:
    """A safe file-name stem for downloads, from the photo's own name (``bus.jpg`` → ``bus``)."""
    if not path:
        return fallback
    stem = Path(path).stem
    if stem.startswith("inline-"):
        return fallback
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_")[:40]
    return stem or fallback
