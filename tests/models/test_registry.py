"""Registered model builders and the paper's Table-2 rows (sibnet.models.registry)."""

from __future__ import annotations

import pytest
import torch

import sibnet
from sibnet.losses import ContextLoss
from sibnet.models.backbone import STAGE_CHANNELS
from sibnet.models.icm import icm_parameter_count
from sibnet.models.scm import scm_parameter_count

SIZE = 64  # small inputs keep the suite fast; the architecture is size-agnostic above 32 px


RESNET18_TRUNK_PARAMS = 11_176_512  # torchvision resnet18 without its fc layer


def _inputs(batch: int = 2, size: int = SIZE) -> list[torch.Tensor]:
    return [torch.randn(batch, 3, size, size) for _ in range(3)]


def _small(name: str, **kw) -> sibnet.ContextEmotionNet:
    return sibnet.create_model(name, input_size=SIZE, resize=SIZE + 4, **kw)


def test_required_names_are_registered():
    names = sibnet.list_models()
    for required in ("face", "body", "scene", "concat", "attention", "sibnet"):
        assert required in names
    assert {row.model for row in sibnet.TABLE2.values()} <= set(names)
    assert len(sibnet.TABLE2) == 16


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="valid names: face, body, scene"):
        sibnet.create_model("resnet50")


@pytest.mark.parametrize("name", sibnet.list_models())
def test_every_model_trains_and_gradients_reach_every_module(name: str):
    model = _small(name, num_classes=5)
    row = sibnet.resolve_variant(name)
    loss_fn = ContextLoss(row.loss)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    target = torch.tensor([[1, 0, 0, 1, 0], [0, 1, 0, 0, 0]], dtype=torch.float32)
    x = _inputs()
    # Step 1 moves zero-initialised ICM BN scales off zero; step 2's gradients must then reach everything.
    for _ in range(2):
        opt.zero_grad()
        out = model(*x)
        assert out.logits.shape == (2, 5)
        assert torch.isfinite(out.logits).all()
        if model.config.branch_heads:
            assert out.branch_logits is not None and len(out.branch_logits) == 3
            assert all(b.shape == (2, 5) for b in out.branch_logits)
        else:
            assert out.branch_logits is None
        loss = loss_fn(out.logits, target, out.branch_logits).total
        assert torch.isfinite(loss)
        loss.backward()
        opt.step()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient reaches {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient in {pname}"
    for mname, module in model.named_modules():
        params = list(module.parameters(recurse=False))
        if params:
            assert any(p.grad.abs().sum() > 0 for p in params), f"{name}: zero gradient everywhere in {mname}"


@pytest.mark.parametrize("label", list(sibnet.TABLE2))
def test_every_table2_row_trains_one_step(label: str):
    row = sibnet.TABLE2[label]
    model = _small(row.model, num_classes=4)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    out = model(*_inputs())
    loss = ContextLoss(row.loss)(out.logits, torch.eye(4)[:2], out.branch_logits)
    loss.total.backward()
    opt.step()
    assert torch.isfinite(loss.total)
    # Adam moves every parameter that got a gradient (ICM convs sit behind a zero-initialised BN scale
    # at step 0, so theirs is exactly zero until that scale moves).
    for (pname, p), old in zip(model.named_parameters(), before):
        assert torch.equal(p, old) == bool(p.grad.abs().sum() == 0), pname
    heads_moved = [
        not torch.equal(p, old) for (n, p), old in zip(model.named_parameters(), before) if "head" in n
    ]
    assert all(heads_moved)
    if row.loss.bcm is not None:
        assert loss.branch > 0


def test_model_parameter_count_is_sum_of_parts():
    k = 26
    sib = sibnet.create_model("sibnet")
    head = (3 * 512 * 512 + 512) + (512 * k + k) + 3 * (512 * k + k)  # fused MLP + branch heads
    scm = sum(scm_parameter_count("gru", c) for c in STAGE_CHANNELS)
    icm = icm_parameter_count("gclf", 128) + icm_parameter_count("gclf", 512)
    assert sum(p.numel() for p in sib.parameters()) == 3 * RESNET18_TRUNK_PARAMS + head + scm + icm
