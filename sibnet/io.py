"""Image intake: every photo the library analyses enters through :func:`load_image`.

The detectors (MTCNN, YOLO) and the three masked branch images of SIB-Net (paper §3.1, Eq. 3) all expect an
upright 8-bit RGB array. Photos arrive as paths, uploads, PIL images or arrays, in any mode Pillow knows,
sometimes rotated by an EXIF tag, sometimes animated, sometimes broken or hostile. This module turns all of
them into one :class:`LoadedImage` or refuses them with an :class:`ImageError` whose message names the
problem and the limit, so the CLI and the web demo can show it as is.

Decisions:

- The pixel limit is checked from the file header, before anything is decoded, so a tiny file that claims
  to be 100000 × 100000 pixels is refused without allocating its buffer. Pillow's own decompression-bomb
  guard (``Image.MAX_IMAGE_PIXELS``) stays in place as a second line; this module never changes it or any
  other global Pillow state (in particular not ``ImageFile.LOAD_TRUNCATED_IMAGES``: a truncated file is an
  error, not a half-grey photo).
- Files are decoded only by the raster formats in :data:`ACCEPTED_FORMATS`. Pillow can open many more
  (EPS through Ghostscript, PSD, FITS, ...); a demo that takes uploads from anyone has no reason to run
  those decoders.
- 16-bit data is mapped to 8 bits by dropping the low byte (``>> 8``); Pillow's own ``convert`` clips
  16-bit values at 255 instead, which turns almost every 16-bit photo white.
- Transparent pixels are composited on white, the background a viewer shows them on.
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, features

from sibnet.errors import ImageError

# 50 megapixels: the full-resolution modes of current phone cameras (8160 × 6120 for a 50 MP sensor, 8000 ×
# 6000 for 48 MP) still load; beyond that a photo is a scan or a bomb. Decoded, 50 MP is 150 MB of RGB bytes,
# and intake briefly holds two or three copies. It is also well under Pillow's own guard (89 MP warns,
# 179 MP raises), so Pillow never refuses first.
MAX_PIXELS = 50_000_000
# 32 pixels a side: below this there is no face to crop (MTCNN's smallest face is 20 px) and the three
# 224 × 224 branch inputs would be upsampled from a handful of pixels.
MIN_SIDE = 32
# Longest side the detectors see (see fit_within). YOLO resizes to 640 anyway and MTCNN's cost grows with
# the pixel count (≈0.3 s for an 810 × 1080 photo on two cores); at 1280 a face in a group photo is still
# well above MTCNN's 20 px minimum.
ANALYSIS_MAX_SIDE = 1280

# Pillow format names tried, in this order, when decoding files and bytes; AVIF only where this Pillow
# build supports it. "JPEG" includes the multi-picture JPEGs many phone cameras write, which Pillow opens
# through its JPEG plugin and reports as format "MPO".
ACCEPTED_FORMATS: tuple[str, ...] = (
    "JPEG",
    "PNG",
    "WEBP",
    "GIF",
    "BMP",
    "TIFF",
    *(("AVIF",) if features.check("avif") else ()),
)

# Errors Pillow's decoders raise for damaged data (truncation is an OSError, some broken headers are
# SyntaxError or struct.error); converting them is the point, so they are listed rather than caught as
# Exception, which would also hide bugs.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error)

ImageSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO | Image.Image | np.ndarray


@dataclass(frozen=True)
class LoadedImage:
    """An upright 8-bit RGB photo, ready for the detectors.

    Attributes:
        rgb: ``H x W x 3`` uint8, C-contiguous and read-only (copy it before drawing or masking in place).
        notices: things the user should know about what is analysed (e.g. only the first frame of an
            animation), in plain words; empty for an ordinary photo.
        format: Pillow's name for the file format (``"JPEG"``, ``"PNG"``, ...); None for arrays and for
            PIL images that were not read from a file.
        size: ``(width, height)`` of ``rgb``, after the EXIF rotation.
    """

    rgb: np.ndarray
    notices: tuple[str, ...]
    format: str | None
    size: tuple[int, int]


def load_image(source: ImageSource, *, max_pixels: int = MAX_PIXELS, min_side: int = MIN_SIDE) -> LoadedImage:
    """Read a photo from a path, bytes, a binary file object, a PIL image or a numpy array.

    Args:
        source: a path (``str`` or ``os.PathLike``); the encoded file as ``bytes``; an open binary file
            object; a ``PIL.Image.Image``; or a numpy array ``H x W``, ``H x W x 3`` or ``H x W x 4``
            (channels last, RGB(A)) of uint8, uint16 or floats in ``[0, 1]``.
        max_pixels: refuse images with more pixels than this (checked from the header before decoding).
        min_side: refuse images whose width or height is smaller than this.

    Returns:
        The upright RGB image with its notices, format and size.

    Raises:
        ImageError: the input is empty, not an image in an accepted format, truncated or corrupt, too large,
            too small, or an array of unsupported shape or dtype.
    """
    if isinstance(source, np.ndarray):
        rgb = _array_to_rgb(source, max_pixels, min_side)
        # Our own pixels: the caller may go on changing theirs.
        return _loaded(rgb.copy() if np.shares_memory(rgb, source) else rgb, (), None)
    if isinstance(source, Image.Image):
        return _from_pil(source, max_pixels, min_side, "")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = f"{path.name}: "
        try:
            if path.stat().st_size == 0:
                raise ImageError(f"{label}the file is empty (0 bytes)")
        except FileNotFoundError as err:
            raise ImageError(f"no such file: {path}") from err
        except OSError as err:
            raise ImageError(f"cannot read {path}: {err.strerror or err}") from err
        if path.is_dir():
            raise ImageError(f"{path} is a folder, not an image file")
        return _decode(path, max_pixels, min_side, label)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif hasattr(source, "read"):
        # Read the whole stream: works for unseekable streams (sockets, pipes) too, and lets the empty
        # check below see the data.
        data = source.read()
        if isinstance(data, str):
            raise ImageError("the file object was opened in text mode; open image files with mode 'rb'")
    else:
        raise ImageError(
            f"cannot read an image from a {type(source).__name__}; pass a path, bytes, a binary file "
            "object, a PIL image or a numpy array"
        )
    if len(data) == 0:
        raise ImageError("the image data is empty (0 bytes)")
    return _decode(io.BytesIO(data), max_pixels, min_side, "")


def fit_within(rgb: np.ndarray, max_side: int = ANALYSIS_MAX_SIDE) -> tuple[np.ndarray, float]:
    """Downsize an RGB image so that its longest side is at most ``max_side`` pixels.

    Args:
        rgb: ``H x W x 3`` uint8 image.
        max_side: the longest side allowed.

    Returns:
        The (possibly) resized image and the scale factor analysed/original: multiply coordinates in the
        original by it to get coordinates in the resized image (``sibnet.boxes.scale_box``). The factor is
        exact for the longest side; the other side is rounded to whole pixels. An image that already fits is
        returned unchanged (the same array) with factor 1.0.

    Raises:
        ValueError: ``rgb`` is not ``H x W x 3`` uint8 or ``max_side`` is not positive.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 image, got shape {rgb.shape} and dtype {rgb.dtype}")
    if max_side < 1:
        raise ValueError(f"max_side must be at least 1, got {max_side}")
    height, width = rgb.shape[:2]
    longest = max(width, height)
    if longest <= max_side:
        return rgb, 1.0
    scale = max_side / longest
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # LANCZOS after a box pre-reduction (reducing_gap): sharp and alias-free, and fast for big reductions.
    resized = Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.ascontiguousarray(np.asarray(resized)), scale


