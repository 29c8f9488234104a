"""How much did face, body and scene each move a score? Exact branch attributions (paper §3.1, §4.2 Eq. 3).

The branch maps of :mod:`sibnet.cam` show *where* each branch looks, each scaled on its own; they cannot say
*how much* each branch moved the decision. This module answers that, exactly, for every model of Table 2.

Definition. For a model, a person and a target class k, the branches are the players of a cooperative game.
The value of a coalition S (a subset of the branches) is

    v(S) = p_k(branches in S get the person's inputs, the others the neutral input) − p_k(all neutral)

and the attribution of branch i is its Shapley value

    φ_i = Σ_{S ⊆ N∖{i}} |S|! (n − |S| − 1)! / n! · (v(S ∪ {i}) − v(S)),

computed from all 2^n coalitions (8 for three branches): exact, no sampling. Why these choices:

- **Shapley values**: the branches interact — the fused MLP is not additive, attention fusion re-weights one
  branch by the others, and SIB-Net's SCM/ICM (§3.2, §3.3) mix them inside the backbone — so "drop one
  branch" (leave-one-out) and "keep only one branch" give different answers and neither adds up to the
  prediction. The Shapley value is the one attribution that is efficient (Σ_i φ_i = p_k(all) − p_k(none),
  tested), symmetric, zero for a branch that never changes the score, and linear; it is the average, over
  the 3! orders of revealing the branches, of what revealing branch i adds. With three players it costs 8
  evaluations, so there is no reason to approximate it.
- **The neutral input** is the all-zero masked image of Eq. 3: pixel zeros, passed through the model's own
  input recipe (:class:`~sibnet.data.masking.InputTransform`: resized, cropped, normalised, so -mean/std per
  channel). It is what Eq. 3 puts wherever a region carries no evidence for a branch (the face inside the
  body image, the body inside the scene image), and for the scene branch it is a whole input the model is
  trained on: the scene is all zeros whenever the body fills the frame (see :mod:`sibnet.data.masking`). It
  is not a perturbation chosen for the occasion (noise, blur, a mean image), and it is the same for every
  photo, so it is one constant per model and recipe. p_k(all neutral) is the model's prior with no
  evidence at all; the attributions split the move from that prior to the prediction.
- **Probabilities**, not logits: sigmoid scores for multi-label checkpoints (EMOTIC), softmax for
  single-label ones (CAER-S), as ``ModelConfig.multi_label`` says. They are what the app shows, they are
  bounded (each φ_i lies in [-1, 1]), and the same definition on the same scale lets the three Figure-5
  models be compared with each other. (Softmax logits are defined up to a shift, so logit attributions
  would not even be comparable between classes.)

What the values mean depends on the model knowing that input. A wholly blank *face* or *body* never occurs in
the recipe's training data (a missing face is estimated from the body, a missing body is the whole photo), so
a model trained on it alone may answer a blank face with an arbitrary class, and then the branch that holds
the evidence only counts together with the other one: measured on the planted-cue SIB-Net of the tests (one
cue per frame, in the face or the body), a blank face with a body without cue reads "Anger" (0.78), a body cue
with the face and scene neutral gives its class 0.25 on average against 0.80 with the real face, and the
Shapley value splits that interaction between face and body, so the body gets the largest attribution on only
38 % of the body-cue frames (face-cue frames: 100 %; the same recipe trained on one thread instead of two
gives 81 %: how much credit the interaction takes is the model's own). Fine-tuned one epoch with each branch of each item
replaced by the neutral input with probability 0.25 (:func:`neutral_dropout`), it gives face 100 %, body
97-100 % over three seeds of that epoch (half an epoch on the one-thread model: 97 %,
``tests/test_attribution.py::test_planted_cue_branch_gets_the_largest_attribution``);
trained from the start with ``sibnet.train --neutral-dropout 0.1`` (one run, validation accuracy 0.98 against
1.00 without) it gives face 100 %, body 100 %: the attributions then say which branch the decision rests
on. So attributions of a model trained without that substitution are exact for the game defined here, but
they describe how the model reacts to missing branches it has never been shown; training with
``--neutral-dropout`` is what makes "the branch is absent" mean "no evidence" to it.

Coalition order (:data:`COALITION_ORDER`, the columns of ``coalition_scores``): coalition ``c`` holds branch
``b`` (the b-th of ``model.config.branches``) exactly when bit ``b`` of ``c`` is set. For face, body, scene:
0 = none, 1 = face, 2 = body, 3 = face+body, 4 = scene, 5 = face+scene, 6 = body+scene, 7 = all.

Cost — nothing computed twice:

- A model whose branches do not interact before fusion (no SCM, no ICM: concatenation, attention, the
  single-branch models; :func:`branches_interact`) maps each branch's input to its final map on its own. A
  neutral branch's final map is then one constant per model and recipe (:func:`neutral_features`, cached,
  thread-safe, without touching the model), the present branches' maps are the prediction pass's
  (``features=``), and every coalition is a head evaluation only: one head call on 2^n·B stacked maps.
- SIB-Net's SCM and ICM mix the branches inside the backbone, so a partly neutral triple has maps of its own:
  the 2^n − 2 mixed coalitions of every person go through the backbone together, all people and coalitions
  of a photo in one batch per step; "all" comes from ``features=`` (or joins that batch) and "none" from the
  cache. Within that batch each distinct partial computation runs once (:func:`_staged_maps`: a branch's
  stem and layer1 do not depend on the other branches, and after SCM the face branch still depends on the
  face alone), which saves about a third of the backbone work. The head then runs once on all coalitions.

Thread-safety is that of :func:`sibnet.cam.branch_cams`: the shared model is only called, never changed — no
hooks, no gradients, no train/eval switch (it must already be in eval mode: in train mode batch-norm would mix
the coalitions of the batch and update its running statistics). The neutral-feature cache is guarded by a
lock and keyed by the model's parameter and buffer versions, so it is recomputed when the weights change.
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from sibnet.cam import check_targets
from sibnet.config import ModelConfig

# The neutral input lives with the recipe that makes it (training uses it too, without this module's imports).
from sibnet.data.masking import BRANCHES, neutral_inputs
from sibnet.data.masking import neutral_dropout as neutral_dropout  # part of this module's API too
from sibnet.inference import InferenceModel
from sibnet.models.network import ContextEmotionNet


def branches_interact(config: ModelConfig) -> bool:
    """Whether a branch's final map depends on the other branches' inputs (SCM or ICM in the backbone).

    When False, a neutral branch's final map does not depend on the other inputs, so coalitions are head
    evaluations of cached and prediction-pass maps. A new cross-branch module in the backbone must be
    named here.
    """
    return bool(config.scm or config.icm)


@lru_cache(maxsize=8)
def _coalitions(branches: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    n = len(branches)
    return tuple(tuple(b for i, b in enumerate(branches) if c >> i & 1) for c in range(2**n))


COALITION_ORDER: tuple[tuple[str, ...], ...] = _coalitions(("face", "body", "scene"))  # see module docstring


@lru_cache(maxsize=8)
def shapley_matrix(n: int) -> np.ndarray:
    """The (2^n, n) matrix M with ``values = coalition_scores @ M`` (exact Shapley values, float64).

    Row ``c`` is the coalition of :data:`COALITION_ORDER`'s bit rule. Subtracting ``score_none`` from every
    column first would not change the result: each column of M sums to zero.
    """
    m = np.zeros((2**n, n), dtype=np.float64)
    for i in range(n):
        for c in range(2**n):
            if c >> i & 1:
                continue
            size = bin(c).count("1")
            weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            m[c | 1 << i, i] += weight  # v(S ∪ {i}) ...
            m[c, i] -= weight  # ... − v(S)
    m.setflags(write=False)
    return m


def shapley_values(coalition_scores: np.ndarray) -> np.ndarray:
    """Exact Shapley values (B, n) from scores (B, 2^n) in :data:`COALITION_ORDER`'s bit order."""
    scores = np.asarray(coalition_scores, dtype=np.float64)
    n = scores.shape[-1].bit_length() - 1 if scores.ndim == 2 else 0
    if scores.ndim != 2 or 2**n != scores.shape[-1] or n < 1:
        raise ValueError(f"coalition scores must be (B, 2^n) with n >= 1, got shape {scores.shape}")
    return scores @ shapley_matrix(n)


