"""Exact branch attributions (sibnet.attribution): the Shapley algebra, every coalition equal to the model on
substituted inputs, the cost rules (head-only where branches do not interact, one backbone batch for SIB-Net),
no state of a shared model changed, the prepared (bf16/fp32) path, and the planted-cue proof on the trained
model of the suite."""

from __future__ import annotations

import copy
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import sibnet
from sibnet.attribution import (
    COALITION_ORDER,
    branch_attributions,
    branches_interact,
    neutral_dropout,
    neutral_features,
    neutral_inputs,
    shapley_matrix,
    shapley_values,
)
from sibnet.data.caer import CaerDataset
from sibnet.data.masking import BRANCHES
from sibnet.inference import prepare

SIZE = 32
FIGURE5 = ("concat", "attention", "sibnet")


_BUILT: dict[str, sibnet.ContextEmotionNet] = {}


def _model(name: str) -> sibnet.ContextEmotionNet:
    """A fresh small model in eval mode (a copy of one built per name: building costs ~0.4 s, a copy 0.1 s)."""
    if name not in _BUILT:
        torch.manual_seed(0)
        _BUILT[name] = sibnet.create_model(name, input_size=SIZE, resize=SIZE + 4, layer4_stride=1).eval()
    return copy.deepcopy(_BUILT[name])


def _inputs(batch: int = 2, seed: int = 1) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, 3, SIZE, SIZE, generator=g) for _ in BRANCHES)


