"""Registered model builders (timm style) and the map from the paper's Table 2 rows to them.

``create_model(name, num_classes=..., **overrides)`` builds any registered variant; ``list_models()`` names
them. A builder is a function returning the :class:`ModelConfig` defaults of its variant; overrides replace
fields. Loss choices for the BCM rows live in :data:`TABLE2` next to the model name, because three rows of the
paper ("baseline+B (LDL)", "(LDL*)", "(LDL*+L1)") share one architecture and differ only in the loss.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sibnet.config import ModelConfig
from sibnet.labels import CAER_CLASSES, EMOTIC_CATEGORIES
from sibnet.losses import LossConfig
from sibnet.models.network import ContextEmotionNet

_REGISTRY: dict[str, Callable[[], dict[str, Any]]] = {}


def register_model(fn: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """Register ``fn`` (returning config defaults) under its function name."""
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, in registration order."""
    return list(_REGISTRY)


def _unknown(name: str) -> ValueError:
    return ValueError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")


def model_config(name: str, num_classes: int | None = None, **overrides: Any) -> ModelConfig:
    """The :class:`ModelConfig` :func:`create_model` would build, without building it."""
    if name not in _REGISTRY:
        raise _unknown(name)
    fields: dict[str, Any] = {"name": name, **_REGISTRY[name]()}
    labels = overrides.pop("labels", None)
    if labels is None and num_classes is not None:
        known = {len(EMOTIC_CATEGORIES): EMOTIC_CATEGORIES, len(CAER_CLASSES): CAER_CLASSES}
        labels = known.get(num_classes, tuple(f"class_{i}" for i in range(num_classes)))
        if num_classes == len(CAER_CLASSES):
            overrides.setdefault("multi_label", False)
    if labels is not None:
        if num_classes is not None and len(labels) != num_classes:
            raise ValueError(f"num_classes={num_classes} but {len(labels)} labels were given")
        fields["labels"] = tuple(labels)
    fields.update(overrides)
    return ModelConfig(**fields)


def build_model(config: ModelConfig, pretrained: bool = False) -> ContextEmotionNet:
    """Build the network described by ``config`` (e.g. one read from a checkpoint)."""
    if config.name not in _REGISTRY:
        raise _unknown(config.name)
    return ContextEmotionNet(config, pretrained=pretrained)


def create_model(
    name: str, num_classes: int | None = None, pretrained: bool = False, **overrides: Any
) -> ContextEmotionNet:
    """Build a registered model.

    Args:
        name: one of :func:`list_models`.
        num_classes: 26 (EMOTIC, the default label set) or 7 (CAER-S) pick the benchmark's labels; other
            counts get generic names unless ``labels=`` is passed.
        pretrained: start each branch from torchvision's ImageNet ResNet-18; fails with a clear message when
            the weights are neither cached nor downloadable (never silently random).
        **overrides: any :class:`ModelConfig` field, e.g. ``layer4_stride=1``, ``labels=(...)``.

    Raises:
        ValueError: unknown name (the message lists the valid ones) or invalid override.
    """
    return build_model(model_config(name, num_classes, **overrides), pretrained=pretrained)


# --- single-branch models (Table 2, first three rows) ---
@register_model
def face() -> dict[str, Any]:
    return {"branches": ("face",)}


@register_model
def body() -> dict[str, Any]:
    return {"branches": ("body",)}


@register_model
def scene() -> dict[str, Any]:
    return {"branches": ("scene",)}


# --- fusion baselines (Table 1) ---
@register_model
def concat() -> dict[str, Any]:
    """The paper's 'baseline' and Table 1's 'concatenation'."""
    return {"fusion": "concat"}


@register_model
def attention() -> dict[str, Any]:
    return {"fusion": "attention"}


# --- baseline + S (SCM cells) ---
@register_model
def concat_scm_rnn() -> dict[str, Any]:
    return {"scm": "rnn"}


@register_model
def concat_scm_lstm() -> dict[str, Any]:
    return {"scm": "lstm"}


@register_model
def concat_scm_gru() -> dict[str, Any]:
    return {"scm": "gru"}


# --- baseline + I (ICM variants) ---
@register_model
def concat_icm_lf() -> dict[str, Any]:
    return {"icm": "lf"}


@register_model
def concat_icm_clf() -> dict[str, Any]:
    return {"icm": "clf"}


@register_model
def concat_icm_gclf() -> dict[str, Any]:
    return {"icm": "gclf"}


