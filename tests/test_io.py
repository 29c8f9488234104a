"""Tests for sibnet.io: every accepted kind of source and mode, and every refusal with its message."""

from __future__ import annotations

import io
import resource
import time

import numpy as np
import pytest
from PIL import Image

from sibnet.io import (
    ACCEPTED_FORMATS,
    ANALYSIS_MAX_SIDE,
    MAX_PIXELS,
    MIN_SIDE,
    ImageError,
    LoadedImage,
    fit_within,
    load_image,
)
from tests import _images


def check_loaded(loaded: LoadedImage, width: int, height: int) -> None:
    assert isinstance(loaded, LoadedImage)
    assert loaded.rgb.dtype == np.uint8
    assert loaded.rgb.shape == (height, width, 3)
    assert loaded.rgb.flags.c_contiguous
    assert not loaded.rgb.flags.writeable
    assert loaded.size == (width, height)


# ---- sources ---------------------------------------------------------------------------------------------


@pytest.fixture
def card() -> np.ndarray:
    return _images.gradient_rgb(96, 64)


@pytest.fixture
def card_png(card: np.ndarray) -> bytes:
    return _images.encode(Image.fromarray(card), "PNG")


def test_path_str_and_pathlib(tmp_path, card, card_png):
    path = tmp_path / "card.png"
    path.write_bytes(card_png)
    for source in (path, str(path)):
        loaded = load_image(source)
        check_loaded(loaded, 96, 64)
        np.testing.assert_array_equal(loaded.rgb, card)
        assert loaded.format == "PNG"
        assert loaded.notices == ()


def test_bytes_bytearray_memoryview(card, card_png):
    for source in (card_png, bytearray(card_png), memoryview(card_png)):
        loaded = load_image(source)
        np.testing.assert_array_equal(loaded.rgb, card)
        assert loaded.format == "PNG"


def test_file_objects(tmp_path, card, card_png):
    np.testing.assert_array_equal(load_image(io.BytesIO(card_png)).rgb, card)
    path = tmp_path / "card.png"
    path.write_bytes(card_png)
    with open(path, "rb") as f:
        np.testing.assert_array_equal(load_image(f).rgb, card)


def test_text_mode_file_object_is_refused(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("hello")
    with open(path) as f, pytest.raises(ImageError, match=r"text mode.*'rb'"):
        load_image(f)


def test_pil_image(card):
    loaded = load_image(Image.fromarray(card))
    np.testing.assert_array_equal(loaded.rgb, card)
    assert loaded.format is None


def test_real_photo_from_path():
    loaded = load_image(_images.photo_path("grace_hopper"))
    check_loaded(loaded, 512, 600)
    assert loaded.format == "JPEG"


def test_array_rgb_is_copied_into_a_contiguous_result(card):
    view = card[:, ::-1]  # not C-contiguous
    loaded = load_image(view)
    check_loaded(loaded, 96, 64)
    np.testing.assert_array_equal(loaded.rgb, view)
    assert loaded.format is None
    contiguous = card.copy()
    loaded = load_image(contiguous)
    contiguous[:] = 0  # the caller's later changes do not reach the loaded image
    np.testing.assert_array_equal(loaded.rgb, card)
    assert contiguous.flags.writeable


def test_array_gray_uint16_float_bool_rgba():
    gray = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (40, 1))  # 40 x 64
    np.testing.assert_array_equal(load_image(gray).rgb, np.repeat(gray[:, :, None], 3, 2))
    np.testing.assert_array_equal(load_image(gray[:, :, None]).rgb[:, :, 1], gray)

    wide = gray.astype(np.uint16) * 257  # 0..65535 scale of the same values
    np.testing.assert_array_equal(load_image(wide).rgb[:, :, 0], gray)

    floats = gray.astype(np.float32) / 255.0
    np.testing.assert_array_equal(load_image(floats).rgb[:, :, 2], gray)

    mask = np.zeros((40, 40), dtype=bool)
    mask[:, 20:] = True
    assert set(np.unique(load_image(mask).rgb)) == {0, 255}

    rgba = np.zeros((40, 40, 4), dtype=np.uint8)
    rgba[:, :20, 3] = 255  # left half opaque black, right half transparent
    rgb = load_image(rgba).rgb
    assert (rgb[:, :20] == 0).all()
    assert (rgb[:, 20:] == 255).all()  # composited on white


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((3, 64, 64), np.uint8), r"unsupported array shape \(3, 64, 64\).*channels last"),
        (np.zeros((64, 64, 2), np.uint8), r"unsupported array shape"),
        (np.zeros((2, 64, 64, 3), np.uint8), r"unsupported array shape"),
        (np.zeros(64, np.uint8), r"unsupported array shape"),
        (np.zeros((64, 64, 3), np.int64), r"unsupported array dtype int64.*uint8"),
        (np.zeros((64, 64, 3), np.complex64), r"unsupported array dtype"),
        (np.full((64, 64, 3), 2.0), r"values in \[0, 1\].*\[2, 2\]"),
        (np.full((64, 64), np.nan, np.float32), r"NaN"),
        (np.zeros((10, 64, 3), np.uint8), r"10 pixels; each side must be at least 32"),
    ],
)
def test_unsupported_arrays(array, message):
    with pytest.raises(ImageError, match=message):
        load_image(array)


