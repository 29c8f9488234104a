"""Per-branch class activation maps for every model, in one pass (paper §4.3, Figure 5).

For one batch of masked triples and one target class per item, :func:`branch_cams` returns a map in [0, 1]
for each branch of a model (face, body, scene), at the branch's input resolution; :func:`project_maps` places
them back on the photo (the face map on the face box, the body map on the body box, the scene map on the whole
image) and :func:`composite_map` merges them the way the branches saw the photo.

How it stays cheap and safe, while the CAM maths stays pytorch-grad-cam's:

- The target layer of each branch is its *final* feature map, after the SCM/ICM additions (the model's
  ``cam_taps``). A score depends on those maps only through the head (pooling, fusion, classifiers), so the
  gradient of the score with respect to the maps needs no backward through the backbone. The backbone runs
  once, without autograd (``forward_features``); the maps of all branches are stacked into the batch
  dimension, (B, n, C, h, w) → (B·n, C, h, w), and fed to a small per-call module holding a frozen copy of
  the head behind one ``nn.Identity`` target layer. pytorch-grad-cam then does one head forward and one
  backward for all branches of all items: ``B·n`` maps from a single target layer, so its gradient-order
  bookkeeping and its averaging over several target layers never come into play.
- Each call hooks its own module, never the shared model: concurrent requests on one model cannot mix their
  activations (DESIGN.md §4), and the model's parameters, gradients and train/eval mode are untouched.
- Callers that already ran the backbone (the demo computes predictions first) pass ``features=`` and skip it.
- A model in train mode is refused (ValueError): its backbone pass would use batch statistics and overwrite
  every BatchNorm's running statistics, and its maps would not be the ones the model predicts with.
- Eigen-CAM needs no head and no gradient: the first principal component of each cached final map is computed
  directly with ``torch.linalg`` (:func:`eigen_projection`), batched over every branch of every item. It is the
  projection pytorch-grad-cam's ``EigenCAM`` computes (``get_2d_projection``: centre the h·w positions, project
  on the first right singular vector), with one difference: a singular vector's sign is arbitrary and the
  library keeps whatever sign LAPACK returns, so the same map could come out inverted from one build to the
  next; here the component is oriented so that its channel loadings sum to a positive number (the positions
  where the channels fire more overall score higher). Whenever the library's sign agrees, the maps are its
  maps (a test holds them to float rounding); otherwise they are its maps of the flipped component. Measured
  on 2 shared cores: 9 maps of 7×7 in about 2 ms, where the library's numpy SVD took 3.6-8.3 s.

The paper-style ``activation`` map is the channel mean of the final map (no gradient, no target).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from sibnet.boxes import Box
from sibnet.data.masking import BRANCHES

ACTIVATION = "activation"
BRANCH_ORDER = BRANCHES  # the order of the model inputs (kept as the name callers know)


def _at_input_size(cam_class: type[BaseCAM]) -> type[BaseCAM]:
    """A subclass that scales maps to the branch input size instead of the (feature-map) input tensor's size."""

    class BranchCAM(cam_class):  # type: ignore[misc, valid-type]
        output_size: tuple[int, int] = (224, 224)

        def get_target_width_height(self, input_tensor: torch.Tensor) -> tuple[int, int]:
            return self.output_size

    BranchCAM.__name__ = BranchCAM.__qualname__ = f"Branch{cam_class.__name__}"
    return BranchCAM


# Method name → pytorch-grad-cam class. All of these work on (activations, gradients) of the target layer,
# so they apply unchanged to the head-only path. ScoreCAM/AblationCAM perturb the *input* image and would need
# the full network per perturbation; they are not offered.
CAM_METHODS: dict[str, type[BaseCAM] | None] = {
    "gradcam": _at_input_size(GradCAM),
    "gradcam++": _at_input_size(GradCAMPlusPlus),
    "xgradcam": _at_input_size(XGradCAM),
    "hirescam": _at_input_size(HiResCAM),
    "layercam": _at_input_size(LayerCAM),
    "eigencam": _at_input_size(EigenCAM),
    ACTIVATION: None,
}
METHOD_TITLES: dict[str, str] = {
    "gradcam": "Grad-CAM",
    "gradcam++": "Grad-CAM++",
    "xgradcam": "XGrad-CAM",
    "hirescam": "HiResCAM",
    "layercam": "LayerCAM",
    "eigencam": "Eigen-CAM",
    ACTIVATION: "activation (channel mean)",
}


# Methods whose map does not depend on the target class: Eigen-CAM (the first principal component of the
# activations) and the channel-mean activation map. The demo greys out the target for them and says so.
CLASS_AGNOSTIC: frozenset[str] = frozenset({"eigencam", ACTIVATION})


