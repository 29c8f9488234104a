"""Data for SIB-Net: the masked branch inputs (paper Eq. 3), EMOTIC and CAER-S (§4.1), their box caches, and
planted-cue synthetic datasets in the same on-disk formats.

- :func:`make_triple` / :func:`batch_triples` (:mod:`sibnet.data.masking`): the one function that builds the
  face, body and scene tensors, for training, evaluation, the CLI and the demo alike.
- :class:`EmoticDataset` (:mod:`sibnet.data.emotic`), :class:`CaerDataset` (:mod:`sibnet.data.caer`).
- :func:`build_box_cache` (:mod:`sibnet.data.boxes`, ``python -m sibnet.data.boxes``): the face/body boxes
  the datasets lack, detected once.
- :func:`make_synthetic_emotic`, :func:`make_synthetic_caer` (:mod:`sibnet.data.synthetic`,
  ``python -m sibnet.data.synthetic``).

Submodules are imported on first use of a name (PEP 562), so ``python -m sibnet.data.synthetic`` does not
pull in torch, and ``python -m sibnet.data.boxes`` runs without the package having imported it first.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any


class DatasetError(ValueError):
    """A dataset on disk is malformed: bad annotations, an unreadable image, an unknown class folder, an empty
    split. The message always names the file or folder at fault."""


# Public name → submodule that defines it.
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(
        (
            "BODY_WHOLE_IMAGE",
            "FACE_ESTIMATED",
            "Triple",
            "TripleDataset",
            "batch_triples",
            "item_generator",
            "make_triple",
            "pixel_bounds",
            "read_rgb",
        ),
        "masking",
    ),
    **dict.fromkeys(
        (
            "EmoticAnnotation",
            "EmoticDataset",
            "EmoticRecord",
            "find_emotic_annotations",
            "read_emotic_annotations",
            "read_emotic_csv",
            "read_emotic_mat",
        ),
        "emotic",
    ),
    **dict.fromkeys(("CaerDataset", "CaerRecord", "list_caer_images", "stratified_val_split"), "caer"),
    **dict.fromkeys(
        (
            "BoxCacheSummary",
            "CachedBoxes",
            "build_box_cache",
            "caer_key",
            "central_boxes",
            "default_cache_path",
            "emotic_key",
            "read_box_cache",
        ),
        "boxes",
    ),
    **dict.fromkeys(
        ("EMOTIC_PLANTED", "PALETTE", "SyntheticInfo", "make_synthetic_caer", "make_synthetic_emotic"),
        "synthetic",
    ),
}

__all__ = [
    "BODY_WHOLE_IMAGE",
    "EMOTIC_PLANTED",
    "FACE_ESTIMATED",
    "PALETTE",
    "BoxCacheSummary",
    "CachedBoxes",
    "CaerDataset",
    "CaerRecord",
    "DatasetError",
    "EmoticAnnotation",
    "EmoticDataset",
    "EmoticRecord",
    "SyntheticInfo",
    "Triple",
    "TripleDataset",
    "batch_triples",
    "build_box_cache",
    "caer_key",
    "central_boxes",
    "default_cache_path",
    "emotic_key",
    "find_emotic_annotations",
    "item_generator",
    "list_caer_images",
    "make_synthetic_caer",
    "make_synthetic_emotic",
    "make_triple",
    "pixel_bounds",
    "read_box_cache",
    "read_emotic_annotations",
    "read_emotic_csv",
    "read_emotic_mat",
    "read_rgb",
    "stratified_val_split",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sibnet.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"sibnet.data.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:
    from sibnet.data.boxes import (
        BoxCacheSummary,
        CachedBoxes,
        build_box_cache,
        caer_key,
        central_boxes,
        default_cache_path,
        emotic_key,
        read_box_cache,
    )
    from sibnet.data.caer import CaerDataset, CaerRecord, list_caer_images, stratified_val_split
    from sibnet.data.emotic import (
        EmoticAnnotation,
        EmoticDataset,
        EmoticRecord,
        find_emotic_annotations,
        read_emotic_annotations,
        read_emotic_csv,
        read_emotic_mat,
    )
    from sibnet.data.masking import (
        BODY_WHOLE_IMAGE,
        FACE_ESTIMATED,
        Triple,
        TripleDataset,
        batch_triples,
        item_generator,
        make_triple,
        pixel_bounds,
        read_rgb,
    )
    from sibnet.data.synthetic import (
        EMOTIC_PLANTED,
        PALETTE,
        SyntheticInfo,
        make_synthetic_caer,
        make_synthetic_emotic,
    )
