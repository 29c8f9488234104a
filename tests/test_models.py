"""Models: every registered variant builds, runs, trains; SCM/ICM match the paper's equations and formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import sibnet
from sibnet.losses import ContextLoss
from sibnet.models.backbone import STAGE_CHANNELS, PretrainedWeightsUnavailable
from sibnet.models.icm import ICM_VARIANTS, CorrelatedFusion, create_icm, icm_parameter_count
from sibnet.models.scm import PaperGRUCell, SequentialContextModule, scm_parameter_count

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


def test_single_branch_models_use_only_their_input():
    model = _small("body").eval()
    face, body, scene = _inputs()
    with torch.no_grad():
        a = model(face, body, scene).logits
        b = model(torch.zeros_like(face), body, torch.zeros_like(scene)).logits
        c = model(face, torch.zeros_like(body), scene).logits
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_bad_inputs_name_the_expected_shapes():
    model = _small("sibnet")
    face, body, scene = _inputs()
    with pytest.raises(ValueError, match=r"3 tensors \(face, body, scene\), each \(B, 3, 64, 64\); got 2"):
        model(face, body)
    with pytest.raises(ValueError, match=r"the scene input has shape \(2, 3, 70, 70\)"):
        model(face, body, torch.randn(2, 3, 70, 70))
    with pytest.raises(ValueError, match=r"the face input has shape \(3, 64, 64\)"):
        model(face[0], body, scene)
    with pytest.raises(ValueError, match="one batch size"):
        model(face, body, scene[:1])


def test_layer4_stride_sets_the_map_size():
    x = _inputs(1, 224)
    for stride, side in ((2, 7), (1, 14)):
        model = sibnet.create_model("concat", layer4_stride=stride).eval()
        with torch.no_grad():
            maps = model.forward_features(*x)
        assert [tuple(m.shape) for m in maps] == [(1, 512, side, side)] * 3


def test_forward_is_features_then_head():
    model = _small("sibnet").eval()
    x = _inputs()
    with torch.no_grad():
        full = model(*x)
        split = model.forward_head(model.forward_features(*x))
    assert torch.equal(full.logits, split.logits)


# --- SCM (Eq. 2) ---


def _np_sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


def test_gru_cell_is_equation_2_as_written():
    """Eq. 2 by hand in numpy: reset gate multiplies h_{t-1} BEFORE the candidate's linear map."""
    torch.manual_seed(1)
    c = 3
    cell = PaperGRUCell(c)
    x = torch.randn(2, c)
    h = torch.randn(2, c)
    wr, br = cell.reset_gate.weight.detach().numpy(), cell.reset_gate.bias.detach().numpy()
    wz, bz = cell.update_gate.weight.detach().numpy(), cell.update_gate.bias.detach().numpy()
    wh, bh = cell.candidate.weight.detach().numpy(), cell.candidate.bias.detach().numpy()
    hn, xn = h.numpy().astype(np.float64), x.numpy().astype(np.float64)
    expected = []
    for i in range(2):
        hx = np.concatenate([hn[i], xn[i]])
        r = _np_sigmoid(wr @ hx + br)
        z = _np_sigmoid(wz @ hx + bz)
        h_hat = np.tanh(wh @ np.concatenate([hn[i] * r, xn[i]]) + bh)
        expected.append((1 - z) * hn[i] + z * h_hat)
    got, _ = cell(x, h)
    np.testing.assert_allclose(got.detach().numpy(), np.stack(expected), rtol=1e-5, atol=1e-6)

    # ... which is not torch's GRUCell, whose reset gate acts after the linear map: r * (W_hn h + b_hn).
    # Map the same weights onto nn.GRUCell (its z plays the role of our 1 - z, hence the sign flip): with
    # everything else equal, the two differ only by where r is applied.
    ref = nn.GRUCell(c, c)
    w = {g: getattr(cell, g).weight.detach() for g in ("reset_gate", "update_gate", "candidate")}
    b = {g: getattr(cell, g).bias.detach() for g in w}
    with torch.no_grad():
        ref.weight_hh.copy_(
            torch.cat([w["reset_gate"][:, :c], -w["update_gate"][:, :c], w["candidate"][:, :c]])
        )
        ref.weight_ih.copy_(
            torch.cat([w["reset_gate"][:, c:], -w["update_gate"][:, c:], w["candidate"][:, c:]])
        )
        ref.bias_ih.copy_(torch.cat([b["reset_gate"], -b["update_gate"], b["candidate"]]))
        ref.bias_hh.zero_()
        torch_out = ref(x, h)
        # With the reset gate forced open (r = 1) the two cells agree, so the mapping above is right ...
        cell.reset_gate.bias.fill_(1e4)
        ref.bias_ih[:c].fill_(1e4)
        torch.testing.assert_close(ref(x, h), cell(x, h)[0])
    # ... and with a real reset gate they differ.
    assert not torch.allclose(torch_out, got, atol=1e-4)


def test_scm_runs_face_body_scene_from_zero_state():
    torch.manual_seed(2)
    scm = SequentialContextModule(4, "gru")
    maps = [torch.randn(2, 4, 3, 3) for _ in range(3)]
    out = scm(maps)
    h = torch.zeros(2, 4)
    for fmap, o in zip(maps, out):
        h, _ = scm.cell(fmap.mean(dim=(2, 3)), h)
        torch.testing.assert_close(o, fmap + h[:, :, None, None])
    # the bias is constant over H×W
    delta = out[2] - maps[2]
    assert torch.allclose(delta, delta[:, :, :1, :1].expand_as(delta))


