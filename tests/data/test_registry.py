"""The dataset registry (sibnet.data.registry): datasets by name, their recipe, and a third dataset in one call."""

from __future__ import annotations

from pathlib import Path

import pytest

from sibnet.data import registry
from sibnet.data.caer import CaerDataset, box_jobs
from sibnet.data.masking import InputTransform
from sibnet.data.registry import DatasetSpec, get_dataset, list_datasets, register_dataset
from sibnet.labels import CAER_CLASSES, EMOTIC_CATEGORIES
from sibnet.training.cli import build_parser, resolve_config


def test_the_two_benchmarks_and_their_recipe():
    assert list_datasets()[:2] == ["emotic", "caer"]
    emotic, caer = get_dataset("emotic"), get_dataset("caer")
    assert emotic.labels == EMOTIC_CATEGORIES and emotic.multi_label and emotic.metric == "mAP"
    assert caer.labels == CAER_CLASSES and not caer.multi_label and caer.metric == "accuracy"
    # §4.2: batch 32 × 10 epochs (EMOTIC), 64 × 20 (CAER-S)
    assert (emotic.batch_size, emotic.epochs, caer.batch_size, caer.epochs) == (32, 10, 64, 20)
    assert (emotic.paper_key, caer.paper_key) == ("emotic_map", "caer_osa")


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown dataset 'affectnet'; valid names: emotic, caer"):
        get_dataset("affectnet")
    with pytest.raises(ValueError, match="registered already"):
        register_dataset(get_dataset("caer"))


def test_options_a_dataset_does_not_take_are_refused(caer_root: Path):
    caer = get_dataset("caer")
    with pytest.raises(ValueError, match=r"CAER-S does not take annotations \(its options: val_fraction"):
        caer.open(caer_root, "test", annotations="Annotations.mat")
    ds = caer.open(caer_root, "test", transform=InputTransform(32, 36), annotations=None)  # None: default
    assert len(ds) == 14 and ds.transform == InputTransform(32, 36)


def test_a_third_dataset_is_one_registration(caer_root: Path, monkeypatch: pytest.MonkeyPatch):
    spec = DatasetSpec(
        name="caer_again",
        title="CAER-S (again)",
        labels=CAER_CLASSES,
        multi_label=False,
        batch_size=8,
        epochs=3,
        paper_key="caer_osa",
        dataset_class=CaerDataset,
        box_jobs=box_jobs,
        box_detection="principal_person",
        items_unit="frames",
        item_unit="frame",
        options=("val_fraction",),
    )
    monkeypatch.setattr(registry, "_REGISTRY", {**registry._REGISTRY})
    register_dataset(spec)
    assert get_dataset("caer_again") is spec
    # The training CLI accepts it and takes its recipe and labels from the spec.
    args = build_parser().parse_args(
        ["--dataset", "caer_again", "--data-root", str(caer_root), "--model", "face"]
    )
    cfg = resolve_config(args)
    assert (cfg.batch_size, cfg.epochs) == (8, 3) and cfg.model.labels == CAER_CLASSES
    assert not cfg.model.multi_label and cfg.metric == "accuracy"
    with pytest.raises(ValueError, match="box_detection"):
        DatasetSpec(**{**spec.__dict__, "name": "x", "box_detection": "guess"})