@dataclass(frozen=True)
class BranchAttributions:
    """Attributions of one model for a batch of people; item i, branch ``branches[b]`` is ``values[i, b]``.

    Attributes:
        values: (B, n) float32 Shapley values of the target's probability; each row sums to
            ``score_all - score_none`` (efficiency).
        coalition_scores: (B, 2^n) float32 target probability per coalition, columns in :attr:`coalitions`
            order (bit b of the column index set = branch b present).
        score_all: (B,) the target probability with every branch present (the model's prediction).
        score_none: (B,) the target probability with every branch neutral (the model's no-evidence prior).
        targets: target class index per item.
        branches: the model's branches, in input order (``model.config.branches``).
        coalitions: the branches present in each column of ``coalition_scores``.
        probabilities: (B, 2^n, K) float32 probability of every class per coalition, so
            :meth:`with_targets` re-targets without running the model again.
    """

    values: np.ndarray
    coalition_scores: np.ndarray
    score_all: np.ndarray
    score_none: np.ndarray
    targets: tuple[int, ...]
    branches: tuple[str, ...]
    coalitions: tuple[tuple[str, ...], ...]
    probabilities: np.ndarray

    def for_item(self, i: int) -> dict[str, float]:
        """Branch name → attribution of item i."""
        return {name: float(self.values[i, b]) for b, name in enumerate(self.branches)}

    def coalition_table(self, i: int) -> dict[str, float]:
        """Coalition label ("none", "face", "face+body", ...) → item i's target probability."""
        return {"+".join(c) or "none": float(s) for c, s in zip(self.coalitions, self.coalition_scores[i])}

    def with_targets(self, targets: Sequence[int] | int) -> BranchAttributions:
        """The same people's attributions for other target classes, from :attr:`probabilities` (no model call)."""
        batch, _, num_classes = self.probabilities.shape
        targets = check_targets(targets, batch, num_classes)
        scores = self.probabilities[np.arange(batch), :, list(targets)]  # (B, 2^n)
        return replace(self, targets=targets, **_summaries(scores))


