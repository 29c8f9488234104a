"""Devices, mixed precision and multi-process (``torchrun``) helpers for training and evaluation (§4.2).

The paper trains on one GPU; the same recipe scales out with PyTorch's DistributedDataParallel: launch
``torchrun --nproc_per_node N -m sibnet.train ...``. Each process reads its rank from the environment
``torchrun`` sets (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``); NCCL is used on CUDA, gloo on CPU. Only rank 0
writes files. Evaluation shards the split with ``DistributedSampler`` and *gathers the scores* of every rank
before computing a metric: mAP is not decomposable, so averaging per-rank mAPs would be wrong.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world_size`` processes and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None  # None: a single process, torch.distributed not initialised

    @property
    def enabled(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"`` → CUDA if available, else CPU; anything else as given (``"cuda:1"``, ``"cpu"``).

    Raises:
        ValueError: CUDA asked for but not available.
    """
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r}: CUDA is not available on this machine (use --device cpu)")
    return dev


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: str | None = None, timeout_s: float = 1800.0) -> DistContext:
    """Initialise the process group when launched by ``torchrun`` with more than one process.

    Args:
        device: the ``--device`` flag; under ``torchrun`` a CUDA device becomes ``cuda:<LOCAL_RANK>``.
        timeout_s: collective timeout (a validation pass on a large split runs between two collectives).

    Returns:
        The context; a single-process run gets ``DistContext(device=...)`` without touching torch.distributed.
    """
    dev = resolve_device(device)
    if not launched_by_torchrun():
        return DistContext(device=dev)
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend, rank=rank, world_size=world, timeout=datetime.timedelta(seconds=timeout_s)
        )
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=dev, backend=backend)


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def _comm_device(ctx: DistContext) -> torch.device:
    # NCCL only moves CUDA tensors; gloo moves CPU tensors.
    return ctx.device if ctx.backend == "nccl" else torch.device("cpu")


def all_gather_cat(ctx: DistContext, tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (first dimension may differ per rank) from every rank, in rank order."""
    if not ctx.enabled:
        return tensor
    comm = _comm_device(ctx)
    local = tensor.detach().to(comm).contiguous()
    size = torch.tensor([local.shape[0]], device=comm, dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(ctx.world_size)]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = local.new_zeros((longest, *local.shape[1:]))
    padded[: local.shape[0]] = local
    chunks = [torch.zeros_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(chunks, padded)
    return torch.cat([c[: int(s.item())] for c, s in zip(chunks, sizes)]).to(tensor.device)


def all_reduce_sum(ctx: DistContext, values: list[float]) -> list[float]:
    """Sum a few scalars over the ranks (e.g. loss sums and sample counts for the epoch log)."""
    if not ctx.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device(ctx))
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def broadcast_object(ctx: DistContext, obj: object) -> object:
    """Rank 0's ``obj`` on every rank (used to agree on an error, so no rank waits forever)."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=_comm_device(ctx))
    return box[0]


def broadcast_buffers(ctx: DistContext, module: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts buffers at the start of each training forward, but the last forward of an epoch then
    updates each rank's statistics with its own batch, so the replicas differ until the next step. Syncing
    before validation and checkpointing makes every rank evaluate, and save, the same network.
    """
    if not ctx.enabled:
        return
    for buf in module.buffers():
        if buf.is_floating_point() or buf.dtype == torch.long:
            if buf.device.type == "cpu" or ctx.backend == "nccl":
                dist.broadcast(buf, src=0)
            else:  # pragma: no cover - a CUDA model under gloo
                tmp = buf.cpu()
                dist.broadcast(tmp, src=0)
                buf.copy_(tmp)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def amp_dtype(device: torch.device, mode: str = "auto") -> torch.dtype | None:
    """The autocast dtype: bf16 on CUDA when supported, else fp16 (with a GradScaler); None (fp32) on CPU.

    Args:
        device: the training device.
        mode: ``"auto"`` (the rule above), ``"bf16"``, ``"fp16"`` or ``"off"``.

    Raises:
        ValueError: an unknown mode, or bf16/fp16 asked for on a device that cannot autocast to it.
    """
    if mode not in ("auto", "bf16", "fp16", "off"):
        raise ValueError(f"--amp must be auto, bf16, fp16 or off, got {mode!r}")
    if mode == "off" or device.type != "cuda":
        if mode in ("bf16", "fp16") and device.type != "cuda":
            raise ValueError(f"--amp {mode} needs a CUDA device (this run uses {device}); use --amp off")
        return None
    if mode == "fp16":
        return torch.float16
    if mode == "bf16":
        if not torch.cuda.is_bf16_supported():
            raise ValueError("--amp bf16: this GPU does not support bfloat16; use --amp fp16")
        return torch.bfloat16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``dtype`` on ``device``, or a no-op context for fp32 (``dtype=None``).

    A no-op rather than ``torch.autocast(enabled=False)``: the latter still validates the dtype and warns
    on CUDA when given float32.
    """
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
