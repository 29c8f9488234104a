"""Resume state (``last.pt``), the epoch log and weight digests of a training run.

``last.pt`` holds the model, optimizer, scheduler and scaler states, the progress (epoch, step, best so far,
the epoch history) and every rank's RNG states, as tensors and plain containers only, so it loads with
``torch.load(weights_only=True)``; it is written atomically after every epoch. ``metrics.jsonl`` is
rewritten from the history it holds, so the log never shows an epoch twice.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sibnet.errors import TrainingError, error_message

STATE_FORMAT = "sibnet-train-state"
STATE_VERSION = 1


@dataclass
class Progress:
    """Where a seed's run stands; restored from ``last.pt`` on resume."""

    epoch: int = 0  # finished epochs
    step: int = 0  # optimizer steps taken
    best_value: float = -math.inf  # best validation metric so far
    best_epoch: int = 0  # its epoch (0: none yet)
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per finished epoch


def save_state(
    path: Path,
    *,
    fingerprint: str,
    progress: Progress,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    rngs: list[dict[str, Any]],
) -> None:
    """Write ``last.pt`` atomically (a kill mid-write leaves the previous one intact)."""
    state = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "fingerprint": fingerprint,
        "epoch": progress.epoch,
        "step": progress.step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "best_value": progress.best_value,
        "best_epoch": progress.best_epoch,
        "history": [json.dumps(r) for r in progress.history],
        "rng": rngs,
    }
    atomic_torch_save(state, path)


def restore_state(
    path: Path,
    *,
    device: torch.device,
    fingerprint: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
) -> tuple[Progress, list[dict[str, Any]]]:
    """Load ``last.pt`` into the objects and return the progress and the saved RNG states (one per rank).

    Raises:
        TrainingError: unreadable, not ours, or written by a run with another configuration.
    """
    state = load_resume_state(path, device)
    differences = config_diff(json.loads(fingerprint), json.loads(state["fingerprint"]))
    if differences:
        raise TrainingError(
            f"{path} belongs to a run with another configuration ({'; '.join(differences[:4])}); use another "
            "--out/--run-name, or --overwrite to start over"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    progress = Progress(
        epoch=int(state["epoch"]),
        step=int(state["step"]),
        best_value=float(state["best_value"]),
        best_epoch=int(state["best_epoch"]),
        history=[json.loads(line) for line in state["history"]],
    )
    return progress, state["rng"]


def write_log(path: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite ``metrics.jsonl`` from the history (the resume state is the source of truth)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in history))
    os.replace(tmp, path)


def seed_everything(seed: int) -> None:
    """Python's, numpy's and torch's generators seeded for one seed's run."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seeded_generator(*entropy: int) -> torch.Generator:
    """A CPU generator seeded from the integers given (numpy's SeedSequence mixes them)."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence(list(entropy)).generate_state(1)[0]))


def rng_state(bcm_generator: torch.Generator) -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        # numpy's state holds an ndarray; keep it as a tensor so weights_only loading accepts it.
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": random.getstate(),
        "bcm": bcm_generator.get_state(),
    }


def set_rng_state(state: dict[str, Any], bcm_generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    bcm_generator.set_state(state["bcm"].cpu())


def atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)  # a kill mid-write leaves the previous last.pt intact


def load_resume_state(path: Path, device: torch.device) -> dict[str, Any]:
    """Read a ``last.pt`` written by this module (tensors and plain containers only).

    Raises:
        TrainingError: not readable with ``weights_only=True`` or not our format.
    """
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:
        raise TrainingError(
            f"cannot read resume state {path} ({type(err).__name__}: {error_message(err)}); delete it or pass "
            "--overwrite"
        ) from err
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise TrainingError(f"{path} is not a sibnet training state; delete it or pass --overwrite")
    if state.get("version", 0) > STATE_VERSION:
        raise TrainingError(f"{path} was written by a newer sibnet (state version {state['version']})")
    return state


def config_diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += config_diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix.rstrip('.')}: {b!r} in the state, {a!r} now"]


def state_digest(module: nn.Module) -> dict[str, str]:
    """SHA-256 of the parameters and of the buffers, in state-dict order (DDP replicas must agree)."""
    params, buffers = hashlib.sha256(), hashlib.sha256()
    names = {n for n, _ in module.named_parameters()}
    for name, tensor in module.state_dict().items():
        h = params if name in names else buffers
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return {"parameters": params.hexdigest(), "buffers": buffers.hexdigest()}


def write_digest(folder: Path, rank: int, world_size: int, model: nn.Module) -> None:
    """``digest-rank<r>.json``: the SHA-256 of a rank's weights and buffers (identical across DDP ranks)."""
    folder.mkdir(parents=True, exist_ok=True)
    digest = {"rank": rank, "world_size": world_size, **state_digest(model)}
    (folder / f"digest-rank{rank}.json").write_text(json.dumps(digest) + "\n")