def test_unsupported_source_type():
    with pytest.raises(ImageError, match="cannot read an image from a int"):
        load_image(42)


# ---- orientation and modes -------------------------------------------------------------------------------


def test_exif_orientation_is_applied(card):
    # Orientation 6: the stored pixels must be rotated 90° clockwise to be upright.
    loaded = load_image(_images.jpeg_with_orientation(card, 6))
    check_loaded(loaded, 64, 96)  # width and height swapped
    upright = np.asarray(Image.fromarray(card).transpose(Image.Transpose.ROTATE_270))
    assert np.abs(loaded.rgb.astype(int) - upright.astype(int)).mean() < 3  # JPEG noise only
    # Red grows left to right in the stored image, so top to bottom once rotated clockwise.
    assert loaded.rgb[-1, :, 0].mean() > loaded.rgb[0, :, 0].mean() + 200


def test_rgba_la_composited_on_white():
    rgba = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (0, 0, 20, 40))
    rgb = load_image(_images.encode(rgba, "PNG")).rgb
    assert (rgb[:, :20] == (0, 0, 255)).all()
    assert (rgb[:, 20:] == 255).all()

    la = Image.new("LA", (40, 40), (0, 0))
    la.paste((0, 255), (0, 0, 20, 40))
    rgb = load_image(_images.encode(la, "PNG")).rgb
    assert (rgb[:, :20] == 0).all()
    assert (rgb[:, 20:] == 255).all()


def test_palette_with_transparency():
    pal = Image.new("P", (40, 40), 0)
    pal.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    pal.paste(1, (0, 0, 20, 40))
    data = _images.encode(pal, "PNG", transparency=0)  # index 0 (black) is transparent
    rgb = load_image(data).rgb
    assert (rgb[:, :20] == (200, 10, 10)).all()
    assert (rgb[:, 20:] == 255).all()
    # Without transparency the palette is simply looked up.
    assert (load_image(_images.encode(pal, "PNG")).rgb[:, 20:] == 0).all()


def test_cmyk_jpeg():
    cmyk = Image.new("CMYK", (40, 40), (255, 0, 0, 0))  # pure cyan
    loaded = load_image(_images.encode(cmyk, "JPEG", quality=95))
    assert loaded.format == "JPEG"
    red, green, blue = loaded.rgb.reshape(-1, 3).mean(0)
    assert red < 10 and green > 245 and blue > 245


