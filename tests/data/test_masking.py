"""The input recipe (paper Eq. 3, §4.2): sibnet.data.masking.make_triple and InputTransform."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sibnet.boxes import estimate_face_from_body
from sibnet.data.masking import (
    BODY_WHOLE_IMAGE,
    FACE_ESTIMATED,
    batch_triples,
    make_triple,
    pixel_bounds,
)


def _norm(pixels: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 → (3, H, W) float normalised with the default mean/std 0.5."""
    return (torch.from_numpy(pixels.astype(np.float32)).permute(2, 0, 1) / 255 - 0.5) / 0.5


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    # Equal up to float rounding (torchvision scales by 1/255 where _norm divides by 255).
    return a.shape == b.shape and torch.allclose(a, b, rtol=0, atol=1e-6)


def _random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    # 1..255: every zero in a branch tensor then comes from the mask.
    return np.random.default_rng(seed).integers(1, 256, (height, width, 3), dtype=np.uint8)


def _ramp(height: int = 200, width: int = 256) -> np.ndarray:
    """Red = x, green = y, blue constant: a pixel's value says where it came from."""
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx, yy, np.full_like(xx, 128)], axis=2).astype(np.uint8)


def test_eq3_exact_when_no_resampling():
    # resize == size and 40 x 40 boxes: resize and crop are the identity, so Eq. 3 is checked pixel for pixel.
    img = _random_image(120, 200)
    face, body = (100, 50, 140, 90), (90, 40, 130, 80)
    t = make_triple(img, face, body, size=40, resize=40)
    assert _same(t.face, _norm(img[50:90, 100:140]))
    expected_body = img[40:80, 90:130].copy()
    expected_body[50 - 40 : 80 - 40, 100 - 90 : 130 - 90] = 0  # face ∩ body, in body-crop coordinates
    assert _same(t.body, _norm(expected_body))
    assert (t.body[:, 10:40, 10:40] == -1).all()
    assert (t.body[:, :10, :] > -1).all() and (t.body[:, :, :10] > -1).all()
    assert t.fallbacks == ()


def test_scene_is_zero_exactly_inside_the_body():
    img = _random_image(40, 40, seed=1)  # image side == resize == size: the scene is not resampled
    t = make_triple(img, (12, 6, 20, 14), (10, 5, 30, 35), size=40, resize=40)
    expected = img.copy()
    expected[5:35, 10:30] = 0
    assert _same(t.scene, _norm(expected))
    inside = torch.zeros(40, 40, dtype=torch.bool)
    inside[5:35, 10:30] = True
    assert (t.scene[:, inside] == -1).all() and (t.scene[:, ~inside] > -1).all()


def test_defaults_shapes_range_and_display_images():
    img = _random_image(480, 640, seed=2)
    t = make_triple(img, (300, 50, 360, 120), (200, 30, 460, 470))
    for x in (t.face, t.body, t.scene):
        assert x.shape == (3, 224, 224) and x.dtype == torch.float32 and x.is_contiguous()
        assert x.min() >= -1 and x.max() <= 1
    for shown, x in zip(t.masked_images(), (t.face, t.body, t.scene)):
        assert shown.shape == (224, 224, 3) and shown.dtype == np.uint8
        assert _same(_norm(shown), x)
    assert t.stack().shape == (3, 3, 224, 224)
    face, body, scene = t.stack()
    assert torch.equal(face, t.face) and torch.equal(body, t.body) and torch.equal(scene, t.scene)
    assert [b.shape for b in t.as_batch()] == [(1, 3, 224, 224)] * 3
    assert t.image_size == (640, 480)
    # Scene: the body's middle, mapped through the scene region, is masked.
    sx1, sy1, sx2, sy2 = t.regions[2]
    col = int((330 - sx1) / (sx2 - sx1) * 224)
    row = int((250 - sy1) / (sy2 - sy1) * 224)
    assert (t.scene[:, row - 20 : row + 20, col - 20 : col + 20] == -1).all()


