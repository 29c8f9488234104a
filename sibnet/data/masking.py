"""The input recipe: the three masked partial images of one person (paper §3.1, §4.2, Eq. 3).

This module is the *one* place the branch inputs are built. A model's recipe is an :class:`InputTransform`
(crop size, resize side, mean, std), declared by its config the way torchvision weights declare their
transforms (``model.config.transform``); training, evaluation, the CLI, the notebook and the web demo all
call that object (or :func:`make_triple` with its fields), so a model sees exactly the same pixels everywhere.
:data:`BRANCHES` is the one declaration of the branch order (SCM's sequence, the model's input order).

Eq. 3 sets the pixels inside a bounding box to 0. Per branch (DESIGN.md §1):

============  ===================================================================
branch        image
============  ===================================================================
face          the face box cropped from the photo
body          the body box cropped, with the face box inside it set to 0
scene         the whole photo with the body box set to 0
============  ===================================================================

The zeros are pixel zeros of the uint8 photo, set *before* resizing and normalising (so they become -1 with
the default mean/std of 0.5). Each masked image is then resized to ``resize`` x ``resize`` (230 in §4.2;
aspect ratio not preserved, as the paper does; antialiased bilinear), random-cropped (training) or
center-cropped (evaluation) to ``size`` x ``size`` (224) and normalised.

Box conventions (``sibnet.boxes``: ``(x1, y1, x2, y2)`` floats, ``x2``/``y2`` exclusive):

- boxes are corner-normalised (swapped corners are fixed) and clipped to the image;
- the pixels a box covers are ``floor(x1) .. ceil(x2)`` by ``floor(y1) .. ceil(y2)`` (every pixel the box
  touches), at least one pixel wide and high;
- a box that is ``None`` or has a side under one pixel after clipping is *missing*, and the fallbacks below
  apply; each one is named in :attr:`Triple.fallbacks`.

Fallbacks:

- **body missing** → the whole image is the body (:data:`BODY_WHOLE_IMAGE`). Eq. 3 then masks the whole
  scene, so the scene branch is all zeros (-1 after normalisation). We chose this over "scene = the photo with
  only the face masked" because that alternative feeds the scene branch the very pixels the body branch
  sees, so its score and its CAM would present the person as "context" — misleading in an explainable demo.
  A constant scene is what the model also sees whenever a body box fills the frame (close-ups), so it is a
  state the model knows, meaning "no context evidence".
- **face missing** → the face is estimated from the top of the (possibly whole-image) body with
  :func:`sibnet.boxes.estimate_face_from_body` (:data:`FACE_ESTIMATED`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from sibnet.boxes import Box, clip_box, estimate_face_from_body, is_empty

# The branches in the order of Eq. 1 (SCM runs face → body → scene) and of the model's inputs.
BRANCHES: tuple[str, str, str] = ("face", "body", "scene")

BODY_WHOLE_IMAGE = "body missing: whole image used as body (scene all zeros)"
FACE_ESTIMATED = "face estimated from body"

DEFAULT_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
DEFAULT_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)


@dataclass(frozen=True, eq=False)
class Triple:
    """The three branch inputs of one person, with the geometry needed to map results back to the photo.

    Attributes:
        face: normalised face-branch tensor, float32 (3, size, size).
        body: normalised body-branch tensor (face box zeroed), float32 (3, size, size).
        scene: normalised scene-branch tensor (body box zeroed), float32 (3, size, size).
        face_box: the face box used, clipped to the image (estimated if the input had none).
        body_box: the body box used, clipped to the image (the whole image if the input had none).
        regions: per branch (face, body, scene), the rectangle in the image's pixel coordinates that the final
            ``size`` x ``size`` tensor covers after resize and crop; resizing a branch map to the region's
            size and pasting it at the region's corner puts it exactly over the photo. Computed from the
            box's integer pixel bounds (:func:`pixel_bounds`), the pixels actually cropped.
        fallbacks: human-readable notes for every fallback taken (:data:`BODY_WHOLE_IMAGE`,
            :data:`FACE_ESTIMATED`); empty when both boxes were usable.
        image_size: ``(width, height)`` of the original image.
    """

    face: torch.Tensor
    body: torch.Tensor
    scene: torch.Tensor
    face_box: Box
    body_box: Box
    regions: tuple[Box, Box, Box]
    fallbacks: tuple[str, ...]
    image_size: tuple[int, int]
    # The uint8 (3, size, size) images the tensors were normalised from (masked, resized, cropped).
    _display: tuple[torch.Tensor, torch.Tensor, torch.Tensor] = field(repr=False)

    @property
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(face, body, scene)``, in :data:`BRANCHES` order."""
        return self.face, self.body, self.scene

    def stack(self) -> torch.Tensor:
        """The three tensors stacked as (3 branches, 3, size, size); ``face, body, scene = t.stack()`` works."""
        return torch.stack(self.tensors)

    def as_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(face, body, scene)`` each with a leading batch dimension of one: (1, 3, size, size)."""
        return self.face[None], self.body[None], self.scene[None]

    def masked_images(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The masked face, body and scene images the network sees, un-normalised, as uint8 (size, size, 3)."""
        # Copies: without resampling (box side == resize) the display tensor is a view of the caller's photo.
        return tuple(np.array(t.permute(1, 2, 0).numpy()) for t in self._display)  # type: ignore[return-value]