def check_method(method: str) -> str:
    """Return the method key, or raise ValueError listing the valid ones."""
    key = method.lower().replace("_", "").replace("-", "").replace("plusplus", "++")
    if key not in CAM_METHODS:
        raise ValueError(f"unknown CAM method {method!r}; valid methods: {', '.join(CAM_METHODS)}")
    return key


def resolve_target(labels: Sequence[str], target: str | int) -> int:
    """Index of a target class given by name (case-insensitive) or index; ValueError lists the valid labels."""
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        if 0 <= int(target) < len(labels):
            return int(target)
        raise ValueError(f"target index {target} out of range for {len(labels)} labels: {', '.join(labels)}")
    lowered = [name.lower() for name in labels]
    key = str(target).strip().lower()
    if key in lowered:
        return lowered.index(key)
    raise ValueError(f"unknown target emotion {target!r}; valid labels: {', '.join(labels)}")


@dataclass(frozen=True)
class BranchCAMs:
    """Maps of one model for a batch: ``maps[i, b]`` is item i's map for branch ``branches[b]``."""

    maps: np.ndarray  # (B, n, S, S) float32 in [0, 1]
    branches: tuple[str, ...]
    method: str
    targets: tuple[int, ...]  # target class index per item
    target_logits: np.ndarray  # (B,) the target's fused logit per item (NaN for 'activation')

    def for_item(self, i: int) -> dict[str, np.ndarray]:
        return {name: self.maps[i, b] for b, name in enumerate(self.branches)}


class _HeadForCAM(nn.Module):
    """Per-call module: (B·n, C, h, w) stacked final maps → one tap → frozen head copy → fused logits (B, K)."""

    def __init__(self, head: nn.Module, num_branches: int) -> None:
        super().__init__()
        self.tap = nn.Identity()  # the single target layer
        self.head = copy.deepcopy(head).eval().requires_grad_(False)
        self.num_branches = num_branches

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        x = self.tap(stacked)
        maps = x.view(-1, self.num_branches, *x.shape[1:]).unbind(1)  # n × (B, C, h, w)
        return self.head(list(maps)).logits


def check_targets(targets: Sequence[int] | int, batch: int, num_classes: int) -> tuple[int, ...]:
    """One class index per item (an int means the same for all), each in range (also used by sibnet.attribution)."""
    if isinstance(targets, (int, np.integer)) and not isinstance(targets, bool):
        targets = [int(targets)] * batch
    targets = tuple(int(t) for t in targets)
    if len(targets) != batch:
        raise ValueError(f"need one target per item: {batch} items, {len(targets)} targets")
    bad = [t for t in targets if not 0 <= t < num_classes]
    if bad:
        raise ValueError(f"target indices {bad} out of range for {num_classes} classes")
    return targets


def _require_eval(model: nn.Module) -> None:
    if model.training:
        raise ValueError(
            "the model is in train mode: call model.eval() before computing maps (in train mode its BatchNorm "
            "layers would use batch statistics and overwrite their running statistics)"
        )