def _loaded(rgb: np.ndarray, notices: tuple[str, ...], fmt: str | None) -> LoadedImage:
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    # Read-only, as arrays from Pillow already are for every decoded file: one image may feed several
    # models and threads, so nothing should change it in place (copy it to draw or mask).
    rgb.setflags(write=False)
    return LoadedImage(rgb=rgb, notices=notices, format=fmt, size=(rgb.shape[1], rgb.shape[0]))


def require_rgb(rgb: object) -> None:
    """Raise ``ValueError`` unless ``rgb`` is an ``H x W x 3`` uint8 array (what :func:`load_image` returns)."""
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        shape = getattr(rgb, "shape", None)
        raise ValueError(f"expected an H x W x 3 uint8 RGB array, got {type(rgb).__name__} {shape}")


def open_pil(fp: Path | str | BinaryIO, formats: tuple[str, ...] | list[str] | None = None) -> Image.Image:
    """``PIL.Image.open`` whose only answer to an unrecognised file is ``PIL.UnidentifiedImageError``.

    Once ultralytics is imported (the person detector does), ``PIL.Image.open`` is process-wide its wrapper
    (``ultralytics.utils.patches``), which answers an unidentified file by importing pi-heif for HEIC
    support; where pi-heif is not installed (and ultralytics may not install it) that import fails with
    ``ImportError`` instead. This maps it back, so callers handle one exception whoever patched Pillow.
    """
    try:
        return Image.open(fp, formats=formats)
    except ImportError as err:
        raise Image.UnidentifiedImageError(f"cannot identify image file {_name_of(fp)}") from err


