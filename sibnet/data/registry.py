"""The datasets, registered by name with the same contract as the model registry (timm style).

A :class:`DatasetSpec` holds everything the rest of the library needs to know about a benchmark: its label
list and whether it is multi-label (paper §4.1), the per-dataset part of the training recipe (§4.2: batch
size and epochs), the metric and the key of the paper's numbers, the dataset class that serves its items,
and how the box-cache builder finds and detects its items. Training, evaluation, the box cache and the
label sets look a dataset up with :func:`get_dataset`; an unknown name raises an error listing the valid
ones. Adding a dataset is one module with its dataset class and one :func:`register_dataset` call here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sibnet.data.base import TripleDataset
from sibnet.data.boxcache import BoxJob
from sibnet.data.caer import CaerDataset
from sibnet.data.caer import box_jobs as caer_box_jobs
from sibnet.data.emotic import EmoticDataset
from sibnet.data.emotic import box_jobs as emotic_box_jobs
from sibnet.data.masking import InputTransform
from sibnet.labels import CAER_CLASSES, EMOTIC_CATEGORIES

# How the box-cache builder finds a person's boxes: "face_in_body" (the dataset annotates body boxes; MTCNN
# runs inside each) or "principal_person" (no boxes; MTCNN + YOLO on the whole frame, the labelled person
# picked). See sibnet.data.boxes.
BOX_DETECTIONS = ("face_in_body", "principal_person")


@dataclass(frozen=True)
class DatasetSpec:
    """One benchmark, as the library uses it."""

    name: str  # registry key and CLI value, e.g. "emotic"
    title: str  # display name, e.g. "EMOTIC"
    labels: tuple[str, ...]  # class names in logit order
    multi_label: bool  # sigmoid scores + mAP, or softmax + accuracy
    batch_size: int  # §4.2 training batch
    epochs: int  # §4.2 training epochs
    paper_key: str  # key of this dataset's numbers in the paper tables (sibnet.models.registry)
    dataset_class: type[TripleDataset]  # serves (face, body, scene, target) items of a split
    box_jobs: Callable[[Path, str | Path | None], tuple[list[BoxJob], list[str]]]  # items to detect boxes for
    box_detection: str  # one of BOX_DETECTIONS
    items_unit: str  # what one item is, plural ("people", "frames")
    item_unit: str  # ... and singular
    options: tuple[str, ...] = ()  # dataset-specific keyword arguments its class takes (besides boxes)
    train_items: int = 0  # approximate size of the release's train split (time estimates)
    val_items: int = 0  # ... and of its validation split
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.box_detection not in BOX_DETECTIONS:
            raise ValueError(f"box_detection must be one of {BOX_DETECTIONS}, got {self.box_detection!r}")

    @property
    def metric(self) -> str:
        """The primary metric: ``"mAP"`` (multi-label) or ``"accuracy"`` (single-label, the paper's OSA)."""
        return "mAP" if self.multi_label else "accuracy"

    def open(
        self,
        data_root: str | Path,
        split: str,
        *,
        transform: InputTransform | None = None,
        train: bool | None = None,
        seed: int = 0,
        boxes: str | Path | bool | None = None,
        skip_unreadable: bool = False,
        **options: Any,
    ) -> TripleDataset:
        """Open a split with the given input recipe.

        Args:
            data_root: the dataset folder.
            split: ``"train"``, ``"val"`` or ``"test"``.
            transform: the model's input recipe (``model.config.transform``).
            train: random crops; None → only for the train split.
            seed: seed of the per-item crop generators.
            boxes: box cache (default: ``<data_root>/sibnet_boxes_<name>.jsonl``).
            skip_unreadable: skip images that cannot be decoded instead of raising (:mod:`sibnet.data.base`).
            **options: dataset-specific settings (:attr:`options`); a None value means "the default".

        Raises:
            ValueError: an option this dataset does not take (the message names the ones it does).
            FileNotFoundError, DatasetError: missing or malformed data (the message names the file).
        """
        given = {k: v for k, v in options.items() if v is not None}
        foreign = sorted(set(given) - set(self.options))
        if foreign:
            takes = ", ".join(self.options) or "none"
            raise ValueError(f"{self.title} does not take {', '.join(foreign)} (its options: {takes})")
        return self.dataset_class(
            data_root,
            split,
            transform=transform,
            train=train,
            seed=seed,
            boxes=boxes,
            skip_unreadable=skip_unreadable,
            **given,
        )


_REGISTRY: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Register ``spec`` under its name (a second registration of a name is an error)."""
    if spec.name in _REGISTRY:
        raise ValueError(f"dataset {spec.name!r} is registered already")
    _REGISTRY[spec.name] = spec
    return spec


def list_datasets() -> list[str]:
    """Names accepted by :func:`get_dataset`, in registration order."""
    return list(_REGISTRY)


def get_dataset(name: str) -> DatasetSpec:
    """The spec of a registered dataset.

    Raises:
        ValueError: unknown name; the message lists the valid ones.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(list_datasets())}") from None


register_dataset(
    DatasetSpec(
        name="emotic",
        title="EMOTIC",
        labels=EMOTIC_CATEGORIES,
        multi_label=True,
        # §4.2: "a batch size of 32 for EMOTIC ... 10 epochs for EMOTIC"
        batch_size=32,
        epochs=10,
        paper_key="emotic_map",
        dataset_class=EmoticDataset,
        box_jobs=emotic_box_jobs,
        box_detection="face_in_body",
        items_unit="people",
        item_unit="person",
        options=("annotations",),
        # The release's splits (people), rounded; validation adds a forward pass over them each epoch.
        train_items=23_300,
        val_items=3_300,
    )
)
register_dataset(
    DatasetSpec(
        name="caer",
        title="CAER-S",
        labels=CAER_CLASSES,
        multi_label=False,
        # §4.2: "a batch size of 64 for CAER-S ... 20 epochs for CAER-S"
        batch_size=64,
        epochs=20,
        paper_key="caer_osa",
        dataset_class=CaerDataset,
        box_jobs=caer_box_jobs,
        box_detection="principal_person",
        items_unit="frames",
        item_unit="frame",
        options=("val_fraction", "val_seed"),
        train_items=44_000,
        val_items=4_900,
    )
)