def test_center_crop_is_centred_and_deterministic():
    img = _random_image(100, 100)
    a = make_triple(img, (40, 10, 60, 30), (20, 5, 80, 95), size=32, resize=38)
    b = make_triple(img, (40, 10, 60, 30), (20, 5, 80, 95), size=32, resize=38)
    assert torch.equal(a.scene, b.scene)
    # offset 3 of 38 on each side of the scene: 3/38 of the image
    assert a.regions[2] == pytest.approx((300 / 38, 300 / 38, 3500 / 38, 3500 / 38))


def test_random_crops_reproducible_per_seed_and_independent_per_branch():
    img = _random_image(100, 100)
    box_f, box_b = (40, 10, 60, 30), (20, 5, 80, 95)

    def run(seed: int):
        return make_triple(
            img, box_f, box_b, size=32, resize=48, train=True, generator=torch.Generator().manual_seed(seed)
        )

    a, a2 = run(0), run(0)
    assert all(torch.equal(x, y) for x, y in zip(a.stack(), a2.stack())) and a.regions == a2.regions
    regions = {run(s).regions for s in range(8)}
    assert len(regions) > 1  # different seeds, different crops
    # The three branches draw their own offsets: relative positions differ between branches for some seed.
    rel = []
    for s in range(8):
        t = run(s)
        rel.append(
            tuple(
                round((r[0] - b[0]) / (b[2] - b[0]) * 48)
                for r, b in zip(t.regions, [box_f, box_b, (0, 0, 100, 100)])
            )
        )
    assert any(len(set(offsets)) > 1 for offsets in rel)


def test_swapped_corners_are_normalised():
    img = _random_image(80, 120)
    a = make_triple(img, (30, 10, 50, 30), (20, 5, 70, 75), size=32, resize=36)
    b = make_triple(img, (50, 30, 30, 10), (70, 75, 20, 5), size=32, resize=36)
    assert all(torch.equal(x, y) for x, y in zip(a.stack(), b.stack()))
    assert b.face_box == (30, 10, 50, 30) and b.body_box == (20, 5, 70, 75)


def test_boxes_outside_the_image_are_clipped_or_replaced():
    img = _random_image(80, 120)
    t = make_triple(img, (30, -10, 50, 20), (100, 40, 200, 140), size=32, resize=36)
    assert t.body_box == (100, 40, 120, 80) and t.face_box == (30, 0, 50, 20)
    assert t.fallbacks == ()
    far = make_triple(img, (500, 500, 600, 600), (-50, -50, -10, -10), size=32, resize=36)
    assert far.fallbacks == (BODY_WHOLE_IMAGE, FACE_ESTIMATED)


def test_missing_face_is_estimated_from_the_body():
    img = _random_image(100, 100)
    body = (20, 10, 80, 95)
    for face in (None, (40, 40, 40, 60), (40.2, 40, 40.7, 60)):  # None, zero width, sub-pixel width
        t = make_triple(img, face, body, size=32, resize=36)
        assert t.fallbacks == (FACE_ESTIMATED,)
        assert t.face_box == pytest.approx(estimate_face_from_body(body, 100, 100))


def test_missing_body_is_the_whole_image_and_the_scene_is_blank():
    img = _random_image(60, 90)
    t = make_triple(img, (30, 5, 50, 25), None, size=32, resize=36)
    assert t.fallbacks == (BODY_WHOLE_IMAGE,)
    assert t.body_box == (0, 0, 90, 60)
    assert (t.scene == -1).all()
    both = make_triple(img, None, None, size=32, resize=36)
    assert both.fallbacks == (BODY_WHOLE_IMAGE, FACE_ESTIMATED)
    assert both.face_box == pytest.approx(estimate_face_from_body((0, 0, 90, 60), 90, 60))


def test_pixel_bounds_floor_start_ceil_end():
    assert pixel_bounds((10.2, 5.9, 20.1, 30.0), 100, 100) == (10, 5, 21, 30)
    assert pixel_bounds((10.2, 5.0, 10.4, 5.1), 100, 100) == (10, 5, 11, 6)  # at least one pixel
    assert pixel_bounds((-5, -5, 500, 500), 100, 50) == (0, 0, 100, 50)