# --- baseline + B: branch heads for the BCM loss ---
@register_model
def concat_bcm() -> dict[str, Any]:
    return {"branch_heads": True}


# --- combinations ---
@register_model
def concat_scm_gru_icm_gclf() -> dict[str, Any]:
    return {"scm": "gru", "icm": "gclf"}


@register_model
def concat_scm_gru_bcm() -> dict[str, Any]:
    return {"scm": "gru", "branch_heads": True}


@register_model
def sibnet() -> dict[str, Any]:
    """The full model: SCM (GRU, Eq. 2) + ICM (gclf) + branch heads for BCM (LDL* + L1)."""
    return {"scm": "gru", "icm": "gclf", "branch_heads": True}


@dataclass(frozen=True)
class Table2Row:
    """One row of the paper's Table 2: the model to build, the loss to train it with, the paper's number."""

    label: str
    model: str
    loss: LossConfig
    emotic_map: float  # EMOTIC mAP (%) reported by the paper


_BCE = LossConfig()
_LDL_BCE = LossConfig(bcm="ldl", bcm_loss="bce")
_LDLSTAR_BCE = LossConfig(bcm="ldl*", bcm_loss="bce")
_LDLSTAR_L1 = LossConfig(bcm="ldl*", bcm_loss="l1")

TABLE2: dict[str, Table2Row] = {
    r.label: r
    for r in (
        Table2Row("face", "face", _BCE, 32.66),
        Table2Row("body", "body", _BCE, 29.34),
        Table2Row("scene", "scene", _BCE, 29.57),
        Table2Row("baseline", "concat", _BCE, 33.33),
        Table2Row("baseline+S (vanilla RNN)", "concat_scm_rnn", _BCE, 34.17),
        Table2Row("baseline+S (LSTM)", "concat_scm_lstm", _BCE, 33.99),
        Table2Row("baseline+S (GRU)", "concat_scm_gru", _BCE, 34.21),
        Table2Row("baseline+I (lf)", "concat_icm_lf", _BCE, 33.71),
        Table2Row("baseline+I (clf)", "concat_icm_clf", _BCE, 34.09),
        Table2Row("baseline+I (gclf)", "concat_icm_gclf", _BCE, 34.33),
        Table2Row("baseline+B (LDL)", "concat_bcm", _LDL_BCE, 33.58),
        Table2Row("baseline+B (LDL*)", "concat_bcm", _LDLSTAR_BCE, 34.02),
        Table2Row("baseline+B (LDL*+L1)", "concat_bcm", _LDLSTAR_L1, 34.12),
        Table2Row("baseline+S (GRU)+I (gclf)", "concat_scm_gru_icm_gclf", _BCE, 35.14),
        Table2Row("baseline+S (GRU)+B (LDL*+L1)", "concat_scm_gru_bcm", _LDLSTAR_L1, 34.57),
        Table2Row("baseline+S (GRU)+I (gclf)+B (LDL*+L1)", "sibnet", _LDLSTAR_L1, 35.41),
    )
}

# Table 1: the fusion methods compared (EMOTIC mAP %, CAER-S accuracy %; None = not reported).
TABLE1: dict[str, tuple[str, LossConfig, float, float | None]] = {
    "concatenation": ("concat", _BCE, 33.33, None),
    "attention": ("attention", _BCE, 33.13, None),
    "SIB-Net": ("sibnet", _LDLSTAR_L1, 35.41, 74.56),
}


def _squash(text: str) -> str:
    return re.sub(r"[\s_]+", "", text).lower().replace("vanillarnn", "rnn")


def resolve_variant(label_or_name: str) -> Table2Row:
    """Find a Table-2 row by its label (spacing and case ignored, e.g. 'baseline+S(GRU)') or a model name.

    A bare model name resolves to that model with the loss of its last Table-2 row (for ``concat_bcm`` that is
    the paper's choice, LDL* + L1; use the label to pick another); models outside Table 2 (``attention``) get
    the loss of their Table-1 row.
    """
    key = _squash(label_or_name)
    for row in TABLE2.values():
        if _squash(row.label) == key:
            return row
    if label_or_name in _REGISTRY:
        rows = [row for row in TABLE2.values() if row.model == label_or_name]
        if rows:
            return rows[-1]
        loss = next((v[1] for v in TABLE1.values() if v[0] == label_or_name), _BCE)
        return Table2Row(label_or_name, label_or_name, loss, float("nan"))
    raise ValueError(
        f"unknown variant {label_or_name!r}; Table-2 rows: {'; '.join(TABLE2)}; model names: {', '.join(list_models())}"
    )