def test_16bit_png_uses_the_full_8bit_range():
    loaded = load_image(_images.png16_gradient(256, 40))
    row = loaded.rgb[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255
    assert len(np.unique(row)) > 200  # a gradient, not clipped to 255 after the first column
    assert (np.diff(row) >= 0).all()
    assert (loaded.rgb[:, :, 0] == loaded.rgb[:, :, 2]).all()
    # Mode "I" (32-bit integers holding 16-bit samples) is mapped the same way.
    wide = np.asarray(Image.open(io.BytesIO(_images.png16_gradient(256, 40)))).astype(np.int32)
    np.testing.assert_array_equal(load_image(Image.fromarray(wide)).rgb, loaded.rgb)


def test_16bit_big_endian_tiff():
    row = np.linspace(0, 65535, 64).round().astype(">u2")
    img = Image.frombytes("I;16B", (64, 40), np.repeat(row[None, :], 40, axis=0).tobytes())
    data = _images.encode(img, "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "I;16B"
    loaded = load_image(data)
    np.testing.assert_array_equal(loaded.rgb[0, :, 0], (row >> 8).astype(np.uint8))
    assert loaded.rgb[0, 0, 0] == 0 and loaded.rgb[0, -1, 0] == 255


def test_float_mode_image():
    values = np.linspace(0, 1, 64 * 40, dtype=np.float32).reshape(40, 64)
    rgb = load_image(Image.fromarray(values, mode="F")).rgb
    assert rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] == 255


def test_grayscale_and_one_bit():
    gray = Image.fromarray(np.tile(np.arange(64, dtype=np.uint8) * 4, (40, 1)))
    rgb = load_image(_images.encode(gray, "PNG")).rgb
    assert (rgb[:, :, 0] == np.asarray(gray)).all() and (rgb[:, :, 1] == rgb[:, :, 2]).all()

    bits = Image.new("1", (40, 40), 0)
    bits.paste(1, (0, 0, 20, 40))
    rgb = load_image(_images.encode(bits, "PNG")).rgb
    assert (rgb[:, :20] == 255).all() and (rgb[:, 20:] == 0).all()


def test_animated_gif_gives_first_frame_and_notice():
    loaded = load_image(_images.animated_gif(frames=3))
    check_loaded(loaded, 48, 40)
    assert loaded.format == "GIF"
    assert (np.abs(loaded.rgb.astype(int) - 60) <= 2).all()
    assert len(loaded.notices) == 1
    assert "3 frames" in loaded.notices[0] and "first frame" in loaded.notices[0]


def test_animated_webp_gives_first_frame_and_notice():
    frames = [Image.new("RGB", (48, 40), (v, v, v)) for v in (60, 120)]
    data = _images.encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    loaded = load_image(data)
    assert loaded.format == "WEBP"
    assert (loaded.rgb == 60).all()
    assert "2 frames" in loaded.notices[0]


def test_still_gif_has_no_notice():
    assert load_image(_images.encode(Image.new("RGB", (40, 40), "red"), "GIF")).notices == ()


# ---- refusals --------------------------------------------------------------------------------------------


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.jpg: the file is empty \(0 bytes\)"):
        load_image(path)
    with pytest.raises(ImageError, match=r"empty \(0 bytes\)"):
        load_image(b"")
    with pytest.raises(ImageError, match=r"empty \(0 bytes\)"):
        load_image(io.BytesIO())


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="is a folder"):
        load_image(tmp_path)


def test_corrupt_bytes():
    with pytest.raises(ImageError, match="not an image in a supported format, or it is corrupt"):
        load_image(_images.corrupt_bytes())


def test_jpeg_signature_followed_by_garbage():
    with pytest.raises(ImageError, match="corrupt"):
        load_image(b"\xff\xd8\xff\xe0" + _images.corrupt_bytes())


def test_truncated_jpeg(tmp_path):
    path = tmp_path / "half.jpg"
    path.write_bytes(_images.truncated_jpeg())
    with pytest.raises(ImageError, match=r"half\.jpg: the image data is truncated or corrupt"):
        load_image(path)


def test_truncated_real_photo():
    data = _images.photo_path("bus").read_bytes()
    with pytest.raises(ImageError, match="truncated or corrupt"):
        load_image(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"Dear reader,\nthis is not a photo.\n", "it is a text file"),
        (_images.minimal_pdf(), "it is a PDF document"),
        (_images.svg_image(), "it is an SVG"),
        (b"<!DOCTYPE html><html><body>hi</body></html>", "it is an HTML page"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64), "it is a HEIC/HEIF photo"),
    ],
)
def test_not_an_image(tmp_path, data, kind):
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    for source in (path, data):
        with pytest.raises(ImageError) as info:
            load_image(source)
        message = str(info.value)
        assert kind in message
        assert "Accepted formats: " + ", ".join(ACCEPTED_FORMATS) in message
        assert "JPEG" in message and "PNG" in message


