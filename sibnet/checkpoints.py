"""Checkpoints: ``model.safetensors`` + ``config.json`` in a folder or a Hugging Face Hub repository.

The format and its writer are :mod:`sibnet.models.serialization` (so a model can save itself without the
loader, which builds models); this module finds and loads checkpoints.

``config.json`` holds the full :class:`ModelConfig` (model name, architecture, label names, input size,
normalisation), so :func:`load_model` rebuilds the exact network from the checkpoint alone, then loads the
tensors with strict key and shape matching. The config is checked field by field first
(:func:`~sibnet.models.serialization.read_config`), and the network it describes is built on the meta device
and matched against the weights file's header before any memory is allocated, so a small hostile config
cannot ask for a giant network. Only safetensors are read: nothing a user supplies is ever
unpickled (a ``.pt``/``.bin`` file is refused with a message saying how to convert it).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import torch

from sibnet.errors import CheckpointError
from sibnet.models.registry import build_model
from sibnet.models.serialization import (
    CONFIG_NAME,
    FORMAT,
    FORMAT_VERSION,
    WEIGHTS_NAME,
    read_config,
    save_pretrained,
)

__all__ = [
    "CONFIG_NAME",
    "FORMAT",
    "FORMAT_VERSION",
    "WEIGHTS_NAME",
    "CheckpointError",
    "load_model",
    "read_config",
    "save_pretrained",
]

_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")


def _resolve_files(
    source: str | Path,
    *,
    subfolder: str | None,
    revision: str | None,
    cache_dir: str | Path | None,
    local_files_only: bool | None,
) -> tuple[Path, Path, str]:
    """Return (config.json, model.safetensors, description) for a local folder or a Hub repo id."""
    path = Path(source).expanduser()
    if subfolder:
        path = path / subfolder
    if path.is_file():
        if path.suffix in _PICKLE_SUFFIXES:
            raise CheckpointError(
                f"{path} is a pickle file; SIB-Net only loads safetensors checkpoints (pickles can run code). "
                "Convert it with the code that wrote it: build the model, load the state dict yourself, then "
                "call model.save_pretrained(folder)."
            )
        raise CheckpointError(
            f"{path} is a file; pass the checkpoint folder holding {CONFIG_NAME} and {WEIGHTS_NAME}"
        )
    if path.is_dir():
        return _check_local(path), path / WEIGHTS_NAME, str(path)
    text = str(source)
    if text.startswith((".", "/", "~")) or text.count("/") != 1 or text.endswith(_PICKLE_SUFFIXES):
        raise CheckpointError(
            f"no checkpoint folder at {path} (and {text!r} is not a Hub repo id 'owner/name')"
        )
    return _download(text, subfolder, revision, cache_dir, local_files_only)


def _check_local(path: Path) -> Path:
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in _PICKLE_SUFFIXES)
    if not (path / WEIGHTS_NAME).is_file():
        if pickles:
            raise CheckpointError(
                f"{path} holds {pickles} but no {WEIGHTS_NAME}; pickle checkpoints are refused (they can run "
                "code). Re-save the model with model.save_pretrained(folder)."
            )
        raise CheckpointError(f"{path} has no {WEIGHTS_NAME}: not a SIB-Net checkpoint folder")
    if not (path / CONFIG_NAME).is_file():
        raise CheckpointError(f"{path} has no {CONFIG_NAME}: the model cannot be rebuilt without it")
    return path / CONFIG_NAME


def _download(
    repo_id: str,
    subfolder: str | None,
    revision: str | None,
    cache_dir: str | Path | None,
    local_files_only: bool | None,
) -> tuple[Path, Path, str]:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    kwargs: dict[str, Any] = {"subfolder": subfolder, "revision": revision, "cache_dir": cache_dir}
    if local_files_only is not None:
        kwargs["local_files_only"] = local_files_only
    where = f"{repo_id}{'/' + subfolder if subfolder else ''}{'@' + revision if revision else ''}"
    try:
        config = hf_hub_download(repo_id, CONFIG_NAME, **kwargs)
        weights = hf_hub_download(repo_id, WEIGHTS_NAME, **kwargs)
    except LocalEntryNotFoundError as err:
        raise CheckpointError(
            f"checkpoint {where} is not in the Hugging Face cache and cannot be downloaded (offline?): {err}. "
            "Download it while online, or pass a local folder."
        ) from err
    except (RepositoryNotFoundError, EntryNotFoundError) as err:
        raise CheckpointError(f"no SIB-Net checkpoint at Hub repo {where}: {err}") from err
    except Exception as err:
        raise CheckpointError(f"could not fetch checkpoint {where}: {type(err).__name__}: {err}") from err
    return Path(config), Path(weights), f"hub:{where}"


def load_model(
    source: str | Path,
    *,
    device: str | torch.device = "cpu",
    subfolder: str | None = None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool | None = None,
) -> torch.nn.Module:
    """Rebuild a model from a checkpoint folder or a Hub repo id, in eval mode.

    Args:
        source: a local folder with ``config.json`` + ``model.safetensors``, or ``"owner/name"`` on the Hub.
        device: where to put the model.
        subfolder: folder inside the source (e.g. ``"sibnet"`` in a repo holding the three demo models).
        revision: Hub branch, tag or commit.
        cache_dir: Hub download cache (default: huggingface_hub's).
        local_files_only: Hub: never touch the network (``HF_HUB_OFFLINE=1`` does the same).

    Raises:
        CheckpointError: missing, truncated, pickle, or mismatched checkpoint; the message says which.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config_path, weights_path, where = _resolve_files(
        source, subfolder=subfolder, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only
    )
    config, training = read_config(config_path)
    # Check the config against the weights file's header before allocating anything: a 1 kB config can ask
    # for a terabyte-sized network ("fused_hidden": 10**12), and only the weights say what was trained.
    try:
        with torch.device("meta"):
            skeleton = build_model(config)
    except ValueError as err:
        raise CheckpointError(f"{where}: {err}") from err
    _check_shapes(_header_shapes(weights_path), skeleton, config, where)
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{weights_path} is truncated or not a safetensors file: {err}") from err
    _check_shapes({k: tuple(v.shape) for k, v in state.items()}, skeleton, config, where)
    # The skeleton takes copies of the stored tensors (assign), in its own dtypes: no random initialisation to
    # overwrite (0.3-0.6 s per SIB-Net on the CPU). Copies, because the file's tensors sit at arbitrary offsets
    # of one buffer and CPU kernels may sum in another order on unaligned memory: fresh allocations keep the
    # round trip bit-exact. strict=True has every parameter and persistent buffer replaced; a module with a
    # non-persistent buffer would keep it on the meta device, so it is built for real.
    expected = skeleton.state_dict()
    state = {k: v.to(expected[k].dtype, copy=True) if k in expected else v for k, v in state.items()}
    skeleton.load_state_dict(state, strict=True, assign=True)
    model = skeleton
    if any(t.is_meta for t in itertools.chain(model.parameters(), model.buffers())):
        model = build_model(config)
        model.load_state_dict(state, strict=True)
    model.training_info = training  # type: ignore[attr-defined]
    model.checkpoint_source = where  # type: ignore[attr-defined]
    return model.to(device).eval()


def _header_shapes(weights_path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from a safetensors header, reading no tensor data."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights_path), framework="pt") as file:
            return {key: tuple(file.get_slice(key).get_shape()) for key in file.keys()}  # noqa: SIM118 - safe_open is not iterable
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{weights_path} is truncated or not a safetensors file: {err}") from err


def _check_shapes(
    shapes: dict[str, tuple[int, ...]], model: torch.nn.Module, config: Any, where: str
) -> None:
    """The file holds exactly the model's tensors, each of the model's shape (strict matching)."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in shapes]
    unexpected = [k for k in shapes if k not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"{where}: the weights do not match architecture {config.name!r} of its config.json: "
            f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    wrong = [(k, shapes[k], want) for k, want in expected.items() if shapes[k] != want]
    if wrong:
        key, got, want = wrong[0]
        raise CheckpointError(
            f"{where}: {len(wrong)} tensors have the wrong shape for {config.name!r} with {config.num_classes} "
            f"labels, e.g. {key}: {got} in the file, {want} expected (wrong label count or architecture?)"
        )
