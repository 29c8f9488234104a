"""The optimiser of §4.2 (sibnet.training.optim): two lr groups, per-step milestones."""

from __future__ import annotations

from pathlib import Path

import pytest

import sibnet
from sibnet import train
from sibnet.training.optim import build_optimizer, build_scheduler, milestone_steps, parameter_groups

SIZE = 32  # the smallest input ModelConfig accepts: these tests check plumbing, not learning


def test_lr_groups_and_per_step_milestones(tmp_path: Path):
    args = train.build_parser().parse_args(
        ["--dataset", "emotic", "--data-root", str(tmp_path), "--model", "sibnet", "--input-size", str(SIZE)]
    )
    cfg = train.resolve_config(args)
    model = sibnet.build_model(cfg.model)
    backbone, modules = parameter_groups(model)
    assert {id(p) for p in backbone} == {id(p) for p in model.branches.parameters()}
    assert {id(p) for p in backbone}.isdisjoint(id(p) for p in modules)
    assert len(backbone) + len(modules) == len(list(model.parameters()))
    assert any(id(p) in {id(q) for q in model.scm.parameters()} for p in modules)

    # 10 epochs of 3 steps: milestones at steps round(15) = 15, round(22.5) = 23 (epoch 7.5 → mid-epoch 8),
    # round(26.25) = 26.
    assert milestone_steps(30, cfg.lr_milestones) == [15, 23, 26]
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, 30, cfg)
    seen = []
    for _ in range(30):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    expected = [[1e-4, 1e-3]] * 15 + [[1e-5, 1e-4]] * 8 + [[1e-6, 1e-5]] * 3 + [[1e-7, 1e-6]] * 4
    assert seen == [pytest.approx(e) for e in expected]
    assert [g["name"] for g in opt.param_groups] == ["backbone", "modules"]
