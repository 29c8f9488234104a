"""The on-disk format of a model: ``config.json`` (the :class:`ModelConfig`) + ``model.safetensors``.

``config.json`` holds the full :class:`ModelConfig` (model name, architecture, label names, input recipe),
so :func:`sibnet.checkpoints.load_model` rebuilds the exact network from the checkpoint alone. This module
writes the format and parses the config; finding and loading checkpoints (which builds models) is
:mod:`sibnet.checkpoints`, above the models.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from sibnet.config import ModelConfig
from sibnet.errors import CheckpointError

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT = "sibnet-checkpoint"
FORMAT_VERSION = 1


def save_pretrained(
    model: torch.nn.Module, directory: str | Path, training: dict[str, Any] | None = None
) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``directory`` (created if needed).

    Args:
        model: a :class:`sibnet.models.network.ContextEmotionNet` (DDP/compiled wrappers are unwrapped).
        directory: target folder.
        training: optional metadata (loss, dataset, metrics, seed...) stored under ``"training"``.

    Returns:
        The folder path.
    """
    from safetensors.torch import save_file

    model = getattr(model, "module", model)  # DistributedDataParallel
    model = getattr(model, "_orig_mod", model)  # torch.compile
    config: ModelConfig = model.config
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = out / (WEIGHTS_NAME + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt", "sibnet_model": config.name})
    os.replace(tmp, out / WEIGHTS_NAME)  # atomic: a crash never leaves a half-written checkpoint
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **config.to_dict()}
    if training is not None:
        meta["training"] = training
    (out / CONFIG_NAME).write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n")
    return out


def read_config(config_path: Path) -> tuple[ModelConfig, dict[str, Any]]:
    """Parse ``config.json`` into the model config and the training metadata."""
    try:
        meta = json.loads(Path(config_path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{config_path} is not valid JSON: {err}") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{config_path} is not a SIB-Net checkpoint config (missing format={FORMAT!r})")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{config_path} has format_version {meta['format_version']}; upgrade sibnet to read it"
        )
    training = meta.pop("training", {}) or {}
    for key in ("format", "format_version"):
        meta.pop(key, None)
    try:
        return ModelConfig.from_dict(meta), training
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{config_path}: invalid model config: {err}") from err
