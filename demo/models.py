"""Where the Figure-5 models come from and what the analyzer keeps of them: checkpoint sources, the loaded
models (float32 original + prepared backbone), and the cache of backbone features that lets
:meth:`demo.pipeline.Analyzer.explain` and :meth:`~demo.pipeline.Analyzer.attribute` skip the backbone.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from demo.results import MODELS
from sibnet.attribution import BranchAttributions
from sibnet.data.masking import InputTransform
from sibnet.errors import CheckpointError
from sibnet.inference import InferenceModel


@dataclass(frozen=True)
class ModelSource:
    """Where one Figure-5 model's checkpoint is: a folder or Hub repo id, optionally a subfolder in it."""

    path: str | Path
    subfolder: str | None = None


@dataclass
class LoadedModel:
    key: str
    model: torch.nn.Module  # the float32 model: its head scores and explains
    trained: bool
    source: str
    fast: (
        InferenceModel  # its backbone laid out for the device (sibnet.inference): the forward users wait for
    )


@dataclass(frozen=True)
class CachedFeatures:
    features: dict[str, tuple[torch.Tensor, ...]]  # model key → final maps of all people
    regions: dict[InputTransform, list[tuple]]  # recipe → each person's branch regions (analysed pixels)
    inputs: dict[InputTransform, tuple[torch.Tensor, ...]]  # recipe → the batched masked triples
    attributions: dict[str, BranchAttributions] = field(default_factory=dict)  # model key → all people


class FeatureCache:
    """The backbone features of the last analyses, by analysis key (thread-safe, least recently used out)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[str, CachedFeatures] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, key: str, value: CachedFeatures) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def get(self, key: str) -> CachedFeatures | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value


def figure5_sources(
    weights: str | Path | None, per_model: Mapping[str, str | Path | None] | None = None
) -> dict[str, ModelSource | None]:
    """Per model, its checkpoint: ``per_model[key]`` if given, else ``<weights>/<key>``, else None (untrained)."""
    per_model = per_model or {}
    out: dict[str, ModelSource | None] = {}
    for key in MODELS:
        explicit = per_model.get(key)
        if explicit:
            out[key] = ModelSource(explicit)
        elif weights:
            out[key] = ModelSource(weights, key)
        else:
            out[key] = None
    return out


def check_weights_folder(weights: str | Path | None, sources: Mapping[str, ModelSource | None]) -> None:
    """A local ``weights`` folder must hold at least one of the three checkpoints it is asked for."""
    if weights is None:
        return
    local = Path(weights).expanduser()
    asked = [key for key, src in sources.items() if src is not None and src.subfolder is not None]
    if not asked or not local.exists():
        return  # a Hub repo id, or a missing path (load_model names it)
    if not local.is_dir():
        raise CheckpointError(f"{local} is a file; pass a folder holding sibnet/, concat/ and attention/")
    if any((local / key).is_dir() for key in asked):
        return
    if (local / "config.json").is_file():
        raise CheckpointError(
            f"{local} is a single checkpoint, not a folder of the three models; pass it as "
            "--sibnet-weights (or --concat-weights / --attention-weights), or give a folder holding "
            "sibnet/, concat/ and attention/"
        )
    raise CheckpointError(f"{local} holds none of the checkpoint folders sibnet/, concat/, attention/")