def _summaries(scores: np.ndarray) -> dict[str, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float32)
    return {
        "values": shapley_values(scores).astype(np.float32),
        "coalition_scores": scores,
        "score_all": scores[:, -1].copy(),
        "score_none": scores[:, 0].copy(),
    }


# --- the neutral input's cached final maps ---


_NEUTRAL_LOCK = threading.Lock()
# model → {(recipe, device, dtype): (state key, neutral trajectory)}. The trajectory is the neutral triple's
# per-branch output of every backbone step (:func:`_steps`), each (1, C, h, w); its last entry is the final
# maps. Weak keys: the cache never keeps a model alive; one entry per recipe and device, replaced when the
# weights change.
_NEUTRAL: weakref.WeakKeyDictionary[nn.Module, dict[tuple, tuple[tuple, list[tuple[torch.Tensor, ...]]]]] = (
    weakref.WeakKeyDictionary()
)


def _state_key(model: nn.Module) -> tuple:
    # Every in-place update (optimiser step, load_state_dict, running statistics) bumps a tensor's version
    # counter, and moving or replacing a tensor changes its storage: either invalidates the cached maps.
    return tuple((t.data_ptr(), t._version) for t in itertools.chain(model.parameters(), model.buffers()))


# The backbones of prepared models (sibnet.inference.InferenceModel) → where and in what dtype they run: their
# fused convolutions hold their weights outside parameters, so the parameters cannot tell.
_PREPARED_PLACE: weakref.WeakKeyDictionary[nn.Module, tuple[torch.device, torch.dtype]] = (
    weakref.WeakKeyDictionary()
)