@pytest.mark.parametrize("train", [False, True])
def test_regions_map_branch_pixels_back_to_the_photo(train: bool):
    """Paste test: each branch pixel's value (red = x, green = y of the photo) matches the photo position the
    region says it covers."""
    img = _ramp()
    face, body = (
        (20.5, 30.2, 70.8, 85.0),
        (120, 20, 220, 190),
    )  # face outside the body: the body ramp is intact
    size, resize = 56, 64
    t = make_triple(
        img, face, body, size=size, resize=resize, train=train, generator=torch.Generator().manual_seed(3)
    )
    centres = (np.arange(size) + 0.5) / size
    for k, (shown, region) in enumerate(zip(t.masked_images(), t.regions)):
        x1, y1, x2, y2 = region
        want_x = x1 + centres * (x2 - x1) - 0.5  # photo coordinate of each column's centre
        want_y = y1 + centres * (y2 - y1) - 0.5
        inner = slice(4, size - 4)  # away from the crop borders, where bilinear clamps
        red = shown[inner, inner, 0].astype(float)
        green = shown[inner, inner, 1].astype(float)
        keep = red > 0 if k == 2 else np.ones_like(red, dtype=bool)  # scene: skip the masked body
        if k == 2:  # also skip pixels next to the mask, blended with zeros
            keep &= (want_x[inner][None, :] < body[0] - 6) | (want_x[inner][None, :] > body[2] + 6)
        err_x = np.abs(red - want_x[inner][None, :])[keep]
        err_y = np.abs(green - want_y[inner][:, None])[keep]
        assert err_x.max() < 1.5 and err_y.max() < 1.5, (k, err_x.max(), err_y.max())


def test_regions_paste_random_crops_back_exactly():
    # Boxes of exactly resize x resize pixels are not resampled, so the region of a random crop is whole pixels
    # and the branch image pasted there reproduces the photo (the body with its face hole) exactly.
    img = _random_image(100, 120, seed=4)
    face, body = (10, 20, 58, 68), (60, 30, 108, 78)  # 48 x 48 each, disjoint
    for seed in range(5):
        t = make_triple(
            img, face, body, size=32, resize=48, train=True, generator=torch.Generator().manual_seed(seed)
        )
        for shown, region in zip(t.masked_images()[:2], t.regions[:2]):
            x1, y1, x2, y2 = (int(v) for v in region)
            assert (x1, y1, x2, y2) == region and (x2 - x1, y2 - y1) == (32, 32)
            assert np.array_equal(shown, img[y1:y2, x1:x2])


def test_inputs_pil_greyscale_and_errors():
    img = _random_image(50, 70)
    a = make_triple(img, (10, 10, 30, 30), (5, 5, 60, 45), size=24, resize=28)
    b = make_triple(Image.fromarray(img), (10, 10, 30, 30), (5, 5, 60, 45), size=24, resize=28)
    assert torch.equal(a.scene, b.scene)
    grey = make_triple(img[:, :, 0], (10, 10, 30, 30), (5, 5, 60, 45), size=24, resize=28)
    assert torch.equal(grey.face[0], grey.face[1])
    with pytest.raises(ValueError, match="uint8"):
        make_triple(img.astype(np.float32), None, None, size=24, resize=28)
    with pytest.raises(ValueError, match="size <= resize"):
        make_triple(img, None, None, size=32, resize=28)
    with pytest.raises(ValueError, match="HxWx3"):
        make_triple(np.zeros((5, 5, 4), np.uint8), None, None, size=4, resize=4)


def test_batch_triples_stacks():
    img = _random_image(50, 70)
    triples = [make_triple(img, (10, 10, 30, 30), (5, 5, 60, 45), size=24, resize=28) for _ in range(3)]
    face, body, scene = batch_triples(triples)
    assert face.shape == body.shape == scene.shape == (3, 3, 24, 24)
    assert torch.equal(body[1], triples[1].body)
    with pytest.raises(ValueError):
        batch_triples([])