def test_not_an_image_after_ultralytics_patched_pil():
    # Importing ultralytics wraps PIL.Image.open process-wide; an unidentified file then surfaces as an
    # ImportError (pi-heif) rather than UnidentifiedImageError. Intake must still say what is wrong.
    from sibnet.detect.persons import configure_ultralytics_env

    configure_ultralytics_env()
    import ultralytics.utils.patches  # noqa: F401 - imported for its side effect on PIL

    assert Image.open.__module__ == "ultralytics.utils.patches"
    with pytest.raises(ImageError, match="it is a PDF document"):
        load_image(_images.minimal_pdf())
    with pytest.raises(ImageError, match="not an image in a supported format"):
        load_image(_images.corrupt_bytes())
    np.testing.assert_array_equal(load_image(_images.encode(Image.new("RGB", (40, 40)), "PNG")).rgb, 0)


def test_formats_outside_the_accepted_list_are_refused():
    # Pillow reads these, but intake does not run their decoders.
    data = _images.encode(Image.new("RGB", (40, 40)), "PPM")
    with pytest.raises(ImageError, match="Accepted formats"):
        load_image(data)


def test_too_small():
    with pytest.raises(ImageError, match=r"1 × 1 pixels; each side must be at least 32 pixels"):
        load_image(_images.encode(Image.new("RGB", (1, 1)), "PNG"))
    with pytest.raises(ImageError, match=r"100 × 20 pixels; each side must be at least 32"):
        load_image(_images.encode(Image.new("RGB", (100, 20)), "PNG"))
    check_loaded(load_image(np.zeros((MIN_SIDE, MIN_SIDE, 3), np.uint8)), MIN_SIDE, MIN_SIDE)
    check_loaded(load_image(np.zeros((8, 8, 3), np.uint8), min_side=8), 8, 8)


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def test_bomb_header_is_refused_without_decoding():
    # 100000 x 100000 x 3 bytes would be 30 GB; the file itself is 45 bytes.
    data = _images.png_header(100_000, 100_000)
    rss_before, start = _max_rss_mb(), time.perf_counter()
    with pytest.raises(ImageError, match=r"too large.*limit is 50\.0 megapixels"):
        load_image(data)
    assert time.perf_counter() - start < 0.5
    assert _max_rss_mb() - rss_before < 50


def test_pixel_limit_is_checked_from_the_header():
    # 60 MP: over MAX_PIXELS but under Pillow's own guard, so this module's check is what refuses it. The
    # file has no pixel data: a decode attempt would fail as "truncated", not "too large".
    assert MAX_PIXELS < 10_000 * 6_000
    with pytest.raises(ImageError, match=r"10000 × 6000 pixels \(60\.0 megapixels\); the limit is 50\.0"):
        load_image(_images.png_header(10_000, 6_000))


def test_pixel_limit_argument(card):
    with pytest.raises(ImageError, match=r"96 × 64 pixels.*limit is 0\.0 megapixels"):
        load_image(_images.encode(Image.fromarray(card), "PNG"), max_pixels=96 * 64 - 1)
    with pytest.raises(ImageError, match="megapixels"):
        load_image(card, max_pixels=1000)
    check_loaded(load_image(card, max_pixels=96 * 64), 96, 64)


# ---- fit_within -------------------------------------------------------------------------------------------


def test_fit_within_downsizes_with_scale():
    rgb = np.zeros((1080, 810, 3), np.uint8)
    small, scale = fit_within(rgb, 540)
    assert small.shape == (540, 405, 3) and small.dtype == np.uint8
    assert scale == pytest.approx(0.5)

    wide, scale = fit_within(np.zeros((720, 2000, 3), np.uint8), ANALYSIS_MAX_SIDE)
    assert wide.shape == (461, 1280, 3)
    assert scale == pytest.approx(1280 / 2000)


def test_fit_within_keeps_content():
    rgb = _images.photo_rgb("bus")
    small, _ = fit_within(rgb, 270)
    reference = np.asarray(Image.fromarray(rgb).resize(small.shape[1::-1], Image.Resampling.BOX))
    assert np.abs(small.astype(int) - reference.astype(int)).mean() < 6


def test_fit_within_is_a_noop_for_small_images(card):
    same, scale = fit_within(card, 96)
    assert same is card and scale == 1.0
    same, scale = fit_within(card)
    assert same is card and scale == 1.0


def test_fit_within_rejects_bad_input(card):
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        fit_within(card.astype(np.float32), 10)
    with pytest.raises(ValueError, match="max_side"):
        fit_within(card, 0)
