"""The dataset base of EMOTIC and CAER-S: records with boxes → the model's input recipe → training items.

Every item goes through the model's :class:`~sibnet.data.masking.InputTransform` (the dataset is opened with
``transform=model.config.transform``), so the pixels a checkpoint trains and evaluates on are the pixels the
demo serves it. Images are decoded by :func:`read_rgb`, in raw pixel order (no EXIF rotation, like MATLAB's
``imread`` that produced the datasets' boxes).

Unreadable images (a truncated JPEG, a file that is not an image) never stop a run that asks to skip them
(``skip_unreadable=True``, what ``python -m sibnet.train`` and ``python -m sibnet.evaluate`` do unless
``--strict``): a file the box cache found unreadable is dropped when the dataset is opened, and a file that
fails to decode when read gives an item with ``"ok": False`` (zero tensors) that training and evaluation leave
out. Both are listed in ``dataset.skipped`` / reported by the caller (:class:`Skipped`). Without it (the
default, and ``--strict``), the first such file raises :class:`~sibnet.errors.DatasetError`. A *missing* file
is never skipped: it means a wrong data root or an incomplete download, and the datasets refuse it when opened.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from sibnet.data.masking import InputTransform, Triple
from sibnet.errors import DatasetError, UnreadableImages
from sibnet.io import open_pil


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed mixed from (seed, epoch, index) by numpy's SeedSequence (well spread, no collisions of
    the kind ``seed + epoch * n + index`` has)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint64)[0] >> 1)


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The torch.Generator of one item's training crops; the same (seed, epoch, index) gives the same crops in
    any process, so DataLoader workers and DDP ranks agree and runs are reproducible."""
    return torch.Generator().manual_seed(item_seed(seed, epoch, index))


def read_rgb(path: Path) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB.

    Raises:
        FileNotFoundError: the file does not exist (the message names it).
        DatasetError: the file exists but cannot be decoded (the message names it).
    """
    try:
        with open_pil(path) as img:
            return np.asarray(img.convert("RGB"))
    except FileNotFoundError:
        raise FileNotFoundError(f"image file {path} does not exist") from None
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise DatasetError(f"cannot read image {path}: {err}") from err


@dataclass(frozen=True)
class Skipped:
    """One image left out because it cannot be decoded."""

    image: str  # the file
    reason: str  # the decoder's error
    found_by: str  # "box cache" (status "unreadable" there) or "loader" (failed when read)


def refuse_unreadable(found: Sequence[Skipped], split: str, cache: Path | None) -> None:
    """The fail-fast rule (``skip_unreadable=False``, ``--strict``) for images the box cache marks unreadable.

    Raises:
        UnreadableImages: naming how many and the first few.
    """
    if not found:
        return
    shown = "; ".join(f"{s.image} ({s.reason})" for s in found[:3]) + (" ..." if len(found) > 3 else "")
    raise UnreadableImages(
        f"{len(found)} image(s) of the {split} split are unreadable according to the box cache {cache}: {shown}; "
        "replace them, or leave out --strict to skip them"
    )


class TripleDataset(Dataset):
    """Base of the EMOTIC and CAER-S datasets: records with boxes → :func:`make_triple` items.

    Subclasses fill ``self.records`` with objects having ``path``, ``face_box``, ``body_box`` and ``target``
    (a float32 numpy vector), and set ``labels`` and ``multi_label``.

    Items are dicts ``{"face", "body", "scene": (3, size, size) float32 (the transform's size), "target": (K,) float32,
    "index": int}`` (subclasses may add keys); with ``skip_unreadable`` also ``"ok": bool`` and ``"error": str``
    ("" when ok), see the module docstring.

    Reproducible crops: in training mode item ``i`` is cropped with :func:`item_generator` seeded from
    ``(seed, epoch, i)``. Call :meth:`set_epoch` before each epoch (like ``DistributedSampler.set_epoch``), so
    crops differ across epochs yet are the same in every worker and on every rank. With
    ``persistent_workers=True`` the workers keep the dataset copy of the first epoch; use non-persistent
    workers (the default) or the epoch will not advance there.
    """

    labels: tuple[str, ...] = ()
    multi_label: bool = False

    def __init__(
        self, *, transform: InputTransform | None, train: bool, seed: int, skip_unreadable: bool = False
    ) -> None:
        self.transform = transform if transform is not None else InputTransform()
        self.train = train
        self.seed = seed
        self.epoch = 0
        self.records: list[Any] = []
        # True: unreadable images are skipped (see the module docstring); False: they raise.
        self.skip_unreadable = skip_unreadable
        self.skipped: list[Skipped] = []  # dropped when opened (found by the box cache)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random crops :meth:`__getitem__` draws (training mode only)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def triple(self, index: int) -> Triple:
        """The :class:`Triple` of record ``index`` (image read from disk), as :meth:`__getitem__` builds it."""
        rec = self.records[index]
        generator = item_generator(self.seed, self.epoch, index) if self.train else None
        return self.transform(
            read_rgb(rec.path), rec.face_box, rec.body_box, train=self.train, generator=generator
        )

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self.records):
            raise IndexError(f"index {index} out of range for {len(self.records)} records")
        target = torch.tensor(self.records[index].target, dtype=torch.float32)
        if not self.skip_unreadable:
            t = self.triple(index)
            return {"face": t.face, "body": t.body, "scene": t.scene, "target": target, "index": index}
        try:
            t = self.triple(index)
        except (OSError, DatasetError) as err:  # decoding failed (or the file vanished since it was listed)
            blank = torch.zeros(3, self.transform.size, self.transform.size)
            return {
                "face": blank,
                "body": blank.clone(),
                "scene": blank.clone(),
                "target": target,
                "index": index,
                "ok": False,
                "error": str(err),
            }
        return {
            "face": t.face,
            "body": t.body,
            "scene": t.scene,
            "target": target,
            "index": index,
            "ok": True,
            "error": "",
        }

    @property
    def num_classes(self) -> int:
        return len(self.labels)


def check_disjoint(splits: Mapping[str, Any]) -> None:
    """No image in two splits (a train/test leak would make every score meaningless).

    Args:
        splits: split name → dataset (anything with ``records`` holding a ``path``); None entries are skipped.

    Raises:
        DatasetError: two splits share an image; the message names both splits, the count and one image.
    """
    seen: dict[str, str] = {}
    for name, dataset in splits.items():
        if dataset is None:
            continue
        mine = {str(Path(r.path).resolve()) for r in dataset.records}
        for path in sorted(mine):
            other = seen.get(path)
            if other is not None and other != name:
                shared = sum(1 for p in mine if seen.get(p) == other)
                raise DatasetError(
                    f"the {other} and {name} splits share {shared} image(s), e.g. {path}: splits must be "
                    "disjoint (check the annotation files each split was read from)"
                )
        for path in mine:
            seen.setdefault(path, name)