@pytest.mark.parametrize("cell", ["gru", "rnn", "lstm"])
@pytest.mark.parametrize("channels", STAGE_CHANNELS)
def test_scm_parameter_count_matches_formula(cell: str, channels: int):
    scm = SequentialContextModule(channels, cell)
    assert sum(p.numel() for p in scm.parameters()) == scm_parameter_count(cell, channels)


def test_unknown_scm_cell_lists_valid():
    with pytest.raises(ValueError, match=r"valid cells: \['gru', 'lstm', 'rnn'\]"):
        SequentialContextModule(8, "transformer")


# --- ICM (§3.3) ---


def test_icm_affinity_is_softmax_over_last_dim():
    torch.manual_seed(3)
    block = CorrelatedFusion(in_channels=12, inner_channels=8, out_channels=4)
    x = torch.randn(2, 12, 5, 5)
    w = block.affinity(x)
    assert w.shape == (2, 8, 8)  # dC × dC channel affinity
    torch.testing.assert_close(w.sum(dim=-1), torch.ones(2, 8))
    assert not torch.allclose(w.sum(dim=-2), torch.ones(2, 8), atol=1e-3)  # not normalised the other way
    q = block.query(x).flatten(2)
    k = block.key(x).flatten(2)
    torch.testing.assert_close(w, torch.softmax(q @ k.transpose(1, 2) / math.sqrt(8), dim=-1))


def test_icm_forward_is_bn_of_out_of_affinity_times_value():
    # forward fuses W V (scaled_dot_product_attention); it must be the same function as the explicit product.
    torch.manual_seed(5)
    block = CorrelatedFusion(in_channels=12, inner_channels=8, out_channels=4)
    nn.init.normal_(block.bn.weight)  # the zero-init scale would make every output equal
    block.eval()
    x = torch.randn(3, 12, 5, 6)
    v = block.value(x).flatten(2)
    expected = block.bn(block.out((block.affinity(x) @ v).view(3, 8, 5, 6)))
    torch.testing.assert_close(block(x), expected)


@pytest.mark.parametrize("variant", sorted(ICM_VARIANTS))
@pytest.mark.parametrize("channels", (128, 512))
def test_icm_parameter_count_matches_formula(variant: str, channels: int):
    icm = create_icm(variant, channels, 3, 2)
    assert sum(p.numel() for p in icm.parameters()) == icm_parameter_count(variant, channels, 3, 2)


def test_gclf_has_one_block_per_branch_seeing_own_map_first():
    torch.manual_seed(4)
    icm = create_icm("gclf", 4, 3, 2)
    assert len(icm.blocks) == 3
    for block in icm.blocks:
        nn.init.ones_(block.bn.weight)  # leave identity start to see the interaction
    maps = [torch.randn(1, 4, 3, 3) for _ in range(3)]
    icm.eval()
    out = icm(maps)
    for b in range(3):
        x = torch.cat([maps[b], *(m for j, m in enumerate(maps) if j != b)], dim=1)
        expected = maps[b] + icm.blocks[b](x)
        torch.testing.assert_close(out[b], expected)


def test_icm_starts_as_identity():
    maps = [torch.randn(2, 8, 4, 4) for _ in range(3)]
    for variant in ICM_VARIANTS:
        out = create_icm(variant, 8).eval()(maps)
        for m, o in zip(maps, out):
            torch.testing.assert_close(o, m)


def test_unknown_icm_variant_lists_valid():
    with pytest.raises(ValueError, match=r"valid variants: \['clf', 'gclf', 'lf'\]"):
        create_icm("nonlocal", 8)


def test_model_parameter_count_is_sum_of_parts():
    k = 26
    sib = sibnet.create_model("sibnet")
    head = (3 * 512 * 512 + 512) + (512 * k + k) + 3 * (512 * k + k)  # fused MLP + branch heads
    scm = sum(scm_parameter_count("gru", c) for c in STAGE_CHANNELS)
    icm = icm_parameter_count("gclf", 128) + icm_parameter_count("gclf", 512)
    assert sum(p.numel() for p in sib.parameters()) == 3 * RESNET18_TRUNK_PARAMS + head + scm + icm


# --- pretrained weights ---


def test_pretrained_offline_fails_fast_with_advice(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("SIBNET_OFFLINE", "1")
    with pytest.raises(PretrainedWeightsUnavailable, match="TORCH_HOME") as err:
        sibnet.create_model("face", pretrained=True)
    assert "pretrained=False" in str(err.value)


def test_pretrained_unreachable_network_fails_fast(tmp_path, monkeypatch):
    import urllib.error
    import urllib.request

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("SIBNET_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls = []

    def refuse(*args, **kwargs):
        calls.append(kwargs.get("timeout"))
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with pytest.raises(PretrainedWeightsUnavailable, match="cannot be downloaded"):
        sibnet.create_model("face", pretrained=True)
    assert calls and calls[0] is not None and calls[0] <= 10  # a bounded probe, never an unbounded wait


def test_pretrained_loads_from_torch_cache(tmp_path, monkeypatch):
    from torchvision.models import resnet18

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    ref = resnet18(weights=None)
    with torch.no_grad():
        ref.conv1.weight.fill_(0.125)
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(ref.state_dict(), cache / "resnet18-f37072fd.pth")
    model = sibnet.create_model("concat", pretrained=True)
    for trunk in model.branches:
        assert torch.equal(trunk.stem[0].weight, ref.conv1.weight)
        assert torch.equal(trunk.layers[3][1].conv2.weight, ref.layer4[1].conv2.weight)