def model_features(model: nn.Module, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The final maps of every branch, computed once without autograd (reuse them for predictions and CAMs).

    Raises:
        ValueError: the model is in train mode.
    """
    _require_eval(model)
    with torch.no_grad():
        return tuple(model.forward_features(*inputs))


def eigen_projection(stacked: torch.Tensor) -> np.ndarray:
    """Each map of ``stacked`` (N, C, h, w) projected on its first principal component: (N, h, w) float32.

    The h·w positions are the samples and the C channels the variables; the positions are centred per channel
    (pytorch-grad-cam's ``get_2d_projection``; NaNs count as 0). The projection ``X v₁ = s₁ u₁`` comes from the
    eigendecomposition of the smaller of the Gram matrix ``X Xᵀ`` (h·w × h·w) and the covariance ``Xᵀ X``
    (C × C), in float64. The sign is fixed so that ``v₁``'s loadings sum to a positive number (see the module
    docstring).
    """
    a = stacked.detach().to(torch.float64)
    a = torch.where(torch.isnan(a), torch.zeros((), dtype=a.dtype, device=a.device), a)
    n, c, h, w = a.shape
    x = a.reshape(n, c, h * w).transpose(1, 2)  # (N, hw, C): positions × channels
    x = x - x.mean(dim=1, keepdim=True)
    if h * w <= c:
        evals, evecs = torch.linalg.eigh(x @ x.transpose(1, 2))  # ascending eigenvalues
        u = evecs[..., -1]  # (N, hw), unit norm
        proj = u * evals[..., -1].clamp_min(0).sqrt()[:, None]  # s₁ u₁
        loadings = (x.transpose(1, 2) @ u[..., None]).squeeze(-1)  # Xᵀ u₁ = s₁ v₁, same sign as v₁
    else:
        _, evecs = torch.linalg.eigh(x.transpose(1, 2) @ x)
        loadings = evecs[..., -1]  # v₁ (N, C)
        proj = (x @ loadings[..., None]).squeeze(-1)
    sign = torch.where(loadings.sum(dim=1) < 0, -1.0, 1.0).to(proj.dtype)
    return (proj * sign[:, None]).reshape(n, h, w).float().cpu().numpy()


def branch_cams(
    model: nn.Module,
    inputs: Sequence[torch.Tensor] | None,
    targets: Sequence[int] | int,
    method: str = "gradcam",
    features: Sequence[torch.Tensor] | None = None,
) -> BranchCAMs:
    """Maps of every branch of ``model`` for each item's target class.

    Args:
        model: a :class:`sibnet.models.network.ContextEmotionNet` (any registered variant), in eval mode.
        inputs: the masked triple (face, body, scene), each (B, 3, S, S); may be None when ``features`` is given.
        targets: one class index per item (or one for all).
        method: a key of :data:`CAM_METHODS`.
        features: the model's final maps for ``inputs`` from :func:`model_features`, to skip the backbone.

    Returns:
        :class:`BranchCAMs` with maps (B, n, S, S) in [0, 1].

    Raises:
        ValueError: unknown method, targets out of range, inputs of the wrong shape (the model's message), or
            a model in train mode (:meth:`torch.nn.Module.eval` it first; nothing of it is changed).
    """
    method = check_method(method)
    _require_eval(model)
    config = model.config
    size = config.input_size
    if features is None:
        if inputs is None:
            raise ValueError("branch_cams needs the masked inputs or their features")
        features = model_features(model, inputs)
    n = len(features)
    batch = features[0].shape[0]
    targets = check_targets(targets, batch, config.num_classes)
    stacked = torch.stack([f.detach() for f in features], dim=1)  # (B, n, C, h, w)
    stacked = stacked.flatten(0, 1)  # (B·n, C, h, w), item-major

    if method == ACTIVATION:
        raw = stacked.float().mean(dim=1).clamp_min(0).cpu().numpy()  # channel mean of the final map
        maps = scale_cam_image(raw, (size, size))
        logits = np.full(batch, np.nan, dtype=np.float32)
    elif method == "eigencam":
        # What BaseCAM does with the projection: ReLU, min-max + resize per map, then (aggregating its one
        # target layer) ReLU and min-max again.
        raw = np.maximum(eigen_projection(stacked), 0)
        maps = scale_cam_image(np.maximum(scale_cam_image(raw, (size, size)), 0))
        logits = _target_logits(model, features, targets)
    else:
        wrapper = _HeadForCAM(model.head, n).to(stacked.device)
        # Not `with cam:` - BaseCAM.__exit__ swallows IndexErrors; release the hooks explicitly instead.
        cam = CAM_METHODS[method](model=wrapper, target_layers=[wrapper.tap])
        try:
            cam.output_size = (size, size)
            with torch.enable_grad():
                maps = cam(stacked.float().requires_grad_(True), [ClassifierOutputTarget(t) for t in targets])
            logits = cam.outputs.detach().float().cpu().numpy()[np.arange(batch), list(targets)]
        finally:
            cam.activations_and_grads.release()
    maps = np.clip(np.asarray(maps, dtype=np.float32), 0.0, 1.0).reshape(batch, n, size, size)
    return BranchCAMs(maps, tuple(config.branches), method, targets, np.asarray(logits, dtype=np.float32))


def _target_logits(model: nn.Module, features: Sequence[torch.Tensor], targets: Sequence[int]) -> np.ndarray:
    """The fused logit of each item's target, from its final maps (what the gradient methods report)."""
    with torch.no_grad():
        logits = model.forward_head(tuple(f.detach().float() for f in features)).logits
    return logits.float().cpu().numpy()[np.arange(len(targets)), list(targets)]


def naive_branch_cams(
    model: nn.Module, inputs: Sequence[torch.Tensor], targets: Sequence[int] | int, method: str = "gradcam"
) -> BranchCAMs:
    """Reference: one pytorch-grad-cam call per branch on the whole network, gradients through the backbone.

    This is how one would use the library directly (a single-input wrapper of the model, the branch's tap as
    target layer). It hooks the shared model, so it is not safe for concurrent use; it exists to check
    :func:`branch_cams` against (same maps) and to benchmark against (``benchmarks/``).
    """
    method = check_method(method)
    _require_eval(model)
    if method == ACTIVATION:
        return branch_cams(model, inputs, targets, method)
    config = model.config
    size = config.input_size
    batch = inputs[0].shape[0]
    targets = check_targets(targets, batch, config.num_classes)

    class _Stacked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(*x.chunk(3, dim=1)).logits

    wrapper = _Stacked()
    x = torch.cat(list(inputs), dim=1)  # (B, 9, S, S)
    per_branch = []
    try:
        for b in range(config.num_branches):
            cam = CAM_METHODS[method](model=wrapper, target_layers=[model.cam_taps[b]])
            try:
                cam.output_size = (size, size)
                per_branch.append(cam(x, [ClassifierOutputTarget(t) for t in targets]))
                logits = cam.outputs.detach().float().cpu().numpy()[np.arange(batch), list(targets)]
            finally:
                cam.activations_and_grads.release()
    finally:
        model.zero_grad(set_to_none=True)
    maps = np.clip(np.stack(per_branch, axis=1).astype(np.float32), 0.0, 1.0)
    return BranchCAMs(maps, tuple(config.branches), method, targets, logits.astype(np.float32))


# --- placing maps back on the photo ---


@dataclass(frozen=True)
class ProjectedMap:
    """A branch map placed on the photo: ``values`` cover ``box`` (x1, y1, x2, y2) in original-image pixels."""

    values: np.ndarray  # (h, w) float32 in [0, 1]; h, w = the box's size in analysed pixels
    box: Box


def _extent(a: float, b: float) -> int:
    """Pixels between two coordinates on the integer grid (rounded ends, at least one)."""
    return max(round(b) - round(a), 1)


def project_map(cam: np.ndarray, region: Box, scale: float = 1.0) -> ProjectedMap:
    """Resize a branch map onto the image region its tensor covered.

    Args:
        cam: (S, S) map of a branch tensor.
        region: the rectangle, in analysed-image pixels, that the branch tensor covers (``Triple.regions``).
        scale: original / analysed size; the returned box is in original-image pixels.
    """
    import cv2

    x1, y1, x2, y2 = region
    w, h = _extent(x1, x2), _extent(y1, y2)
    values = cv2.resize(np.asarray(cam, dtype=np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    return ProjectedMap(np.clip(values, 0.0, 1.0), (x1 * scale, y1 * scale, x2 * scale, y2 * scale))


def paste(projected: ProjectedMap, canvas: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Write a projected map into ``canvas`` (H, W) of the analysed image (``scale`` = original/analysed)."""
    import cv2

    height, width = canvas.shape
    x1, y1, x2, y2 = (round(v / scale) for v in projected.box)  # the integer pixel grid of the box
    full_w, full_h = _extent(x1, x2), _extent(y1, y2)
    ix1, iy1, ix2, iy2 = max(x1, 0), max(y1, 0), min(x1 + full_w, width), min(y1 + full_h, height)
    if ix2 <= ix1 or iy2 <= iy1:
        return canvas
    values = projected.values
    if values.shape != (full_h, full_w):
        values = cv2.resize(values, (full_w, full_h), interpolation=cv2.INTER_LINEAR)
    canvas[iy1:iy2, ix1:ix2] = values[iy1 - y1 : iy2 - y1, ix1 - x1 : ix2 - x1]
    return canvas


def composite_map(
    projected: dict[str, ProjectedMap], height: int, width: int, scale: float = 1.0
) -> np.ndarray:
    """One (H, W) map of the photo as the branches saw it: the scene map everywhere, the body map over the body
    box (the scene branch saw it masked), the face map over the face box (the body branch saw it masked)."""
    canvas = np.zeros((height, width), dtype=np.float32)
    for name in ("scene", "body", "face"):
        if name in projected:
            paste(projected[name], canvas, scale)
    return canvas


# --- faithfulness: the pointing game (Zhang et al., "Top-down neural attention by excitation backprop") ---


def peak_in_image(cam: np.ndarray, region: Box) -> tuple[float, float]:
    """Image-pixel (x, y) of a branch map's maximum, given the rectangle its tensor covers."""
    h, w = cam.shape
    y, x = np.unravel_index(int(np.argmax(cam)), cam.shape)
    x1, y1, x2, y2 = region
    return x1 + (x + 0.5) / w * (x2 - x1), y1 + (y + 0.5) / h * (y2 - y1)


def pointing_hit(cam: np.ndarray, region: Box, target_box: Box, tolerance: float = 0.0) -> bool:
    """Whether the map's peak falls inside ``target_box`` (grown by ``tolerance`` pixels on every side)."""
    px, py = peak_in_image(cam, region)
    x1, y1, x2, y2 = target_box
    return x1 - tolerance <= px <= x2 + tolerance and y1 - tolerance <= py <= y2 + tolerance
