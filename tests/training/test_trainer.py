"""Training runs (sibnet.training.trainer): seeds, layout, validation selection, resume, mixed precision."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
import torch

import sibnet
from sibnet import train
from sibnet.data.masking import InputTransform
from sibnet.distributed import amp_dtype, autocast
from sibnet.evaluate import evaluate_model, open_dataset
from sibnet.training.trainer import Trainer
from tests.training._runs import SIZE, caer_args, read_log, train_args


def test_two_seeds_layout_selection_and_round_trip(
    tmp_path: Path, emotic_root: Path, capsys: pytest.CaptureFixture[str]
):
    out = tmp_path / "runs"
    # A single-branch model keeps this fast; the BCM path through the trainer runs in test_ddp.py and
    # test_planted_cue.py.
    args = train_args(
        "emotic", emotic_root, out, "--seeds", "0", "1", "--epochs", "2", "--max-steps-per-epoch", "1"
    )
    assert train.main(args) == 0
    printed = capsys.readouterr().out
    run = out / "emotic-face"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["variant"] == "face" and summary["metric"] == "mAP"
    vals = [s["val"] for s in summary["seeds"]]
    assert summary["val"]["mean"] == pytest.approx(statistics.fmean(vals))
    assert summary["val"]["std"] == pytest.approx(statistics.stdev(vals))
    assert summary["test"] is not None and all(s["test"] is not None for s in summary["seeds"])
    assert "±" in printed and "paper (test): 32.66" in printed

    val_set = open_dataset(
        "emotic", emotic_root, "val", transform=InputTransform(SIZE, SIZE + 1), train=False
    )
    for seed, entry in zip((0, 1), summary["seeds"]):
        seed_dir = run / f"seed{seed}"
        assert sorted(p.name for p in seed_dir.iterdir()) == ["best", "last.pt", "metrics.jsonl"]
        log = read_log(seed_dir / "metrics.jsonl")
        assert [r["epoch"] for r in log] == [1, 2]
        for record in log:
            assert set(record) >= {"epoch", "lrs", "train", "val", "seconds", "triples_per_s"}
            assert set(record["lrs"]) == {"backbone", "modules"}
            assert set(record["train"]) == {"loss", "fused", "branch"} and record["train"]["branch"] == 0
            assert record["val"]["metric"] == "mAP" and record["val"]["n"] == len(val_set)
        best_epoch = max(log, key=lambda r: r["val"]["value"])["epoch"]
        assert entry["best_epoch"] == best_epoch  # selected on the validation split

        model = sibnet.load_model(seed_dir / "best")
        info = model.training_info
        assert info["variant"] == summary["variant"] and info["dataset"] == "emotic"
        assert info["seed"] == seed and info["epoch"] == best_epoch
        assert info["loss"] == sibnet.TABLE2[summary["variant"]].loss.to_dict()
        assert info["val_metric"]["split"] == "val" and info["recipe"]["lr_backbone"] == 1e-4
        # The reloaded checkpoint scores exactly the validation value it was selected with.
        assert evaluate_model(model, val_set, batch_size=4).value == pytest.approx(entry["val"], abs=1e-6)


def test_resume_after_a_crash_loses_no_epoch(
    tmp_path: Path, caer_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    # With neutral dropout: its draws must replay exactly on resume too (they depend on seed, rank, step).
    args = lambda out: caer_args(caer_root, out, "--epochs", "3", "--neutral-dropout", "0.5")  # noqa: E731
    # Reference: three epochs without interruption.
    assert train.main(args(tmp_path / "a")) == 0
    # Crash during epoch 3 (after its steps, before anything of it is saved: a kill at any moment of the epoch
    # loses exactly this much).
    original = Trainer.train_one_epoch

    def crash_in_epoch_3(self: Trainer, epoch: int) -> dict:
        result = original(self, epoch)
        if epoch == 3:
            raise KeyboardInterrupt("simulated kill")
        return result

    monkeypatch.setattr(Trainer, "train_one_epoch", crash_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train.main(args(tmp_path / "b"))
    seed_dir = tmp_path / "b" / "caer-face" / "seed0"
    assert [r["epoch"] for r in read_log(seed_dir / "metrics.jsonl")] == [1, 2]
    monkeypatch.setattr(Trainer, "train_one_epoch", original)
    capsys.readouterr()
    # Rerun the same command: it resumes automatically.
    assert train.main(args(tmp_path / "b")) == 0
    assert "resumed" in capsys.readouterr().out
    log_a = read_log(tmp_path / "a" / "caer-face" / "seed0" / "metrics.jsonl")
    log_b = read_log(seed_dir / "metrics.jsonl")
    assert [r["epoch"] for r in log_b] == [1, 2, 3]
    # The weights continue exactly where the crashed run stopped: bit-identical to the uninterrupted run.
    state_a = torch.load(tmp_path / "a" / "caer-face" / "seed0" / "last.pt", weights_only=True)
    state_b = torch.load(seed_dir / "last.pt", weights_only=True)
    assert state_a["step"] == state_b["step"] == 6
    for key, tensor in state_a["model"].items():
        assert torch.equal(tensor, state_b["model"][key]), key
    assert [r["train"]["loss"] for r in log_a] == [r["train"]["loss"] for r in log_b]
    assert [r["val"]["value"] for r in log_a] == [r["val"]["value"] for r in log_b]

    # A finished run rerun only rebuilds the summary; --resume without a state and a changed recipe are errors.
    assert train.main(args(tmp_path / "b")) == 0
    assert [r["epoch"] for r in read_log(seed_dir / "metrics.jsonl")] == [1, 2, 3]
    assert train.main([*args(tmp_path / "b"), "--lr-modules", "5e-4"]) == 2
    err = capsys.readouterr().err
    assert "lr_modules" in err and "--overwrite" in err and err.count("\n") == 1
    assert train.main([*args(tmp_path / "c"), "--resume"]) == 2
    assert "no resume state" in capsys.readouterr().err


def test_neutral_dropout_blanks_whole_branches_and_is_recorded_only_when_used(
    tmp_path: Path, caer_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    """``--neutral-dropout P``: each branch of each training item is the neutral input with probability P."""
    from sibnet.attribution import neutral_inputs

    seen: list[tuple[torch.Tensor, ...]] = []
    build = Trainer._build_model

    def recording(self: Trainer):
        model = build(self)
        model.register_forward_pre_hook(lambda _m, xs: seen.append(tuple(x.detach().clone() for x in xs)))
        return model

    monkeypatch.setattr(Trainer, "_build_model", recording)

    def blank_share(p: str) -> tuple[float, dict]:
        seen.clear()
        out = tmp_path / f"p{p}"
        assert train.main(caer_args(caer_root, out, "--neutral-dropout", p, "--no-test")) == 0
        transform = sibnet.load_model(out / "caer-face" / "seed0" / "best").config.transform
        blank = neutral_inputs(transform, 1, torch.device("cpu"), torch.float32)
        steps = seen[:2]  # the two training steps come before the validation passes
        flags = [torch.equal(x[i], b[0]) for xs in steps for x, b in zip(xs, blank) for i in range(len(x))]
        summary = json.loads((out / "caer-face" / "summary.json").read_text())
        return sum(flags) / len(flags), summary["recipe"]

    share, recipe = blank_share("0.5")
    assert 0.2 <= share <= 0.8, share  # 24 draws at p = 0.5
    assert recipe["neutral_dropout"] == 0.5
    share, recipe = blank_share("0")
    assert share == 0 and "neutral_dropout" not in recipe  # the paper's recipe, as runs before the option
    capsys.readouterr()
    assert train.main(caer_args(caer_root, tmp_path / "bad", "--neutral-dropout", "1")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--neutral-dropout" in err and err.count("\n") == 1, err


def test_amp_policy_on_cpu():
    cpu = torch.device("cpu")
    assert amp_dtype(cpu) is None and amp_dtype(cpu, "off") is None  # fp32 on the CPU
    with pytest.raises(ValueError, match="needs a CUDA device"):
        amp_dtype(cpu, "bf16")
    with autocast(cpu, None):  # a no-op context for fp32
        assert not torch.is_autocast_enabled("cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("amp", ["auto", "fp16"])
def test_cuda_training_with_amp(tmp_path: Path, emotic_root: Path, amp: str):
    """bf16 autocast where supported (``auto``), or fp16 with a GradScaler whose state goes into last.pt."""
    args = [
        *train_args("emotic", emotic_root, tmp_path, "--device", "cuda", "--amp", amp, model="sibnet"),
        "--epochs",
        "2",
    ]
    assert train.main(args) == 0
    seed_dir = tmp_path / "emotic-sibnet" / "seed0"
    log = read_log(seed_dir / "metrics.jsonl")
    assert [r["epoch"] for r in log] == [1, 2]
    assert all(math.isfinite(r["train"]["loss"]) and math.isfinite(r["val"]["value"]) for r in log)
    state = torch.load(seed_dir / "last.pt", weights_only=True)
    fp16 = amp == "fp16" or not torch.cuda.is_bf16_supported()
    assert bool(state["scaler"]) == fp16
    model = sibnet.load_model(seed_dir / "best", device="cuda")
    assert next(model.parameters()).dtype == torch.float32  # AMP never changes the stored weights


def test_validation_and_test_score_in_float32_whatever_the_training_precision(
    tmp_path: Path, emotic_root: Path, monkeypatch: pytest.MonkeyPatch
):
    """Issue 11: a bf16 training run (as on CUDA) still selects and reports on float32 scores."""
    import contextlib

    import sibnet.training.trainer as trainer

    seen: list[tuple[str, object]] = []
    monkeypatch.setattr(trainer, "amp_dtype", lambda device, policy="auto": torch.bfloat16)
    monkeypatch.setattr(trainer, "autocast", lambda device, dtype: contextlib.nullcontext())
    real_predict, real_evaluate = trainer.predict, trainer.evaluate_model

    def predict(*args, **kwargs):
        seen.append(("val", kwargs.get("amp")))
        return real_predict(*args, **kwargs)

    def evaluate(*args, **kwargs):
        seen.append(("test", kwargs.get("amp")))
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(trainer, "predict", predict)
    monkeypatch.setattr(trainer, "evaluate_model", evaluate)
    assert train.main(train_args("emotic", emotic_root, tmp_path / "out")) == 0
    assert {split for split, _ in seen} == {"val", "test"}
    assert all(amp is None for _, amp in seen), seen