def pixel_bounds(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """Integer pixel bounds ``(x1, y1, x2, y2)`` (exclusive ends) of a box: floor the start, ceil the end.

    The box is corner-normalised and clipped first; the result covers every pixel the box touches and is at
    least one pixel wide and high (inside the image), so a sliver box still crops something.
    """
    x1, y1, x2, y2 = clip_box(box, width, height)
    ix1 = min(math.floor(x1), width - 1)
    iy1 = min(math.floor(y1), height - 1)
    return ix1, iy1, max(math.ceil(x2), ix1 + 1), max(math.ceil(y2), iy1 + 1)


def _usable_box(box: Sequence[float] | None, width: int, height: int) -> Box | None:
    """The box clipped to the image, or None when it is missing or (after clipping) thinner than a pixel."""
    if box is None:
        return None
    clipped = clip_box(box, width, height)
    return None if is_empty(clipped) else clipped


def _as_chw_uint8(image: np.ndarray | Image.Image) -> torch.Tensor:
    """A (3, H, W) uint8 view of an RGB image (channels-last strides, which torchvision resizes fastest)."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array or a PIL image, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (0..255), got dtype {image.dtype}")
    if image.ndim == 2:  # greyscale: replicate, as PIL's convert("RGB") does
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be HxWx3 RGB, got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image is empty, shape {image.shape}")
    if not image.flags.writeable:
        # PIL hands out read-only arrays; torch warns about wrapping them. Nothing here writes to this view
        # (the masked branches are written on clones), so wrapping without a copy is safe.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(image).permute(2, 0, 1)
    return torch.from_numpy(image).permute(2, 0, 1)


def _crop_offsets(
    resize: int, size: int, train: bool, generator: torch.Generator | None
) -> list[tuple[int, int]]:
    """``(top, left)`` of the crop for each of the three branches."""
    if not train:
        # Same anchor as torchvision's center_crop: round((resize - size) / 2).
        c = round((resize - size) / 2.0)
        return [(c, c)] * 3
    # One draw for all six offsets; the branches get independent positions.
    draws = torch.randint(0, resize - size + 1, (3, 2), generator=generator).tolist()
    return [(int(top), int(left)) for top, left in draws]


def make_triple(
    image: np.ndarray | Image.Image,
    face_box: Sequence[float] | None,
    body_box: Sequence[float] | None,
    *,
    size: int = 224,
    resize: int = 230,
    train: bool = False,
    generator: torch.Generator | None = None,
    mean: Sequence[float] = DEFAULT_MEAN,
    std: Sequence[float] = DEFAULT_STD,
) -> Triple:
    """Build the face, body and scene inputs of one person (Eq. 3; §4.2 pre-processing).

    Args:
        image: the photo, HxWx3 uint8 RGB (a PIL image or an HxW greyscale array is converted).
        face_box: the person's face ``(x1, y1, x2, y2)`` in image pixels, or None. Missing/empty → estimated
            from the body's top (:data:`FACE_ESTIMATED`).
        body_box: the person's body box, or None. Missing/empty → the whole image (:data:`BODY_WHOLE_IMAGE`;
            the scene branch is then all zeros, see the module docstring for why).
        size: side of each output tensor (the crop).
        resize: side each masked image is resized to before cropping (aspect ratio not kept).
        train: random crops (independent per branch) when True, center crops when False.
        generator: the random source of the training crops (None: torch's global generator); the datasets
            pass one seeded per (seed, epoch, index), see :func:`item_generator`.
        mean: per-channel mean subtracted after scaling to [0, 1].
        std: per-channel std divided by; the defaults map [0, 1] to [-1, 1].

    Returns:
        A :class:`Triple`.

    Raises:
        ValueError: ``size`` > ``resize``, or an image that is not uint8 RGB.
    """
    if not 1 <= size <= resize:
        raise ValueError(f"need 1 <= size <= resize, got size={size}, resize={resize}")
    rgb = _as_chw_uint8(image)
    height, width = int(rgb.shape[1]), int(rgb.shape[2])
    fallbacks: list[str] = []

    body = _usable_box(body_box, width, height)
    if body is None:
        body = (0.0, 0.0, float(width), float(height))
        fallbacks.append(BODY_WHOLE_IMAGE)
    face = _usable_box(face_box, width, height)
    if face is None:
        face = estimate_face_from_body(body, width, height)
        fallbacks.append(FACE_ESTIMATED)

    fx1, fy1, fx2, fy2 = pixel_bounds(face, width, height)
    bx1, by1, bx2, by2 = pixel_bounds(body, width, height)

    face_img = rgb[:, fy1:fy2, fx1:fx2]  # a view: resizing reads it, nothing writes to it
    body_img = rgb[:, by1:by2, bx1:bx2].clone()
    # The part of the face box inside the body box, in body-crop coordinates (empty if they don't overlap).
    body_img[:, max(fy1 - by1, 0) : max(fy2 - by1, 0), max(fx1 - bx1, 0) : max(fx2 - bx1, 0)] = 0
    scene_img = rgb.clone()
    scene_img[:, by1:by2, bx1:bx2] = 0

    sources = (
        (face_img, (fx1, fy1, fx2, fy2)),
        (body_img, (bx1, by1, bx2, by2)),
        (scene_img, (0, 0, width, height)),
    )
    offsets = _crop_offsets(resize, size, train, generator)
    tensors: list[torch.Tensor] = []
    display: list[torch.Tensor] = []
    regions: list[Box] = []
    for (src, (x1, y1, x2, y2)), (top, left) in zip(sources, offsets):
        # uint8 in, uint8 out: torchvision's native uint8 antialiased bilinear kernel, then crop before the
        # float conversion so only size x size pixels are converted and normalised.
        resized = F.resize(src, [resize, resize], interpolation=F.InterpolationMode.BILINEAR, antialias=True)
        cropped = F.crop(resized, top, left, size, size)
        display.append(cropped)
        tensor = F.normalize(F.to_dtype(cropped, torch.float32, scale=True), list(mean), list(std))
        tensors.append(tensor.contiguous())
        # The resize maps pixel edges linearly (align_corners=False), so crop edges map back exactly.
        sx, sy = (x2 - x1) / resize, (y2 - y1) / resize
        regions.append((x1 + left * sx, y1 + top * sy, x1 + (left + size) * sx, y1 + (top + size) * sy))

    return Triple(
        face=tensors[0],
        body=tensors[1],
        scene=tensors[2],
        face_box=face,
        body_box=body,
        regions=(regions[0], regions[1], regions[2]),
        fallbacks=tuple(fallbacks),
        image_size=(width, height),
        _display=(display[0], display[1], display[2]),
    )


def batch_triples(
    triples: Sequence[Triple], device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack triples into ``(face, body, scene)`` batches, each (B, 3, size, size), optionally on ``device``."""
    if not triples:
        raise ValueError("batch_triples needs at least one triple")
    face, body, scene = (torch.stack(branch) for branch in zip(*(t.tensors for t in triples)))
    if device is not None:
        face, body, scene = face.to(device), body.to(device), scene.to(device)
    return face, body, scene


@dataclass(frozen=True)
class InputTransform:
    """A model's input recipe (§4.2): Eq. 3 masking, resize to ``resize``, crop to ``size``, normalise.

    Frozen and hashable, so callers can group models that share a recipe; built by
    :attr:`sibnet.config.ModelConfig.transform` from the checkpoint's config, so the pixels a checkpoint was
    trained on are the pixels it is served. Calling it on a photo and two boxes gives the :class:`Triple`.
    """

    size: int = 224  # side of each branch tensor (the crop)
    resize: int = 230  # side each masked image is resized to before cropping
    mean: tuple[float, float, float] = DEFAULT_MEAN  # per-channel mean after scaling to [0, 1]
    std: tuple[float, float, float] = DEFAULT_STD  # per-channel std; the defaults map [0, 1] to [-1, 1]

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if not 1 <= self.size <= self.resize:
            raise ValueError(f"need 1 <= size <= resize, got size={self.size}, resize={self.resize}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std are three numbers each, std positive")

    def __call__(
        self,
        image: np.ndarray | Image.Image,
        face_box: Sequence[float] | None,
        body_box: Sequence[float] | None,
        *,
        train: bool = False,
        generator: torch.Generator | None = None,
    ) -> Triple:
        """The person's :class:`Triple` (random crops when ``train``; see :func:`make_triple`)."""
        return make_triple(
            image,
            face_box,
            body_box,
            size=self.size,
            resize=self.resize,
            train=train,
            generator=generator,
            mean=self.mean,
            std=self.std,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "resize": self.resize, "mean": list(self.mean), "std": list(self.std)}


# --- the neutral input (what a region without evidence becomes) ---


def neutral_inputs(
    transform: InputTransform,
    batch: int = 1,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The neutral (face, body, scene) inputs, each (batch, 3, size, size): Eq. 3's all-zero masked image.

    Built by the recipe itself from an all-black photo with no boxes, so it is exactly what the model is fed
    for a region without evidence (every pixel -mean/std after normalisation), whatever the recipe.
    """
    black = np.zeros((transform.resize, transform.resize, 3), dtype=np.uint8)
    tensors = transform(black, None, None).tensors
    return tuple(t.to(device=device, dtype=dtype)[None].expand(batch, -1, -1, -1) for t in tensors)  # type: ignore[return-value]


def neutral_dropout(
    inputs: Sequence[torch.Tensor],
    transform: InputTransform,
    p: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A training batch with each branch of each item replaced by the neutral input with probability ``p``.

    Independent per item and branch, labels unchanged: a model trained on such batches learns that a neutral
    branch carries no evidence, which is what gives :func:`sibnet.attribution.branch_attributions` its
    meaning (that module's docstring). ``inputs`` is the (face, body, scene) batch, each (B, 3, S, S); it is not modified.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    inputs = tuple(inputs)
    if len(inputs) != 3 or len({tuple(x.shape) for x in inputs}) != 1 or inputs[0].ndim != 4:
        raise ValueError("inputs must be the (face, body, scene) batch, each (B, 3, S, S)")
    batch = inputs[0].shape[0]
    blank = neutral_inputs(transform, 1, inputs[0].device, inputs[0].dtype)
    drop = torch.rand(3, batch, generator=generator) < p
    return tuple(  # type: ignore[return-value]
        torch.where(drop[k].to(x.device)[:, None, None, None], o, x)
        for k, (x, o) in enumerate(zip(inputs, blank))
    )
