"""Inference on a device: memory layout, precision and oneDNN fusion for the three-branch networks.

The backbone of a Figure-5 model is three ResNet-18 trunks (plus SCM/ICM for SIB-Net); at batch 1 on a small
CPU it is the cost users wait for. :func:`prepare` builds an inference-only copy of that backbone laid out for
the device, and :class:`InferenceModel` runs it: ``features(*inputs)`` gives the final branch maps (float32,
what :func:`sibnet.cam.branch_cams` takes as ``features=``) and ``head(maps)`` the scores, through the
*original* float32 head. Measured on 2 shared cores of an AMD EPYC with avx512_bf16 (no AMX), the forward
of the three Figure-5 models at batch 1 against nine plain float32 torchvision ResNet-18 forwards in the same
process (the bench's reference; medians of 7 interleaved rounds):

============================================================  ==============
plain float32 (``model.forward_features``)                     1.12×
channels-last                                                  0.98×
channels-last + bf16 autocast                                  0.76×
channels-last + bf16 weights, BatchNorm folded                 0.58-0.62×
+ convolutions prepacked for oneDNN, ReLU / residual fused     0.49×  (``precision="bf16"``, the default here)
float32, prepacked and fused                                   0.85×  (``precision="fp32"``)
torch.compile (inductor, freezing) on top of bf16              0.43×, but 70 s to compile three models
============================================================  ==============

Why each step helps: oneDNN's convolutions want NHWC (channels-last) and skip their layout reorders in it;
bf16 halves the memory traffic and uses the CPU's native bf16 dot products (``vdpbf16ps``); autocast recasts
~100 M weights on every call, so the weights are cast once instead; folding BatchNorm removes a pass over
every map; a prepacked weight skips oneDNN's per-call weight reorder, and the ReLU and the residual add run
as post-ops of the convolution that precedes them instead of as separate passes (7 % and 5 % of the time in
a profile). torch.compile would cost minutes of cold start per process for a further 0.06×: not used.

What :func:`prepare` changes: **nothing of the model it is given.** It deep-copies the backbone (trunks, SCM,
ICM; the head is shared, never copied or modified), folds each BatchNorm into the convolution before it
(eval statistics), prepacks the convolutions, converts the copy to channels-last and to the chosen dtype,
and freezes it (eval mode, no gradients). The copy costs memory: with bf16 half the float32 backbone (about
200 MB for the three Figure-5 models at 26 classes), with float32 as much as it. It does not follow later
changes to the original's weights (prepare again after loading other weights), and a prepacked copy cannot
be deep-copied, pickled or moved to another device (prepare from the original instead).

Exactness of the maps: predictions and CAMs both go through the original float32 head on the same float32
copies of the maps, so a CAM's target logit is exactly the predicted logit, and every CAM method sees the
maps the prediction saw. The maps themselves differ from a float32 forward by bf16 rounding; the
reduced-precision test (``tests/test_inference.py``) holds a model trained in the test to: top-1 identical on
≥ 99 % of items, max |Δ score| ≤ 0.02, branch-map Pearson correlation ≥ 0.98.

The ``"auto"`` rule (:func:`resolve_precision`): on CUDA, bf16 when the GPU supports it
(``torch.cuda.is_bf16_supported()``); on a CPU, bf16 when it has native bf16 arithmetic (the ``avx512_bf16``
or ``amx_bf16`` flags, see :func:`cpu_features`) and oneDNN supports it; float32 everywhere else (emulated
bf16 is slower than float32).
"""

from __future__ import annotations

import copy
import functools
import logging
import platform
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from sibnet.models.heads import ModelOutput

log = logging.getLogger(__name__)