def _place(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    known = _PREPARED_PLACE.get(model)
    if known is not None:
        return known
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    return (first.device, first.dtype) if first is not None else (torch.device("cpu"), torch.float32)


def _neutral_trajectory(model: nn.Module) -> list[tuple[torch.Tensor, ...]]:
    """The cached neutral trajectory of ``model``, computed on first use (see :func:`neutral_features`)."""
    device, dtype = _place(model)
    slot, state = (model.config.transform, str(device), dtype), _state_key(model)
    with _NEUTRAL_LOCK:
        entry = _NEUTRAL.get(model, {}).get(slot)
    if entry is not None and entry[0] == state:
        return entry[1]
    _require_eval(model)
    blank = _as_input(model, neutral_inputs(model.config.transform, 1, device, dtype))
    with torch.no_grad():
        if _staged(model):  # every step's output: the staged path reads the neutral variant at each of them
            trajectory, xs = [], _branch_inputs(model, blank)
            for kind, op in _steps(model):
                xs = [f(x) for f, x in zip(op, xs)] if kind == "trunk" else list(op(xs))
                trajectory.append(tuple(xs))
        else:
            trajectory = [tuple(model.forward_features(*blank))]
    with _NEUTRAL_LOCK:  # two first calls racing compute the same maps; the later one is kept
        _NEUTRAL.setdefault(model, {})[slot] = (state, trajectory)
    return trajectory


def neutral_features(model: nn.Module) -> tuple[torch.Tensor, ...]:
    """The model's final maps of the all-neutral triple, each (1, C, h, w): computed once, then cached.

    The cache is per model (weakly held) and per input recipe, device and dtype, thread-safe, and recomputed
    when the model's parameters or buffers change. The model is only called (no state of it changes).
    """
    return _neutral_trajectory(model)[-1]


# --- SIB-Net's mixed coalitions, each distinct partial computation once ---
#
# In a mixed coalition most of the backbone's work repeats: a branch's stem and layer1 see either the person's
# input or the neutral one, whatever the other branches get; SCM's recurrence runs face → body → scene with
# h_0 = 0, so after it the face branch still depends on the face input only and the body branch on face and
# body; only ICM makes every branch depend on every input. So each step's output for branch b depends on the
# coalition c only through ``c & dep[b]`` (the inputs b has mixed in so far): the trunk layers run once per
# distinct variant, the all-neutral variant comes from the cached trajectory, and SCM/ICM (cheap next to the
# trunks) run on the coalitions aligned. For one person this cuts the six mixed coalitions' backbone FLOPs by
# about 37 % at 224 px. The step list mirrors ContextEmotionNet.forward_features; a subclass that overrides it
# takes the plain batched path, and tests compare both with the full model on substituted inputs.


def _staged(model: nn.Module) -> bool:
    return (
        branches_interact(model.config) and type(model).forward_features is ContextEmotionNet.forward_features
    )


def _steps(model: ContextEmotionNet) -> list[tuple[str, object]]:
    """The backbone of ``forward_features`` as steps: ("trunk", per-branch modules), ("scm" | "icm", module)."""
    steps: list[tuple[str, object]] = [("trunk", [t.stem for t in model.branches])]
    for stage in range(1, 5):
        steps.append(("trunk", [t.layers[stage - 1] for t in model.branches]))
        key = str(stage)
        if key in model.scm:
            steps.append(("scm", model.scm[key]))
        if key in model.icm:
            steps.append(("icm", model.icm[key]))
    return steps


def _as_input(model: nn.Module, xs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Inputs as ``model``'s backbone takes them: its device and dtype; channels-last for a prepared one."""
    device, dtype = _place(model)
    if model in _PREPARED_PLACE:
        return tuple(x.to(device=device, dtype=dtype, memory_format=torch.channels_last) for x in xs)
    return tuple(x.to(device=device, dtype=dtype) for x in xs)


def _branch_inputs(model: nn.Module, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The model's (face, body, scene) inputs in ``config.branches`` order."""
    return [inputs[BRANCHES.index(b)] for b in model.config.branches]


def _staged_maps(
    model: ContextEmotionNet, inputs: Sequence[torch.Tensor], coalitions: Sequence[int], batch: int
) -> dict[int, tuple[torch.Tensor, ...]]:
    """Final maps (each (B, C, h, w)) of every coalition in ``coalitions``, each partial result computed once."""
    trajectory = _neutral_trajectory(model)
    n = model.config.num_branches
    dep = [1 << b for b in range(n)]  # the inputs each branch's current map depends on
    # state[b]: variant (c & dep[b], never 0) → (B, C, h, w); variant 0 is the cached neutral trajectory.
    state = [{1 << b: x} for b, x in enumerate(_branch_inputs(model, inputs))]

    def get(b: int, variant: int, step: int) -> torch.Tensor:
        return state[b][variant] if variant else trajectory[step][b].expand(batch, -1, -1, -1)

    for step, (kind, op) in enumerate(_steps(model)):
        if kind == "trunk":
            for b, layer in enumerate(op):
                variants = list(state[b])
                out = layer(torch.cat([state[b][v] for v in variants])).split(batch)
                state[b] = dict(zip(variants, out))
            continue
        aligned = [torch.cat([get(b, c & dep[b], step - 1) for c in coalitions]) for b in range(n)]
        out = [m.split(batch) for m in op(aligned)]
        dep = (
            [functools.reduce(operator.or_, dep[: b + 1]) for b in range(n)]
            if kind == "scm"
            else [2**n - 1] * n
        )
        state = [{} for _ in range(n)]
        for j, c in enumerate(coalitions):
            for b in range(n):
                if c & dep[b]:
                    state[b].setdefault(c & dep[b], out[b][j])
    last = len(trajectory) - 1
    return {c: tuple(get(b, c & dep[b], last) for b in range(n)) for c in coalitions}


# --- the attributions ---


def _require_eval(model: nn.Module) -> None:
    if model.training:
        raise ValueError(
            "branch_attributions needs the model in eval mode (call model.eval() once after loading): in train "
            "mode batch-norm would mix the coalitions of one batch and update its statistics, and this "
            "function never switches a shared model's mode"
        )


def _check_features(features: Sequence[torch.Tensor], n: int) -> tuple[torch.Tensor, ...]:
    features = tuple(f.detach() for f in features)
    if len(features) != n or any(f.ndim != 4 for f in features):
        raise ValueError(f"features must be the model's {n} final maps, each (B, C, h, w)")
    if len({f.shape[0] for f in features}) != 1:
        raise ValueError(f"features must share one batch size, got {[tuple(f.shape) for f in features]}")
    return features


def _check_inputs(
    inputs: Sequence[torch.Tensor], batch: int | None, config: ModelConfig
) -> tuple[torch.Tensor, ...]:
    inputs = tuple(inputs)
    if batch is None:
        batch = inputs[0].shape[0] if inputs and isinstance(inputs[0], torch.Tensor) else -1
    shape = (batch, 3, config.input_size, config.input_size)
    if len(inputs) != 3 or any(not isinstance(x, torch.Tensor) or tuple(x.shape) != shape for x in inputs):
        got = [tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__ for x in inputs]
        raise ValueError(f"{config.name} expects 3 tensors (face, body, scene), each {shape}; got {got}")
    return inputs


def branch_attributions(
    model: nn.Module | InferenceModel,
    inputs: Sequence[torch.Tensor] | None,
    targets: Sequence[int] | int,
    features: Sequence[torch.Tensor] | None = None,
) -> BranchAttributions:
    """Exact Shapley attributions of each branch to each item's target probability (see the module docstring).

    Args:
        model: a :class:`sibnet.models.network.ContextEmotionNet` (any registered variant), in eval mode, or
            its :class:`sibnet.inference.InferenceModel` (from :func:`sibnet.inference.prepare`): then the
            backbone work runs on the prepared copy (its layout and precision) and the head is the original
            float32 one, as in the prediction pass of :mod:`demo.pipeline`.
        inputs: the masked triple (face, body, scene), each (B, 3, S, S), as the model takes it. May be None
            when ``features`` is given and the branches do not interact (concatenation, attention); SIB-Net
            needs it, its mixed coalitions run through the backbone.
        targets: one class index per item (or one for all).
        features: the model's final maps of ``inputs`` (``model.forward_features(*inputs)``, e.g. from the
            prediction pass or :func:`sibnet.cam.model_features`), to skip the backbone for the full triple.

    Returns:
        :class:`BranchAttributions` for the B items.

    Raises:
        ValueError: the model is in train mode, neither inputs nor features (or no inputs for SIB-Net),
            targets out of range, or inputs/features of the wrong shape.
    """
    if isinstance(
        model, InferenceModel
    ):  # the backbone runs on the prepared copy, the head is the original's
        net, body = model.model, model._backbone
        with _NEUTRAL_LOCK:
            _PREPARED_PLACE.setdefault(body, (model.device, model.dtype))
    else:
        net = body = model
    _require_eval(net)
    config: ModelConfig = net.config
    n = config.num_branches
    full = 2**n - 1
    interact = branches_interact(config)
    if inputs is None and (features is None or interact):
        need = (
            "the masked inputs (its branches interact in the backbone)" if interact else "inputs or features"
        )
        raise ValueError(f"branch_attributions on {config.name} needs {need}")
    if features is not None:
        features = _check_features(features, n)
    batch = features[0].shape[0] if features is not None else None
    if inputs is not None:
        inputs = _check_inputs(inputs, batch, config)
        batch = inputs[0].shape[0]
    targets = check_targets(targets, batch, config.num_classes)
    neutral = neutral_features(body)

    # What needs the backbone, in one batch: SIB-Net's mixed coalitions, and the full triple when no features
    # were passed. For the other models the full triple is the only backbone work (none with features).
    rows = [*(range(1, full) if interact else ()), *([full] if features is None else [])]
    maps_of: dict[int, tuple[torch.Tensor, ...]] = {0: tuple(m.expand(batch, -1, -1, -1) for m in neutral)}
    with torch.no_grad():
        if rows and _staged(body):
            maps_of.update(_staged_maps(body, _as_input(body, inputs), rows, batch))
        elif rows:
            device, dtype = _place(body)
            blank = neutral_inputs(config.transform, batch, device, dtype)
            inputs = _as_input(body, inputs)
            where = [BRANCHES.index(b) for b in config.branches]  # the model input carrying each branch
            parts = [
                torch.cat([x if k in where and c >> where.index(k) & 1 else o for c in rows])
                for k, (x, o) in enumerate(zip(inputs, blank))
            ]
            out = body.forward_features(*_as_input(body, parts))
            maps_of.update(
                {c: tuple(m[j * batch : (j + 1) * batch] for m in out) for j, c in enumerate(rows)}
            )
    if features is not None:
        maps_of[full] = features
    if not interact:  # a branch's map is its own input's: the prediction pass's or the neutral constant
        for c in range(1, full):
            maps_of[c] = tuple(maps_of[full][b] if c >> b & 1 else maps_of[0][b] for b in range(n))

    # One head evaluation for all coalitions of all items: (2^n·B, C, h, w) per branch, coalition-major, in
    # float32 (a prepared backbone's maps are cast, as its prediction pass casts them).
    stacked = [torch.cat([maps_of[c][b].float() for c in range(full + 1)]).contiguous() for b in range(n)]
    with torch.no_grad():
        logits = net.forward_head(stacked).logits.float()
    probs = torch.sigmoid(logits) if config.multi_label else torch.softmax(logits, dim=-1)
    probs = probs.view(full + 1, batch, -1).transpose(0, 1).cpu().numpy().astype(np.float32)  # (B, 2^n, K)
    scores = probs[np.arange(batch), :, list(targets)]  # (B, 2^n)
    return BranchAttributions(
        targets=targets,
        branches=tuple(config.branches),
        coalitions=_coalitions(tuple(config.branches)),
        probabilities=probs,
        **_summaries(scores),
    )
