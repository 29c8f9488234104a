"""Figure-5 rendering on a real photo: size, distinct panels, titles' data, the strip and the people overlay."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from demo.render import (
    FIGURE_WIDTH_PX,
    NARROW_WIDTH_PX,
    branch_strip,
    figure5,
    method_title,
    overlay,
    people_overlay,
    person_at,
    save_png,
)
from tests import _images


@pytest.fixture(scope="module")
def zidane(analyzer):
    return analyzer, analyzer.analyze(_images.photo_path("zidane"))


def _panels(fig: np.ndarray, rows: int = 3, cols: int = 4) -> list[list[np.ndarray]]:
    """Cut the grid into its panels by finding the non-white tiles (each overlay tile is fully coloured)."""
    non_white = (fig < 245).any(axis=2)
    col_runs = _runs(non_white[:, 140:1060].mean(axis=0) > 0.3, offset=140)
    row_runs = _runs(non_white[:, 150:1040].mean(axis=1) > 0.5)
    assert len(col_runs) >= cols and len(row_runs) >= rows, (col_runs, row_runs)
    return [[fig[r0:r1, c0:c1] for c0, c1 in col_runs[:cols]] for r0, r1 in row_runs[:rows]]


def _runs(mask: np.ndarray, offset: int = 0, min_len: int = 60) -> list[tuple[int, int]]:
    runs, start = [], None
    for i, v in enumerate([*list(mask), False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            if i - start >= min_len:
                runs.append((start + offset, i + offset))
            start = None
    return runs


def test_figure5_png_from_a_real_photo(zidane, tmp_path):
    _, result = zidane
    fig = figure5(result, person=1)
    assert fig.dtype == np.uint8 and fig.ndim == 3 and fig.shape[2] == 3
    assert fig.shape[1] == FIGURE_WIDTH_PX and 800 <= fig.shape[0] <= 1100
    path = save_png(fig, tmp_path / "fig5.png")
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (fig.shape[1], fig.shape[0])
        assert np.array_equal(np.asarray(img.convert("RGB")), fig)  # lossless
    panels = _panels(fig)
    flat = [p for row in panels for p in row]
    for i in range(len(flat)):
        for j in range(i + 1, len(flat)):
            a, b = flat[i], flat[j]
            h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
            assert np.abs(a[:h, :w].astype(int) - b[:h, :w].astype(int)).mean() > 2, (i, j)
    # another person's figure is another figure
    assert not np.array_equal(figure5(result, person=0), fig)


def test_figure5_changes_with_the_maps(zidane):
    analyzer, result = zidane
    a = figure5(result, 0)
    b = figure5(analyzer.explain(result, target="Peace", method="eigencam"), 0)
    assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).mean() > 1


def test_strip_and_people_overlay(zidane):
    _, result = zidane
    strip = branch_strip(result, 0)
    assert strip.shape == (224, 3 * 224 + 16, 3)
    _, body, scene = result.masked_inputs[0]
    assert (body == 0).all(axis=2).mean() > 0.05  # the masked face is black in the body input
    assert (scene == 0).all(axis=2).mean() > 0.05  # the masked body is black in the scene input
    boxes = people_overlay(result, selected=1)
    assert boxes.shape == result.image.shape
    assert np.abs(boxes.astype(int) - result.image.astype(int)).sum() > 0
    yellow = (boxes[..., 0] > 240) & (boxes[..., 1] > 190) & (boxes[..., 2] < 30)
    assert yellow.sum() > 200  # face boxes drawn


def test_overlay_is_pytorch_grad_cam_blend():
    img = np.full((10, 12, 3), 200, np.uint8)
    cam = np.zeros((5, 6), np.float32)
    out = overlay(img, cam)
    assert out.shape == (10, 12, 3) and out.dtype == np.uint8
    hot = overlay(img, np.ones((5, 6), np.float32))
    assert hot[..., 0].mean() > out[..., 0].mean()  # JET: 1 is red, 0 is blue


def test_render_refuses_what_it_cannot_draw(zidane):
    analyzer, result = zidane
    with pytest.raises(ValueError, match="out of range"):
        figure5(result, person=5)
    one = analyzer.analyze(_images.photo_path("zidane"), person=0)
    with pytest.raises(ValueError, match="no maps were computed for person 1"):
        figure5(one, person=1)


def test_narrow_layout_keeps_the_panels_and_is_phone_sized(zidane):
    _, result = zidane
    narrow = figure5(result, 1, layout="narrow")
    assert narrow.shape[1] == NARROW_WIDTH_PX and narrow.shape[0] > narrow.shape[1]
    wide = figure5(result, 1)
    # The same composited photo tile content appears in both (drawn from the same maps), only sized differently.
    assert np.abs(narrow.astype(int).mean() - wide.astype(int).mean()) < 40
    with pytest.raises(ValueError, match="unknown layout"):
        figure5(result, 1, layout="square")


def test_class_agnostic_methods_say_so():
    assert "for target" in method_title("gradcam", "Fear")
    eigen = method_title("eigencam", "Fear")
    assert "Fear" not in eigen and "same for every target" in eigen
    assert "same for every target" in method_title("activation", "Fear")


def test_a_click_on_a_box_picks_that_person(zidane):
    _, result = zidane
    for p in result.people:
        fx = (p.face_box[0] + p.face_box[2]) / 2
        fy = (p.face_box[1] + p.face_box[3]) / 2
        assert person_at(result, fx, fy) == p.id
        # Inside this body only (below the face, away from the others' boxes): this person.
        bx, by = (p.body_box[0] + p.body_box[2]) / 2, p.body_box[3] - 2
        others = [q for q in result.people if q.id != p.id]
        if not any(
            q.body_box[0] <= bx <= q.body_box[2] and q.body_box[1] <= by <= q.body_box[3] for q in others
        ):
            assert person_at(result, bx, by) == p.id
    assert person_at(result, -5, -5) is None