PRECISIONS: tuple[str, ...] = ("auto", "bf16", "fp32")
_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
# CPU flags that mean bf16 dot products in hardware (x86: AVX512-BF16 on Cooper Lake / Zen 4 and later, AMX
# on Sapphire Rapids and later). Without them oneDNN emulates bf16 with float32 FMAs: slower than float32.
_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# Flags worth a line in a start-up log: the vector width torch's kernels use and the bf16/int8 extensions.
_LOGGED_FLAGS = ("avx2", "avx512_f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")
# /proc/cpuinfo spells some flags differently from torch.cpu.get_capabilities().
_PROC_FLAG_NAMES = {"avx512f": "avx512_f", "avx512_bf16": "avx512_bf16", "amx_bf16": "amx_bf16"}


# --- what the CPU can do ---


@dataclass(frozen=True)
class CPUFeatures:
    """What this CPU offers the models (for the "auto" precision rule and a start-up log line).

    Attributes:
        name: the CPU's name as cpuinfo reports it (may be empty).
        architecture: ``platform.machine()``, e.g. ``x86_64``.
        kernels: the vector ISA torch's own kernels dispatch to (``torch.backends.cpu.get_cpu_capability()``:
            ``DEFAULT``, ``AVX2``, ``AVX512``...).
        flags: the relevant instruction-set flags the CPU has (a subset of ``_LOGGED_FLAGS``).
        onednn: whether torch has oneDNN (mkldnn) for convolutions.
        onednn_bf16: whether oneDNN accepts bf16 here (it may emulate it; see ``native_bf16``).
        threads: torch's intra-op threads.
    """

    name: str
    architecture: str
    kernels: str
    flags: tuple[str, ...]
    onednn: bool
    onednn_bf16: bool
    threads: int

    @property
    def native_bf16(self) -> bool:
        """bf16 arithmetic in hardware (avx512_bf16 or AMX) and oneDNN able to use it."""
        return self.onednn_bf16 and any(f in self.flags for f in _NATIVE_BF16_FLAGS)

    def summary(self) -> str:
        """One line for a log, e.g. ``AMD EPYC (x86_64): AVX512 kernels; avx512_bf16, ...; oneDNN; 2 threads``."""
        flags = ", ".join(self.flags) or "no vector extensions of note"
        onednn = "oneDNN" + (" bf16" if self.onednn_bf16 else "") if self.onednn else "no oneDNN"
        bf16 = "native bf16" if self.native_bf16 else "no native bf16"
        name = f"{self.name} " if self.name else ""
        return f"{name}({self.architecture}): {self.kernels} kernels; {flags}; {onednn}, {bf16}; {self.threads} threads"


def _capability_flags() -> dict[str, bool]:
    """Instruction-set flags from torch's cpuinfo (torch ≥ 2.9) or, failing that, from /proc/cpuinfo."""
    get = getattr(torch.cpu, "get_capabilities", None)
    if get is not None:
        try:
            return {k: bool(v) for k, v in get().items() if isinstance(v, bool)}
        except Exception:  # noqa: BLE001 - fall back to the kernel's view
            pass
    try:
        with open("/proc/cpuinfo") as f:
            line = next((ln for ln in f if ln.startswith("flags")), "")
    except OSError:
        return {}
    names = line.partition(":")[2].split()
    return {_PROC_FLAG_NAMES.get(n, n): True for n in names}


def _onednn_bf16() -> bool:
    if not torch.backends.mkldnn.is_available():
        return False
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else False
    except Exception:  # noqa: BLE001 - an op missing from this build means no
        return False


@functools.cache
def _cpu_static() -> tuple[str, str, str, tuple[str, ...], bool, bool]:
    caps = _capability_flags()
    get = getattr(torch.cpu, "get_capabilities", None)
    name = ""
    if get is not None:
        try:
            name = str(get().get("cpu_name", ""))
        except Exception:  # noqa: BLE001
            name = ""
    flags = tuple(f for f in _LOGGED_FLAGS if caps.get(f, False))
    kernels = torch.backends.cpu.get_cpu_capability()
    return name, platform.machine(), kernels, flags, torch.backends.mkldnn.is_available(), _onednn_bf16()