def _name_of(fp: Path | str | BinaryIO) -> str:
    return repr(str(fp)) if isinstance(fp, (str, Path)) else "from the uploaded bytes"


def _check_size(width: int, height: int, max_pixels: int, min_side: int, label: str) -> None:
    if width * height > max_pixels:
        raise ImageError(
            f"{label}the image is {width} × {height} pixels ({width * height / 1e6:.1f} megapixels); "
            f"the limit is {max_pixels / 1e6:.1f} megapixels. Downsize it and try again."
        )
    if min(width, height) < min_side:
        raise ImageError(
            f"{label}the image is {width} × {height} pixels; each side must be at least {min_side} pixels"
        )


def _decode(fp: Path | BinaryIO, max_pixels: int, min_side: int, label: str) -> LoadedImage:
    """Open with the accepted decoders, check the header's size, then decode."""
    try:
        img = open_pil(fp, formats=ACCEPTED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        # Pillow refused from the header (the warning only arrives here when warnings are errors).
        raise ImageError(
            f"{label}the image is too large ({err}); the limit is {max_pixels / 1e6:.1f} megapixels"
        ) from err
    except Image.UnidentifiedImageError as err:
        raise ImageError(f"{label}{_not_an_image_message(fp)}") from err
    except _DECODE_ERRORS as err:
        raise ImageError(f"{label}the image header is corrupt ({err})") from err
    with img:
        return _from_pil(img, max_pixels, min_side, label)


def _from_pil(img: Image.Image, max_pixels: int, min_side: int, label: str) -> LoadedImage:
    # The size comes from the header; nothing has been decoded yet for a freshly opened file.
    _check_size(img.width, img.height, max_pixels, min_side, label)
    fmt = img.format
    notices: list[str] = []
    try:
        frames = getattr(img, "n_frames", 1)
        # MPO's later frames are previews or depth maps of the same shot, not an animation.
        if getattr(img, "is_animated", False) and frames > 1 and fmt != "MPO":
            notices.append(f"the {fmt or 'image'} has {frames} frames; only the first frame is analysed")
            img.seek(0)
        img.load()
    except _DECODE_ERRORS as err:
        raise ImageError(
            f"{label}the image data is truncated or corrupt ({err}); re-export or re-upload the file"
        ) from err
    try:
        upright = ImageOps.exif_transpose(img)
    except _DECODE_ERRORS:
        # A malformed EXIF block must not cost the photo; it is analysed as stored.
        upright = img
        notices.append("the EXIF orientation tag could not be read; the image is shown as stored")
    return _loaded(_pil_to_rgb(upright), tuple(notices), fmt)


def _pil_to_rgb(img: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to an ``H x W x 3`` uint8 RGB array."""
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit samples (mode "I" is how some Pillow versions open 16-bit PNG and TIFF): keep the high byte.
        values = np.clip(np.asarray(img).astype(np.int64), 0, 65535)
        return _gray_to_rgb((values >> 8).astype(np.uint8))
    if mode == "F":
        return _gray_to_rgb(_float_to_uint8(np.asarray(img), unit_range=False))
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        # Palette and colour-key transparency (GIF, PNG tRNS) become an alpha channel first.
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    if mode == "RGB":
        return np.asarray(img)
    try:
        # L, 1, P, YCbCr, LAB, HSV, and CMYK (by Pillow's plain formula; an embedded ICC profile is not
        # applied, which can shift the colours of print-oriented CMYK files).
        return np.asarray(img.convert("RGB"))
    except ValueError as err:
        raise ImageError(f"unsupported colour mode {mode!r} ({err})") from err


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[:, :, None], 3, axis=2)


def _float_to_uint8(values: np.ndarray, *, unit_range: bool) -> np.ndarray:
    """Floats to uint8: ``[0, 1]`` maps to ``[0, 255]``.

    With ``unit_range`` the values must lie in ``[0, 1]`` (arrays from the caller). Without it (Pillow's "F"
    mode, whose scale files do not record) values up to 1 are taken as ``[0, 1]`` and larger ones as
    ``[0, 255]``, clipped.
    """
    if not np.isfinite(values).all():
        raise ImageError("the float image contains NaN or infinite values")
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if unit_range and (lo < 0.0 or hi > 1.0):
        raise ImageError(
            f"float arrays must hold values in [0, 1]; this one spans [{lo:.3g}, {hi:.3g}] "
            "(pass uint8 for 0-255 data)"
        )
    scale = 255.0 if hi <= 1.0 else 1.0
    return np.clip(np.rint(values.astype(np.float64) * scale), 0, 255).astype(np.uint8)


def _array_to_rgb(array: np.ndarray, max_pixels: int, min_side: int) -> np.ndarray:
    """Check and convert a caller's array (``H x W``, ``H x W x 1``, ``H x W x 3``, ``H x W x 4``) to RGB."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ImageError(
            f"unsupported array shape {array.shape}: expected H × W (grayscale), H × W × 3 (RGB) or "
            "H × W × 4 (RGBA), channels last"
        )
    _check_size(array.shape[1], array.shape[0], max_pixels, min_side, "")
    if array.dtype == np.uint8:
        values = array
    elif array.dtype == np.uint16:
        values = (array >> 8).astype(np.uint8)
    elif array.dtype == np.bool_:
        values = array.astype(np.uint8) * 255
    elif np.issubdtype(array.dtype, np.floating):
        values = _float_to_uint8(array, unit_range=True)
    else:
        raise ImageError(
            f"unsupported array dtype {array.dtype}: expected uint8 (0-255), uint16 (0-65535) or float (0-1)"
        )
    if values.ndim == 2:
        return _gray_to_rgb(values)
    if values.shape[2] == 4:
        # Composite on white, as for RGBA files.
        alpha = values[:, :, 3:].astype(np.float32) / 255.0
        blended = values[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        return np.rint(blended).astype(np.uint8)
    return values


def _not_an_image_message(fp: Path | BinaryIO) -> str:
    """Say what the data looks like, for a file Pillow could not identify as an accepted image."""
    if isinstance(fp, Path):
        with open(fp, "rb") as f:
            head = f.read(512)
    else:
        fp.seek(0)
        head = fp.read(512)
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()  # UTF-8 BOM and whitespace
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"):
        kind = "it is a HEIC/HEIF photo, which this installation cannot decode (export it as JPEG)"
    elif stripped.startswith(b"%pdf"):
        kind = "it is a PDF document"
    elif b"<svg" in stripped or (stripped.startswith(b"<?xml") and b"svg" in stripped):
        kind = "it is an SVG (vector) image, which has no pixels to analyse"
    elif stripped.startswith((b"<!doctype html", b"<html")):
        kind = "it is an HTML page"
    elif _looks_like_text(head):
        kind = "it is a text file"
    else:
        kind = "it is not an image in a supported format, or it is corrupt"
    accepted = ", ".join(ACCEPTED_FORMATS)
    return f"cannot read this as an image: {kind}. Accepted formats: {accepted}."


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(ch.isprintable() or ch in "\t\r\n" for ch in text)
