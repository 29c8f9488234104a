"""SIB-Net: Sequential Interactive Biased Network for context-aware emotion recognition.

Li, Peng, Ding, "Sequential Interactive Biased Network for Context-Aware Emotion Recognition" (IJCB 2021).
This package holds the research library: models and their ablations (paper §3, Table 2), losses (§3.4),
data and masking (§4.2, Eq. 3), detectors, training, evaluation and branch CAMs. It never imports the
demo application or gradio.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public API, imported lazily (PEP 562) so that `import sibnet.labels` or `import sibnet.boxes` stays cheap
# and importing the package never builds or loads a model.
_EXPORTS: dict[str, str] = {
    "ModelConfig": "sibnet.config",
    "LossConfig": "sibnet.losses",
    "ContextLoss": "sibnet.losses",
    "ContextEmotionNet": "sibnet.models.network",
    "ModelOutput": "sibnet.models.heads",
    "create_model": "sibnet.models.registry",
    "build_model": "sibnet.models.registry",
    "model_config": "sibnet.models.registry",
    "list_models": "sibnet.models.registry",
    "register_model": "sibnet.models.registry",
    "resolve_variant": "sibnet.models.registry",
    "TABLE1": "sibnet.models.registry",
    "TABLE2": "sibnet.models.registry",
    "load_model": "sibnet.checkpoints",
    "save_pretrained": "sibnet.checkpoints",
    "CheckpointError": "sibnet.checkpoints",
    "PretrainedWeightsUnavailable": "sibnet.models.backbone",
    "EMOTIC_CATEGORIES": "sibnet.labels",
    "CAER_CLASSES": "sibnet.labels",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sibnet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