def cpu_features() -> CPUFeatures:
    """What this CPU offers (cached, except the thread count); ``cpu_features().summary()`` for a log line."""
    name, arch, kernels, flags, onednn, onednn_bf16 = _cpu_static()
    return CPUFeatures(name, arch, kernels, flags, onednn, onednn_bf16, torch.get_num_threads())


def resolve_precision(precision: str = "auto", device: str | torch.device = "cpu") -> str:
    """``"bf16"`` or ``"fp32"`` for ``precision`` on ``device`` (the "auto" rule is in the module docstring).

    Raises:
        ValueError: unknown precision, or bf16 asked for where the device cannot run it at all.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    dev = torch.device(device)
    if dev.type == "cuda":
        supported = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    elif dev.type == "cpu":
        supported = _onednn_bf16()
    else:
        supported = False  # MPS and others: not measured here, float32
    if precision == "auto":
        native = supported and (dev.type == "cuda" or cpu_features().native_bf16)
        return "bf16" if native else "fp32"
    if precision == "bf16" and not supported:
        raise ValueError(f"bf16 is not supported on {dev} here; use precision='fp32'")
    if precision == "bf16" and dev.type == "cpu" and not cpu_features().native_bf16:
        log.warning(
            "bf16 on a CPU without native bf16 (%s): emulated, slower than fp32", cpu_features().summary()
        )
    return precision


# --- fused modules of the inference copy ---


def _onednn_ops_available() -> bool:
    """Whether this torch build has oneDNN's fused, prepacked convolution (what inductor uses on CPU)."""
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return False
    try:
        torch.ops.mkldnn._convolution_pointwise.default  # noqa: B018 - raises when the op is missing
        torch.ops.mkldnn._reorder_convolution_weight.default  # noqa: B018
    except (AttributeError, RuntimeError):
        return False
    return True


class FusedConv2d(nn.Module):
    """A convolution with its BatchNorm folded in and its ReLU (or residual add + ReLU) fused, for inference.

    On a CPU with oneDNN the weight is prepacked once into oneDNN's blocked layout and the post-ops run inside
    the convolution primitive (``torch.ops.mkldnn._convolution_pointwise``, the kernel torch.compile emits on
    CPU); elsewhere (CUDA, builds without oneDNN) it is ``F.conv2d`` on the folded weight followed by the
    same element-wise steps.

    Args:
        conv: the convolution (zero padding, no transposition).
        bn: the BatchNorm2d that follows it, folded with its running statistics; None for none.
        relu: apply a ReLU after it (in :meth:`forward`).
        dtype: the weights' dtype.
        device: where the weights live.
        onednn: prepack for oneDNN (CPU only).
    """

    def __init__(
        self,
        conv: nn.Conv2d,
        bn: nn.BatchNorm2d | None,
        relu: bool,
        dtype: torch.dtype,
        device: torch.device,
        onednn: bool,
    ) -> None:
        super().__init__()
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"cannot fuse {conv}: only explicit zero padding is supported")
        fused = fuse_conv_bn_eval(conv.eval(), bn.eval()) if bn is not None else conv
        self.relu = relu
        self.onednn = onednn and device.type == "cpu"
        self.stride, self.padding = list(fused.stride), list(fused.padding)
        self.dilation, self.groups = list(fused.dilation), fused.groups
        weight = fused.weight.detach().to(device=device, dtype=dtype)
        weight = weight.contiguous(memory_format=torch.channels_last)
        bias = fused.bias.detach().to(device=device, dtype=dtype) if fused.bias is not None else None
        if self.onednn:
            # An opaque oneDNN tensor, not a parameter or buffer: Module.to()/state_dict() must not touch it.
            # Packed without an input size, oneDNN picks its default blocking; a weight packed for one size
            # serves every size (measured: batch 1, 2 and 6 all faster than unpacked).
            weight = torch.ops.mkldnn._reorder_convolution_weight(
                weight, self.padding, self.stride, self.dilation, self.groups
            )
        self.weight = weight
        self.bias = bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.onednn:
            attr = "relu" if self.relu else "none"
            return torch.ops.mkldnn._convolution_pointwise(
                x, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups, attr, [], ""
            )
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        return F.relu(y, inplace=True) if self.relu else y

    def add_relu(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """``relu(conv(x) + residual)``: the end of a ResNet basic block, as one primitive."""
        if self.onednn:
            return torch.ops.mkldnn._convolution_pointwise.binary(
                x, residual, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups,
                "add", 1.0, "relu", [], "",
            )  # fmt: skip
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        return F.relu(y.add_(residual), inplace=True)

    def extra_repr(self) -> str:
        kind = "oneDNN prepacked" if self.onednn else "folded"
        return f"{kind}, stride={self.stride}, padding={self.padding}, relu={self.relu}"


class FusedBasicBlock(nn.Module):
    """torchvision's ResNet ``BasicBlock`` (relu(bn1(conv1 x)) → bn2(conv2 ·) + shortcut → relu) in 2-3 primitives."""

    def __init__(self, block: nn.Module, make: _Maker) -> None:
        super().__init__()
        self.conv1 = make(block.conv1, block.bn1, True)
        self.conv2 = make(block.conv2, block.bn2, False)
        ds = block.downsample
        self.downsample = make(ds[0], ds[1], False) if ds is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.conv2.add_relu(self.conv1(x), identity)


class _Maker:
    def __init__(self, dtype: torch.dtype, device: torch.device, onednn: bool) -> None:
        self.dtype, self.device, self.onednn = dtype, device, onednn

    def __call__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None, relu: bool) -> FusedConv2d:
        return FusedConv2d(conv, bn, relu, self.dtype, self.device, self.onednn)