def _probs(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        logits = model(*inputs).logits
    return torch.sigmoid(logits) if model.config.multi_label else torch.softmax(logits, -1)


# --- the algebra ---


def test_shapley_values_of_a_hand_computed_game():
    # v(∅)=0, v(f)=1, v(b)=2, v(fb)=4, v(s)=0, v(fs)=1, v(bs)=2, v(fbs)=6 (bit order: face=1, body=2, scene=4)
    v = np.array([[0, 1, 2, 4, 0, 1, 2, 6]], dtype=np.float64)
    expected = np.zeros(3)
    for order in itertools.permutations(range(3)):
        present = 0
        for player in order:
            expected[player] += (v[0, present | 1 << player] - v[0, present]) / 6
            present |= 1 << player
    np.testing.assert_allclose(shapley_values(v)[0], expected)
    assert shapley_values(v)[0].sum() == pytest.approx(v[0, -1] - v[0, 0])  # efficiency
    np.testing.assert_allclose(
        shapley_matrix(3).sum(axis=0), 0, atol=1e-12
    )  # a constant shift changes nothing
    # A branch that never changes the value gets exactly zero (the scene here adds nothing but in fbs).
    dummy = np.array([[0, 1, 2, 4, 0, 1, 2, 4]], dtype=np.float64)
    assert shapley_values(dummy)[0, 2] == 0
    assert COALITION_ORDER[3] == ("face", "body") and COALITION_ORDER[7] == BRANCHES
    with pytest.raises(ValueError, match="2\\^n"):
        shapley_values(np.zeros((1, 6)))


# --- exactness: every coalition is the model on substituted inputs ---


@pytest.mark.parametrize("name", FIGURE5)
def test_every_coalition_is_the_model_on_substituted_inputs(name):
    model = _model(name)
    inputs = _inputs()
    blank = neutral_inputs(model.config.transform, 2)
    with torch.no_grad():
        features = model.forward_features(*inputs)
    got = branch_attributions(model, inputs, [3, 5], features=features)
    for c, present in enumerate(COALITION_ORDER):
        mixed = [x if b in present else o for b, x, o in zip(BRANCHES, inputs, blank)]
        np.testing.assert_allclose(got.probabilities[:, c], _probs(model, mixed).numpy(), atol=2e-5)
    # Efficiency, and "all" is the model's own prediction for the target.
    np.testing.assert_allclose(got.values.sum(1), got.score_all - got.score_none, atol=1e-5)
    np.testing.assert_allclose(got.score_all, _probs(model, inputs).numpy()[[0, 1], [3, 5]], atol=2e-5)
    # Without the prediction pass's maps the result is the same.
    again = branch_attributions(model, inputs, [3, 5])
    np.testing.assert_allclose(again.probabilities, got.probabilities, atol=2e-5)
    # Re-targeting reads the stored probabilities.
    other = got.with_targets(7)
    fresh = branch_attributions(model, inputs, 7, features=features)
    np.testing.assert_allclose(other.values, fresh.values, atol=1e-6)
    assert set(got.for_item(0)) == set(BRANCHES) and got.coalition_table(1)["none"] == got.score_none[1]


def test_the_staged_sibnet_path_equals_the_plain_batched_path(monkeypatch):
    model = _model("sibnet")
    inputs = _inputs(batch=3, seed=2)
    staged = branch_attributions(model, inputs, 0)
    monkeypatch.setattr("sibnet.attribution._staged", lambda m: False)
    plain = branch_attributions(model, inputs, 0)
    np.testing.assert_allclose(staged.probabilities, plain.probabilities, atol=2e-5)


def test_non_interacting_models_need_only_their_head(monkeypatch):
    model = _model("attention")
    assert not branches_interact(model.config) and branches_interact(_model("sibnet").config)
    inputs = _inputs()
    with torch.no_grad():
        features = model.forward_features(*inputs)
    neutral_features(model)  # cached once per model and recipe

    def no_backbone(*args, **kwargs):
        raise AssertionError("the backbone ran")

    monkeypatch.setattr(model, "forward_features", no_backbone)
    got = branch_attributions(model, None, 1, features=features)
    assert got.values.shape == (2, 3)
    with pytest.raises(ValueError, match="masked inputs"):
        branch_attributions(_model("sibnet"), None, 1, features=features)


def test_a_shared_model_is_left_as_it_was_and_a_train_mode_model_is_refused():
    model = _model("sibnet")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    versions = [t._version for t in model.parameters()]
    branch_attributions(model, _inputs(), 2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [t._version for t in model.parameters()] == versions
    assert not model.training and all(p.grad is None for p in model.parameters())
    model.train()
    with pytest.raises(ValueError, match="eval mode"):
        branch_attributions(model, _inputs(), 2)


def test_bad_shapes_and_targets_are_refused():
    model = _model("concat")
    with pytest.raises(ValueError, match="expects 3 tensors"):
        branch_attributions(model, _inputs()[:2], 0)
    with pytest.raises(ValueError, match="out of range"):
        branch_attributions(model, _inputs(), 99)
    with pytest.raises(ValueError, match="one target per item"):
        branch_attributions(model, _inputs(), [0, 1, 2])


def test_the_neutral_maps_follow_the_weights():
    model = _model("concat")
    first = [m.clone() for m in neutral_features(model)]
    assert all(torch.equal(a, b) for a, b in zip(first, neutral_features(model)))  # cached
    with torch.no_grad():
        model.branches[0].stem[0].weight.mul_(0.5)
    assert not torch.equal(first[0], neutral_features(model)[0])  # recomputed after the change


def test_neutral_dropout_replaces_whole_branches_with_the_neutral_input():
    transform = _model("concat").config.transform
    inputs = _inputs(batch=64)
    blank = neutral_inputs(transform, 64)
    assert all(torch.equal(a, b) for a, b in zip(neutral_dropout(inputs, transform, 0.0), inputs))
    assert all(torch.equal(a, b) for a, b in zip(neutral_dropout(inputs, transform, 1.0), blank))
    out = neutral_dropout(inputs, transform, 0.5, torch.Generator().manual_seed(3))
    again = neutral_dropout(inputs, transform, 0.5, torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(out, again))  # reproducible with a generator
    for x, o, y in zip(inputs, blank, out):
        kept = (y == x).flatten(1).all(1)
        dropped = (y == o).flatten(1).all(1)
        assert bool((kept ^ dropped).all())  # each item's branch is whole: its own input or the neutral one
        assert 16 <= int(dropped.sum()) <= 48
    assert not torch.equal(
        (out[0] == blank[0]).flatten(1).all(1), (out[1] == blank[1]).flatten(1).all(1)
    )  # branches drawn independently
    with pytest.raises(ValueError, match="p must be"):
        neutral_dropout(inputs, transform, 1.5)


@pytest.mark.parametrize("name", FIGURE5)
def test_prepared_models_give_the_same_attributions(name):
    """The demo runs the prepared copies (sibnet.inference): fp32 to rounding, bf16 within its tolerance."""
    model = _model(name)
    inputs = _inputs()
    reference = branch_attributions(model, inputs, [4, 9])
    fast = prepare(model, "cpu", "fp32")
    got = branch_attributions(fast, inputs, [4, 9], features=fast.features(*inputs))
    np.testing.assert_allclose(got.probabilities, reference.probabilities, atol=1e-4)
    try:
        half = prepare(model, "cpu", "bf16")
    except ValueError:
        return  # no bf16 on this CPU: the fp32 check above is the whole test
    got = branch_attributions(half, inputs, [4, 9], features=half.features(*inputs))
    assert np.abs(got.probabilities - reference.probabilities).max() <= 0.02
    np.testing.assert_allclose(got.values.sum(1), got.score_all - got.score_none, atol=1e-5)
    # The neutral trajectory is the prepared copy's own (bf16, cached for it), the plain model's stays fp32.
    assert neutral_features(half._backbone)[0].dtype == torch.bfloat16
    assert neutral_features(model)[0].dtype == torch.float32
    model.train()  # the original's mode decides, as for the head
    with pytest.raises(ValueError, match="eval mode"):
        branch_attributions(half, inputs, 0)


# --- the planted-cue proof (the suite's trained SIB-Net) ---


def _attribution_figures(model, data: CaerDataset, cues: dict, batch: int = 16) -> dict:
    """Per cue region, whether that branch got the largest attribution for the item's true class, and more."""
    hits: dict[str, list[bool]] = {b: [] for b in BRANCHES}
    values, scene_largest, correct = [], [], []
    for start in range(0, len(data), batch):
        idx = list(range(start, min(start + batch, len(data))))
        triples = [data.triple(i) for i in idx]
        inputs = tuple(torch.stack([t.tensors[b] for t in triples]) for b in range(3))
        records = [data.records[i] for i in idx]
        got = branch_attributions(model, inputs, [r.label for r in records])
        values.append(got.values)
        for row, record in enumerate(records):
            largest = int(np.argmax(got.values[row]))
            scene_largest.append(largest == BRANCHES.index("scene"))
            correct.append(int(np.argmax(got.probabilities[row, -1])) == record.label)
            for cue in cues[record.key]["cues"]:
                hits[cue["region"]].append(largest == BRANCHES.index(cue["region"]))
    values = np.concatenate(values)
    return {
        "per_branch": {b: (round(float(np.mean(h)), 3), len(h)) for b, h in hits.items() if h},
        "face_and_body": round(float(np.mean(hits["face"] + hits["body"])), 3),
        "scene_largest_share": round(float(np.mean(scene_largest)), 3),
        "mean_value": [round(float(v), 4) for v in values.mean(0)],
        "mean_abs_value": round(float(np.abs(values).mean()), 4),
        "accuracy": round(float(np.mean(correct)), 3),
    }


def _neutral_trained(model, run, epochs: int = 1, p: float = 0.25, lr: float = 2e-4, max_steps: int = 13):
    """A copy of ``model`` trained ``epochs`` more (at most ``max_steps`` steps of 16: half an epoch here) on the
    run's training frames, each branch of each item replaced by the neutral input with probability ``p``
    (:func:`neutral_dropout`, what ``sibnet.train --neutral-dropout`` applies), softmax CE as the run, Adam with
    the rate decaying linearly from ``lr`` to 0."""
    tuned = copy.deepcopy(model).train()
    val_fraction = float(run.argv[run.argv.index("--val-fraction") + 1])
    data = CaerDataset(run.root, "train", transform=model.config.transform, val_fraction=val_fraction)
    loader = torch.utils.data.DataLoader(
        data, batch_size=16, shuffle=True, num_workers=0, generator=torch.Generator().manual_seed(0)
    )
    optimizer = torch.optim.Adam(tuned.parameters(), lr=lr)
    steps = min(epochs * len(loader), max_steps)  # the rate decays linearly to 0: the last steps settle
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    g = torch.Generator().manual_seed(1)
    for epoch in range(epochs):
        data.set_epoch(epoch)
        for step, batch in enumerate(loader):
            if epoch * len(loader) + step >= steps:
                break
            xs = neutral_dropout([batch[b] for b in BRANCHES], model.config.transform, p, g)
            loss = torch.nn.functional.cross_entropy(tuned(*xs).logits, batch["label"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return tuned.eval()


@pytest.mark.slow
def test_planted_cue_branch_gets_the_largest_attribution(planted_caer):
    """On held-out planted-cue frames (one cue each, in the face or the body), a model trained in the test to
    know the neutral input gives the cue's branch the largest attribution for the true class on >= 90 % of
    them; the suite's model as trained and an untrained one are reported beside it.

    Measured (test-artifacts/attribution_planted.json) on one thread, the suite's setting: the suite's SIB-Net
    as trained, face cues 1.00 (33), body cues 0.81 (37); on two threads the same recipe gave body 0.38: the
    model never saw a blank face and may answer one with a fixed class ("Anger") whatever the body holds, so
    the body cue counts only together with the real face and the Shapley value splits that interaction (see
    sibnet.attribution's docstring). After 13 steps (half an epoch, ~15 s) with each branch made neutral with
    probability 0.25: face 1.00, body 0.97, accuracy 0.94 (8 steps: the same; a whole epoch: body 0.95; on
    the two-thread model a whole epoch gave body 0.97-1.00 over three seeds). Untrained: mean |value| 0.007
    against 0.29-0.30, the largest one spread over the branches (face 0.39, body 0.16 of their cues; the scene
    largest on 29 % of the items). There are no scene cues in this data (tests/test_cam.py says why): the
    scene's figure is how often it gets the largest share (0 % trained) and its mean value.
    """
    model = sibnet.load_model(planted_caer.checkpoint)
    test = CaerDataset(planted_caer.root, "test", transform=model.config.transform)
    as_trained = _attribution_figures(model, test, planted_caer.cues)
    torch.manual_seed(0)
    untrained = _attribution_figures(sibnet.build_model(model.config).eval(), test, planted_caer.cues)
    torch.manual_seed(0)
    tuned = _attribution_figures(_neutral_trained(model, planted_caer), test, planted_caer.cues)
    report = {"neutral_trained": tuned, "as_trained": as_trained, "untrained": untrained}
    artifacts = Path(__file__).resolve().parent.parent / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "attribution_planted.json").write_text(json.dumps(report, indent=2) + "\n")
    print("planted-cue attributions:", json.dumps(report, indent=1))

    assert tuned["per_branch"]["face"][1] >= 25 and tuned["per_branch"]["body"][1] >= 25, report
    assert tuned["face_and_body"] >= 0.9, report  # issue 15's bar
    assert all(tuned["per_branch"][b][0] >= 0.85 for b in ("face", "body")), report
    assert tuned["accuracy"] >= 0.85 and tuned["scene_largest_share"] <= 0.05, report
    # As trained, the face cues (no blank-face interaction) are found all the same.
    assert as_trained["per_branch"]["face"][0] >= 0.8, report
    # Untrained, the values are small: the trained models' are an order of magnitude larger.
    assert untrained["mean_abs_value"] * 10 <= min(tuned["mean_abs_value"], as_trained["mean_abs_value"]), (
        report
    )
    assert not math.isnan(tuned["face_and_body"])
