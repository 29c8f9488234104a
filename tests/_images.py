"""Test images: real photos that ship with installed packages, and builders for odd and broken inputs.

The real photos work offline: matplotlib's ``grace_hopper.jpg`` and scikit-image's ``astronaut`` (one face
each, public domain), and ultralytics' ``bus.jpg`` and ``zidane.jpg`` (several people each). Their files are
located without importing ultralytics, because ultralytics reads its configuration environment
(``YOLO_CONFIG_DIR``, ``YOLO_OFFLINE``) once, at its first import, and ``sibnet.detect.persons`` sets those
first.

The builders return encoded files as ``bytes``; write them with ``path.write_bytes`` where a file is needed.
"""

from __future__ import annotations

import importlib.util
import io
import struct
import zlib
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

# Faces MTCNN finds with probability >= 0.90 (sibnet.detect.faces.FACE_MIN_PROB), measured with
# facenet-pytorch 2.5.3. bus.jpg shows four people but two face away or are cut off; zidane.jpg has two
# clear faces plus two false candidates that score 0.76-0.78.
EXPECTED_FACES = {"grace_hopper": 1, "astronaut": 1, "bus": 2, "zidane": 2}


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {name} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def photo_path(name: str) -> Path:
    """Path of a real photo: ``"grace_hopper"``, ``"astronaut"``, ``"bus"`` or ``"zidane"``."""
    if name == "grace_hopper":
        return _package_dir("matplotlib") / "mpl-data" / "sample_data" / "grace_hopper.jpg"
    if name == "astronaut":
        return _package_dir("skimage") / "data" / "astronaut.png"
    if name in ("bus", "zidane"):
        return _package_dir("ultralytics") / "assets" / f"{name}.jpg"
    raise KeyError(f"unknown photo {name!r}; known: {sorted(EXPECTED_FACES)}")


@cache
def _photo(name: str) -> np.ndarray:
    with Image.open(photo_path(name)) as img:
        rgb = np.asarray(img.convert("RGB"))
    rgb.setflags(write=False)  # shared between tests through the cache
    return rgb


def photo_rgb(name: str) -> np.ndarray:
    """A real photo as an ``H x W x 3`` uint8 RGB array (read-only: copy before changing it)."""
    return _photo(name)


PHOTOS = tuple(EXPECTED_FACES)


# ---- builders for encoded files ------------------------------------------------------------------------


def encode(img: Image.Image, fmt: str, **params) -> bytes:
    """Encode a PIL image to bytes in ``fmt``."""
    buffer = io.BytesIO()
    img.save(buffer, fmt, **params)
    return buffer.getvalue()


def gradient_rgb(width: int = 96, height: int = 64) -> np.ndarray:
    """An RGB test card: red grows left to right, green top to bottom, blue constant."""
    x = np.linspace(0, 255, width, dtype=np.float64)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.float64)[:, None].repeat(width, 1)
    return np.stack([x, y, np.full_like(x, 128)], axis=2).round().astype(np.uint8)


def jpeg_with_orientation(rgb: np.ndarray, orientation: int) -> bytes:
    """A JPEG whose EXIF Orientation tag (0x0112) is ``orientation`` (6: rotate 90° clockwise to view)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(Image.fromarray(rgb), "JPEG", exif=exif, quality=95)


def png16_gradient(width: int = 256, height: int = 40) -> bytes:
    """A 16-bit grayscale PNG whose columns run from 0 to 65535."""
    row = np.linspace(0, 65535, width).round().astype(np.uint16)
    return encode(Image.fromarray(np.repeat(row[None, :], height, axis=0)), "PNG")


def animated_gif(frames: int = 3, size: tuple[int, int] = (48, 40)) -> bytes:
    """An animated GIF whose frame k is a flat grey of value 60 * (k + 1); frame 0 is (60, 60, 60)."""
    images = [Image.new("RGB", size, (60 * (k + 1),) * 3) for k in range(frames)]
    return encode(images[0], "GIF", save_all=True, append_images=images[1:], duration=100, loop=0)


def truncated_jpeg() -> bytes:
    """A real JPEG cut in half."""
    data = encode(Image.fromarray(gradient_rgb(256, 192)), "JPEG", quality=95)
    return data[: len(data) // 2]


def png_header(width: int, height: int) -> bytes:
    """A PNG of signature, IHDR (8-bit RGB, ``width`` x ``height``) and IEND only: the header, no pixels."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def minimal_pdf() -> bytes:
    """A tiny but well-formed one-page PDF."""
    return (
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
        b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
        b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 100 100]>>endobj\n"
        b"trailer<</Root 1 0 R>>\n%%EOF\n"
    )


def svg_image() -> bytes:
    """A small SVG drawing."""
    return (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
        b'<circle cx="32" cy="32" r="20" fill="red"/></svg>\n'
    )


def corrupt_bytes() -> bytes:
    """Binary noise that is not any image format."""
    return np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()


def crowd(n: int = 12, side: int = 200) -> np.ndarray:
    """A 'crowd': ``n`` portraits (Grace Hopper and the astronaut, alternating, each ``side`` px wide) in a grid
    of four columns, so MTCNN finds ``n`` faces."""
    tiles = []
    for i in range(n):
        img = Image.fromarray(photo_rgb("grace_hopper" if i % 2 == 0 else "astronaut"))
        tiles.append(np.asarray(img.resize((side, round(side * img.height / img.width)))))
    h = max(t.shape[0] for t in tiles)
    cols = 4
    rows = -(-n // cols)
    canvas = np.full((rows * h, cols * side, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        canvas[r * h : r * h + tile.shape[0], c * side : (c + 1) * side] = tile
    return canvas