def _is_conv_bn_relu_stem(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.Sequential)
        and len(module) >= 3
        and isinstance(module[0], nn.Conv2d)
        and isinstance(module[1], nn.BatchNorm2d)
        and isinstance(module[2], nn.ReLU)
    )


def _fuse(module: nn.Module, make: _Maker) -> None:
    """Replace, inside ``module`` (a private copy), what :class:`FusedConv2d` can run: ResNet basic blocks, the
    conv-BN-ReLU stem, the ICM blocks' final conv + BN, and every other convolution."""
    from torchvision.models.resnet import BasicBlock

    from sibnet.models.icm import CorrelatedFusion, LinearFusion

    for name, child in list(module.named_children()):
        if isinstance(child, BasicBlock):
            setattr(module, name, FusedBasicBlock(child, make))
        elif _is_conv_bn_relu_stem(child):
            setattr(module, name, nn.Sequential(make(child[0], child[1], True), *list(child)[3:]))
        elif isinstance(child, (CorrelatedFusion, LinearFusion)):
            # Both end in ``self.bn(self.out(...))`` (sibnet.models.icm): the BN folds into ``out``.
            child.out, child.bn = make(child.out, child.bn, False), nn.Identity()
            _fuse(child, make)
        elif isinstance(child, nn.Conv2d):
            setattr(module, name, make(child, None, False))
        else:
            _fuse(child, make)


# --- the prepared model ---


