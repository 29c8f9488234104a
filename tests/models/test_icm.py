"""Interactive Context Module (paper §3.3): sibnet.models.icm."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import sibnet
from sibnet.config import ModelConfig
from sibnet.models.icm import ICM_VARIANTS, CorrelatedFusion, create_icm, icm_parameter_count


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


def test_icm_output_bn_init_is_a_recorded_choice():
    """γ = 1 by default (the authors' released ICM); γ = 0 makes each module start as the identity."""
    maps = [torch.randn(2, 8, 4, 4) for _ in range(3)]
    for variant in ICM_VARIANTS:
        out = create_icm(variant, 8, bn_init=0.0).eval()(maps)
        for m, o in zip(maps, out):
            torch.testing.assert_close(o, m)
        default = create_icm(variant, 8).eval()
        assert all(torch.all(m.weight == 1) for m in default.modules() if isinstance(m, torch.nn.BatchNorm2d))
        assert any(not torch.allclose(o, m) for m, o in zip(maps, default(maps)))
    assert ModelConfig().icm_bn_init == 1.0
    net = sibnet.create_model("sibnet", pretrained=False, input_size=32, icm_bn_init=0.0)
    gammas = [m.weight for name, m in net.icm.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert gammas and all(torch.all(g == 0) for g in gammas)
    with pytest.raises(ValueError, match="icm_bn_init"):
        ModelConfig(icm="gclf", icm_bn_init=2.0)


def test_unknown_icm_variant_lists_valid():
    with pytest.raises(ValueError, match=r"valid variants: \['clf', 'gclf', 'lf'\]"):
        create_icm("nonlocal", 8)


def test_icm_bn_init_is_saved_and_old_checkpoints_load(tmp_path):
    """The field travels in config.json (the checkpoint validation knows it); a config written before it
    existed loads with the default γ = 1, its weights replacing the init anyway."""
    import json

    from sibnet.checkpoints import load_model

    model = sibnet.create_model("sibnet", pretrained=False, input_size=32, icm_expansion=1, icm_bn_init=0.0)
    folder = model.save_pretrained(tmp_path / "new")
    assert json.loads((folder / "config.json").read_text())["icm_bn_init"] == 0.0
    assert load_model(folder).config.icm_bn_init == 0.0
    config = json.loads((folder / "config.json").read_text())
    del config["icm_bn_init"]
    (folder / "config.json").write_text(json.dumps(config))
    old = load_model(folder)
    assert old.config.icm_bn_init == 1.0
    bn = next(m for m in old.icm.modules() if isinstance(m, nn.BatchNorm2d))
    assert torch.all(bn.weight == 0)  # the stored weights, not the init
