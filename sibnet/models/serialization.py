"""The on-disk format of a model: ``config.json`` (the :class:`ModelConfig`) + ``model.safetensors``.

``config.json`` holds the full :class:`ModelConfig` (model name, architecture, label names, input recipe),
so :func:`sibnet.checkpoints.load_model` rebuilds the exact network from the checkpoint alone. This module
writes the format and parses the config; finding and loading checkpoints (which builds models) is
:mod:`sibnet.checkpoints`, above the models.
"""

from __future__ import annotations

import json
import math
import os
import types
import typing
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


MAX_CONFIG_BYTES = 1 << 20  # a config with EMOTIC's 26 labels is ~1 kB; 1 MiB leaves room for any notes
MAX_CONFIG_DEPTH = 16  # the format nests 3 deep (training -> metrics -> values); json itself stops at ~1000
MAX_NAME = 200  # characters in a model name, a label, a variant key ("Doubt/Confusion" is 15)
MAX_INPUT_SIZE = 1024  # input_size / resize: the paper uses 224 / 230; larger would only exhaust memory


def read_config(config_path: Path) -> tuple[ModelConfig, dict[str, Any]]:
    """Parse ``config.json`` into the model config and the training metadata.

    Everything in the file is checked before the config object is built, so a broken or hostile file is
    one :class:`CheckpointError` naming the field at fault, never a ``TypeError`` or ``RecursionError``
    from deeper down: its size, its encoding and JSON syntax, its nesting depth, non-finite numbers
    (``NaN`` in a model field; the training notes may record a NaN metric), ``format`` / ``format_version``, the type of every field (against :class:`ModelConfig`'s
    annotations), unknown keys, and sizes that only serve to exhaust memory.

    Raises:
        CheckpointError: the file is unreadable, too large, or not a valid SIB-Net config.
    """
    meta = _load_json(Path(config_path))
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{config_path} is not a SIB-Net checkpoint config (missing format={FORMAT!r})")
    version = meta.get("format_version", FORMAT_VERSION)  # configs written before the field existed: 1
    if not _is_int(version) or version < 1:
        raise CheckpointError(
            f"{config_path}: format_version must be an integer from 1 to {FORMAT_VERSION}, got {_show(version)}"
        )
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{config_path} has format_version {version}; upgrade sibnet to read it")
    training = meta.pop("training", None)
    if training is None:
        training = {}
    if not isinstance(training, dict):
        raise CheckpointError(f"{config_path}: 'training' must be an object, got {_show(training)}")
    for key in ("format", "format_version"):
        meta.pop(key, None)
    _check_fields(meta, config_path)
    try:
        return ModelConfig.from_dict(meta), training
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{config_path}: invalid model config: {err}") from err


def _load_json(path: Path) -> Any:
    """The parsed file, refusing what ``json`` would choke on or accept too readily."""

    try:
        with path.open("rb") as file:
            raw = file.read(MAX_CONFIG_BYTES + 1)  # never more, whatever size the file claims
    except OSError as err:
        raise CheckpointError(f"{path} cannot be read: {err}") from err
    if len(raw) > MAX_CONFIG_BYTES:
        raise CheckpointError(f"{path} is over {MAX_CONFIG_BYTES >> 20} MiB: not a SIB-Net checkpoint config")
    try:
        meta = json.loads(raw.decode("utf-8"))  # NaN is let through here: model fields refuse it below
    except RecursionError as err:  # json recurses once per nesting level, "[[[[..." runs out of stack
        raise CheckpointError(f"{path} is nested too deeply to be a SIB-Net checkpoint config") from err
    except UnicodeDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON: not UTF-8 text ({err.reason})") from err
    except ValueError as err:  # JSONDecodeError, integers over Python's 4300-digit limit
        raise CheckpointError(f"{path} is not valid JSON: {_one_line(err)}") from err
    depth = _depth(meta)
    if depth > MAX_CONFIG_DEPTH:
        raise CheckpointError(f"{path} nests {depth} levels deep (at most {MAX_CONFIG_DEPTH}): not a config")
    return meta


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON, without recursion (the value may be ~1000 levels deep)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def _check_fields(meta: dict[str, Any], path: Path) -> None:
    """Every known field has the JSON type :class:`ModelConfig` declares; unknown keys are left to it."""
    hints = typing.get_type_hints(ModelConfig)
    unknown = [key for key in meta if key not in hints]
    if unknown:  # named here, shortened: the keys come from the file
        shown = ", ".join(repr(_one_line(key, 40)) for key in unknown[:3]) + (
            ", ..." if len(unknown) > 3 else ""
        )
        raise CheckpointError(
            f"{path}: unknown model config keys {shown} (a newer or foreign checkpoint?); "
            f"known keys: {', '.join(sorted(hints))}"
        )
    for key, value in meta.items():
        if not _matches(value, hints[key]):
            raise CheckpointError(f"{path}: {key!r} must be {_describe(hints[key])}, got {_show(value)}")
        if key != "extra":  # names and labels end up in messages, the UI and JSON: keep them short
            long = [
                v
                for v in (value if isinstance(value, list) else [value])
                if isinstance(v, str) and len(v) > MAX_NAME
            ]
            if long:
                raise CheckpointError(
                    f"{path}: {key!r} holds a {len(long[0])}-character string, over the limit of {MAX_NAME}"
                )
    for key in ("input_size", "resize"):
        if _is_int(meta.get(key)) and meta[key] > MAX_INPUT_SIZE:
            raise CheckpointError(
                f"{path}: {key!r} is {meta[key]}, over the limit of {MAX_INPUT_SIZE} pixels"
            )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not 1


def _matches(value: Any, hint: Any) -> bool:
    """Whether a parsed JSON value fits a field annotation (tuples arrive as JSON arrays)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return _is_int(value)
    if hint is float:
        return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        if not isinstance(value, list):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
    if origin is dict:
        return isinstance(value, dict)
    raise TypeError(f"read_config cannot check the annotation {hint!r}; teach _matches about it")


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
        return f"a list of {len(args)} {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
    names = {
        type(None): "null",
        bool: "a boolean",
        int: "an integer",
        float: "a finite number",
        str: "a string",
    }
    return names.get(hint, "an object" if origin is dict else str(hint))


def _show(value: Any) -> str:
    """A value from the file, for a message: its JSON type and a short excerpt (the file may be hostile)."""
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    kind = kinds.get(type(value), "a number")
    text = json.dumps(value) if not isinstance(value, (dict, list)) else ""
    return f"{kind} {_one_line(text, 40)}".rstrip()


def _one_line(text: Any, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