class InferenceModel:
    """A model prepared by :func:`prepare`: ``features`` / ``head`` / ``__call__`` in the chosen layout and precision.

    Attributes:
        model: the original model (its head, config and labels are used as they are; never modified).
        device: where the copy runs.
        precision: ``"bf16"`` or ``"fp32"`` (resolved).
        fused: whether the convolutions run as prepacked oneDNN primitives (CPU with oneDNN).
    """

    def __init__(
        self, model: nn.Module, backbone: nn.Module, device: torch.device, precision: str, fused: bool
    ):
        self.model = model
        self._backbone = backbone
        self.device = device
        self.precision = precision
        self.dtype = _DTYPES[precision]
        self.fused = fused

    @property
    def config(self):
        return self.model.config

    def describe(self) -> str:
        """E.g. ``"bf16, channels-last, oneDNN prepacked+fused, cpu"`` (for logs and the bench)."""
        fusion = "oneDNN prepacked+fused" if self.fused else "BatchNorm folded"
        return f"{self.precision}, channels-last, {fusion}, {self.device}"

    def features(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Final branch maps (after SCM/ICM), each (B, 512, h, w) float32 contiguous on ``device``.

        Args:
            *inputs: the masked triple (face, body, scene), each (B, 3, S, S), any dtype/layout/device.
        """
        xs = [
            x.to(device=self.device, dtype=self.dtype, memory_format=torch.channels_last, non_blocking=True)
            for x in inputs
        ]
        with torch.no_grad():
            maps = self._backbone.forward_features(*xs)
        # float32 and contiguous: what the head and the CAM engine (which stacks and views them) expect.
        return tuple(m.to(torch.float32, memory_format=torch.contiguous_format) for m in maps)

    def head(self, maps: Sequence[torch.Tensor]) -> ModelOutput:
        """Scores from final maps, through the original model's float32 head (the head the CAMs use).

        Raises:
            ValueError: the original model is in train mode (its dropout would make the scores random).
        """
        if self.model.training:
            raise ValueError("the model is in train mode; call model.eval() before inference")
        with torch.no_grad():
            return self.model.forward_head(tuple(m.float() for m in maps))

    def __call__(self, *inputs: torch.Tensor) -> ModelOutput:
        return self.head(self.features(*inputs))

    def __repr__(self) -> str:
        return f"InferenceModel({self.config.name}: {self.describe()})"


def prepare(
    model: nn.Module,
    device: str | torch.device | None = None,
    precision: str = "auto",
    fuse: bool = True,
) -> InferenceModel:
    """An inference-only copy of ``model``'s backbone for ``device`` (see the module docstring for what it does).

    Args:
        model: a :class:`sibnet.models.network.ContextEmotionNet` (any registered variant). Not modified.
        device: where to run; default the device of the model's parameters.
        precision: ``"auto"`` (bf16 where native, else fp32), ``"bf16"`` or ``"fp32"``.
        fuse: fold BatchNorm and fuse/prepack convolutions (False: only layout and dtype, for comparisons).

    Returns:
        An :class:`InferenceModel`; ``features(*inputs)`` and ``head(maps)`` as the pipeline needs them.

    Raises:
        ValueError: unknown precision, or bf16 on a device that cannot run it.
    """
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    resolved = resolve_precision(precision, dev)
    dtype = _DTYPES[resolved]
    # The head is shared, not copied: the memo maps it to None, so the copy has no head and the original's
    # stays the one used (and it is never cast).
    backbone = copy.deepcopy(model, memo={id(model.head): None})
    backbone.eval().requires_grad_(False)
    onednn = fuse and dev.type == "cpu" and _onednn_ops_available()
    if fuse:
        _fuse(backbone, _Maker(dtype, dev, onednn))
    backbone.to(device=dev, dtype=dtype, memory_format=torch.channels_last)
    prepared = InferenceModel(model, backbone, dev, resolved, onednn)
    log.info("prepared %s: %s", getattr(model.config, "name", type(model).__name__), prepared.describe())
    return prepared


def features(model: InferenceModel | nn.Module, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Final branch maps of ``inputs``: through the prepared path for an :class:`InferenceModel`, else the plain
    float32 ``forward_features`` without autograd (what :func:`sibnet.cam.model_features` does)."""
    if isinstance(model, InferenceModel):
        return model.features(*inputs)
    with torch.no_grad():
        return tuple(model.forward_features(*inputs))


def head(model: InferenceModel | nn.Module, maps: Sequence[torch.Tensor]) -> ModelOutput:
    """Scores from final maps (the original float32 head in both cases)."""
    if isinstance(model, InferenceModel):
        return model.head(maps)
    with torch.no_grad():
        return model.forward_head(tuple(maps))
