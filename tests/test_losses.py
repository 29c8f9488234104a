"""BCM distribution labels and the total loss (paper §3.4, §4.2)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sibnet.losses import ContextLoss, LossConfig, distribution_labels


def _multi_hot(rows: int = 4000, k: int = 26, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(rows, k, generator=g) < 0.15).float()


def test_ldl_star_replaces_zeros_with_clipped_gaussian_and_keeps_ones():
    y = _multi_hot()
    t = distribution_labels(y, "ldl*", generator=torch.Generator().manual_seed(1))
    assert torch.equal(t[y == 1], torch.ones_like(t[y == 1]))
    z = t[y == 0].double()
    assert z.min() >= 0 and z.max() <= 1
    # N(0.4, var 0.1) clipped to [0, 1]: compute the clipped moments exactly and compare.
    mu, sd = 0.4, math.sqrt(0.1)
    normal = torch.distributions.Normal(
        torch.tensor(mu, dtype=torch.float64), torch.tensor(sd, dtype=torch.float64)
    )
    a, b = (0 - mu) / sd, (1 - mu) / sd
    std_normal = torch.distributions.Normal(
        torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    )
    p_hi = 1 - normal.cdf(torch.tensor(1.0, dtype=torch.float64))
    pdf = lambda v: std_normal.log_prob(torch.tensor(v, dtype=torch.float64)).exp()  # noqa: E731
    cdf = lambda v: std_normal.cdf(torch.tensor(v, dtype=torch.float64))  # noqa: E731
    inner_mass = cdf(b) - cdf(a)
    inner_mean = mu * inner_mass + sd * (pdf(a) - pdf(b))
    mean = inner_mean + p_hi  # clipped-at-0 mass contributes 0, clipped-at-1 mass contributes 1
    # E[X^2; a<Z<b] for X = mu + sd Z: mu^2 P + 2 mu sd (pdf(a)-pdf(b)) + sd^2 (P + a pdf(a) - b pdf(b))
    inner_sq = (
        mu**2 * inner_mass + 2 * mu * sd * (pdf(a) - pdf(b)) + sd**2 * (inner_mass + a * pdf(a) - b * pdf(b))
    )
    var = inner_sq + p_hi - mean**2
    assert abs(z.mean() - mean) < 0.005, (z.mean(), mean)
    assert abs(z.var() - var) < 0.004, (z.var(), var)
    # ... and close to the paper's N(0.4, 0.1) before clipping (clipping trims about 6 % of the mass).
    assert abs(z.mean() - 0.4) < 0.03 and 0.07 < z.var() < 0.1
    assert (z == 0).float().mean() == pytest.approx(
        normal.cdf(torch.tensor(0.0, dtype=torch.float64)).item(), abs=0.01
    )


def test_labels_are_fresh_on_every_call():
    y = _multi_hot(8)
    a = distribution_labels(y)
    b = distribution_labels(y)
    assert not torch.equal(a, b)
    assert torch.equal(a[y == 1], b[y == 1])


def test_ldl_normalises_rows_to_one():
    y = _multi_hot(100)
    t = distribution_labels(y, "ldl")
    torch.testing.assert_close(t.sum(dim=1), torch.ones(100))
    star = distribution_labels(y, "ldl*", generator=torch.Generator().manual_seed(5))
    again = distribution_labels(y, "ldl", generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(again, star / star.sum(dim=1, keepdim=True))


def test_total_is_bce_plus_branch_l1_one_to_one():
    torch.manual_seed(0)
    y = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    s = torch.randn(2, 3)
    branches = tuple(torch.randn(2, 3) for _ in range(3))
    loss = ContextLoss(LossConfig(bcm="ldl*", bcm_loss="l1"))
    g = torch.Generator().manual_seed(7)
    out = loss(s, y, branches, generator=g)
    g = torch.Generator().manual_seed(7)
    expected_branch = sum(F.l1_loss(torch.sigmoid(b), distribution_labels(y, generator=g)) for b in branches)
    torch.testing.assert_close(out.fused, F.binary_cross_entropy_with_logits(s, y))
    torch.testing.assert_close(out.branch, expected_branch)
    torch.testing.assert_close(out.total, out.fused + out.branch)


def test_bcm_with_bce_and_without_bcm():
    y = torch.tensor([[1.0, 0.0]])
    s = torch.tensor([[0.3, -0.2]])
    branches = (torch.zeros(1, 2),) * 3
    plain = ContextLoss()(s, y, branches)
    assert plain.branch == 0 and torch.equal(plain.total, plain.fused)
    bce = ContextLoss(LossConfig(bcm="ldl*", bcm_loss="bce"))(s, y, branches)
    assert bce.branch > 0
    ce = ContextLoss(LossConfig(fused="ce"))(s, y)
    torch.testing.assert_close(ce.fused, F.cross_entropy(s, torch.tensor([0])))


def test_bcm_needs_branch_heads():
    with pytest.raises(ValueError, match="branch heads"):
        ContextLoss(LossConfig(bcm="ldl*"))(torch.zeros(1, 2), torch.zeros(1, 2), None)


def test_paper_bcm_hyper_parameters_are_the_defaults():
    cfg = LossConfig(bcm="ldl*")
    assert (cfg.bcm_mean, cfg.bcm_variance, cfg.bcm_weight, cfg.bcm_loss) == (0.4, 0.1, 1.0, "l1")
    with pytest.raises(ValueError, match="bcm must be one of"):
        LossConfig(bcm="ldl+")
