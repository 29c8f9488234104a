"""The dataset base (sibnet.data.base): per-item crop seeding and image reads."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from sibnet.data.base import item_generator, read_rgb
from sibnet.errors import DatasetError


def test_item_generator_depends_on_seed_epoch_index():
    draw = lambda *k: torch.randint(0, 1 << 30, (4,), generator=item_generator(*k)).tolist()  # noqa: E731
    assert draw(0, 0, 5) == draw(0, 0, 5)
    assert len({tuple(draw(0, e, 5)) for e in range(4)}) == 4
    assert draw(0, 0, 5) != draw(0, 0, 6) and draw(0, 0, 5) != draw(1, 0, 5)


def test_unreadable_file_is_a_dataset_error_even_after_ultralytics_patched_pil(tmp_path):
    # Importing ultralytics (the person detector does) wraps PIL.Image.open process-wide; an unidentified
    # file then raises ImportError (pi-heif missing) from inside Pillow. Dataset reads must still name it.
    from sibnet.detect.persons import configure_ultralytics_env

    configure_ultralytics_env()
    import ultralytics.utils.patches  # noqa: F401 - imported for its side effect on PIL

    assert Image.open.__module__ == "ultralytics.utils.patches"
    bad = tmp_path / "0004.png"
    bad.write_bytes(b"this is not a png")
    with pytest.raises(DatasetError, match=r"cannot read image .*0004\.png"):
        read_rgb(bad)
    good = tmp_path / "good.png"
    Image.new("RGB", (8, 6), (10, 20, 30)).save(good)
    assert read_rgb(good).shape == (6, 8, 3)
