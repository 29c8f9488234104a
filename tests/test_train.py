"""``python -m sibnet.train``: the §4.2 recipe, every Table-2 row resolvable without data, the output layout,
selection on val, the checkpoint round trip, resuming after a crash, and one-line errors on bad input."""

from __future__ import annotations

import json
import math
import shlex
import shutil
import statistics
from pathlib import Path

import pytest
import torch

import sibnet
from sibnet import train
from sibnet.data.masking import InputTransform
from sibnet.data.synthetic import make_synthetic_caer, make_synthetic_emotic
from sibnet.distributed import amp_dtype, autocast
from sibnet.evaluate import evaluate_model, open_dataset
from sibnet.labels import CAER_CLASSES
from sibnet.training.optim import build_optimizer, build_scheduler, milestone_steps, parameter_groups
from sibnet.training.trainer import Trainer

DOC = Path(__file__).resolve().parents[1] / "docs" / "REPRODUCE.md"
SIZE = 32  # the smallest input ModelConfig accepts: these tests check plumbing, not learning


@pytest.fixture(scope="module")
def emotic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("emotic")
    make_synthetic_emotic(root, n_train=8, n_val=6, n_test=4, size=96, seed=2, write_csv=False)
    return root


@pytest.fixture(scope="module")
def caer_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("caer")
    make_synthetic_caer(root, n_train=14, n_val=7, n_test=7, size=96, seed=2)
    return root


def _args(dataset: str, root: Path, out: Path, *extra: str, model: str = "face") -> list[str]:
    return [
        "--dataset", dataset, "--data-root", str(root), "--model", model, "--out", str(out),
        "--no-pretrained", "--input-size", str(SIZE), "--batch-size", "4", "--epochs", "1",
        "--max-steps-per-epoch", "2", "--workers", "0", "--no-progress", *extra,
    ]  # fmt: skip


def _caer(root: Path, out: Path, *extra: str, model: str = "face") -> list[str]:
    return [*_args("caer", root, out, *extra, model=model), "--val-fraction", str(1 / 3)]


def _log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ----------------------------------------------------------------------------------------------------------
# Configuration


def test_reproduce_doc_is_current_and_every_command_resolves_without_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    text = DOC.read_text()
    table = text.split("<!-- BEGIN GENERATED TABLE -->\n")[1].split("\n<!-- END GENERATED TABLE -->")[0]
    assert table == train.reproduction_markdown(), (
        "regenerate the table of docs/REPRODUCE.md (see its comment)"
    )
    covered = set()
    for row in train.reproduction_rows():
        assert row["command"] in text
        argv = shlex.split(row["command"])
        assert argv[:3] == ["python", "-m", "sibnet.train"]
        argv = argv[3:]
        argv[argv.index("--data-root") + 1] = str(tmp_path / "no-data-here")  # --dry-run needs no data
        argv[argv.index("--out") + 1] = str(tmp_path / "runs")
        rc = train.main([*argv, "--dry-run"])
        captured = capsys.readouterr()
        assert rc == 0, captured.err
        report = json.loads(captured.out)
        assert report["model"]["name"] == row["model"] and report["dataset"]["present"] is False
        assert report["seeds"] == [0, 1, 2]
        recipe = report["recipe"]
        assert (recipe["lr_backbone"], recipe["lr_modules"]) == (1e-4, 1e-3)  # §4.2
        assert recipe["lr_milestones"] == [0.5, 0.75, 0.875] and recipe["pretrained"] is True
        assert report["model"]["input_size"] == 224 and report["model"]["resize"] == 230
        assert report["parameters"]["backbone"] == 11_176_512 * len(report["model"]["branches"])
        seed0 = report["output"]["seeds"]["seed0"]
        assert seed0["best"].endswith("seed0/best") and seed0["metrics"].endswith("seed0/metrics.jsonl")
        if row["dataset"] == "emotic":
            assert (recipe["batch_size"], recipe["epochs"]) == (32, 10)
            assert report["model"]["multi_label"] is True
            assert report["paper"]["emotic_map"] == row["paper"]
        else:  # CAER-S: its own recipe and labels; the paper's BCE although single-label
            assert (recipe["batch_size"], recipe["epochs"]) == (64, 20)
            assert report["model"]["labels"] == list(CAER_CLASSES) and report["model"]["multi_label"] is False
            assert report["loss"]["fused"] == "bce" and report["paper"]["caer_osa"] == row["paper"]
        if row["table"] == "2":
            t2 = sibnet.TABLE2[row["label"]]
            assert report["variant"] == row["label"]
            assert {k: report["loss"][k] for k in t2.loss.to_dict()} == t2.loss.to_dict()
            covered.add(row["label"])
    assert covered == set(sibnet.TABLE2)


def test_run_names_tell_the_three_bcm_rows_apart(tmp_path: Path):
    names = set()
    for label in ("baseline+B (LDL)", "baseline+B (LDL*)", "baseline+B (LDL*+L1)"):
        args = train.build_parser().parse_args(
            ["--dataset", "emotic", "--data-root", str(tmp_path), "--variant", label]
        )
        names.add(train.resolve_config(args).run_name)
    assert names == {
        "emotic-concat_bcm",
        "emotic-concat_bcm-bce-ldl-bce",
        "emotic-concat_bcm-bce-ldlstar-bce",
    }


def test_bcm_needs_branch_heads(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    rc = train.main(
        ["--dataset", "emotic", "--data-root", str(tmp_path), "--model", "concat", "--bcm", "ldl*"]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and "branch" in err


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


# ----------------------------------------------------------------------------------------------------------
# Training runs


def test_two_seeds_layout_selection_and_round_trip(
    tmp_path: Path, emotic_root: Path, capsys: pytest.CaptureFixture[str]
):
    out = tmp_path / "runs"
    # A single-branch model keeps this fast; the BCM path through the trainer runs in test_ddp.py and
    # test_planted_cue.py.
    args = _args(
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
        log = _log(seed_dir / "metrics.jsonl")
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
    args = lambda out: _caer(caer_root, out, "--epochs", "3")  # noqa: E731
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
    assert [r["epoch"] for r in _log(seed_dir / "metrics.jsonl")] == [1, 2]
    monkeypatch.setattr(Trainer, "train_one_epoch", original)
    capsys.readouterr()
    # Rerun the same command: it resumes automatically.
    assert train.main(args(tmp_path / "b")) == 0
    assert "resumed" in capsys.readouterr().out
    log_a = _log(tmp_path / "a" / "caer-face" / "seed0" / "metrics.jsonl")
    log_b = _log(seed_dir / "metrics.jsonl")
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
    assert [r["epoch"] for r in _log(seed_dir / "metrics.jsonl")] == [1, 2, 3]
    assert train.main([*args(tmp_path / "b"), "--lr-modules", "5e-4"]) == 2
    err = capsys.readouterr().err
    assert "lr_modules" in err and "--overwrite" in err and err.count("\n") == 1
    assert train.main([*args(tmp_path / "c"), "--resume"]) == 2
    assert "no resume state" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# Bad input: one `error:` line naming the file, exit status 2


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize(
    "problem",
    [
        "missing data root",
        "missing annotations",
        "missing image",
        "unreadable image",
        "empty split",
        "offline",
    ],
)
def test_bad_input_is_one_error_line(
    tmp_path: Path, emotic_root: Path, caer_root: Path, capsys: pytest.CaptureFixture[str], problem: str
):
    extra: list[str] = []
    if problem == "missing data root":
        args, named = _args("emotic", tmp_path / "absent", tmp_path / "out"), "absent"
    elif problem == "missing annotations":
        root = _copy(emotic_root, tmp_path / "emotic")
        shutil.rmtree(root / "Annotations")
        args, named = _args("emotic", root, tmp_path / "out"), "Annotations.mat"
    elif problem == "missing image":
        root = _copy(emotic_root, tmp_path / "emotic")
        victim = sorted(root.rglob("*_val_*.jpg"))[0]
        victim.unlink()
        args, named = _args("emotic", root, tmp_path / "out"), victim.name
    elif problem == "unreadable image":
        root = _copy(caer_root, tmp_path / "caer")
        for image in (root / "train").rglob("*.png"):
            image.write_bytes(b"\x89PNG garbage")
        # A DataLoader worker raises it: the message must still be one line.
        args, named = _caer(root, tmp_path / "out", "--workers", "1"), ".png"
    elif problem == "empty split":
        root = _copy(caer_root, tmp_path / "caer")
        for image in (root / "train").rglob("*.png"):
            image.unlink()
        args, named = _caer(root, tmp_path / "out"), "train"
    else:  # ImageNet weights requested (the default) while offline (conftest sets SIBNET_OFFLINE=1)
        args = [a for a in _args("emotic", emotic_root, tmp_path / "out") if a != "--no-pretrained"]
        named = "ImageNet"
    rc = train.main([*args, *extra])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and named in err


# ----------------------------------------------------------------------------------------------------------
# Devices and mixed precision


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
        *_args("emotic", emotic_root, tmp_path, "--device", "cuda", "--amp", amp, model="sibnet"),
        "--epochs",
        "2",
    ]
    assert train.main(args) == 0
    seed_dir = tmp_path / "emotic-sibnet" / "seed0"
    log = _log(seed_dir / "metrics.jsonl")
    assert [r["epoch"] for r in log] == [1, 2]
    assert all(math.isfinite(r["train"]["loss"]) and math.isfinite(r["val"]["value"]) for r in log)
    state = torch.load(seed_dir / "last.pt", weights_only=True)
    fp16 = amp == "fp16" or not torch.cuda.is_bf16_supported()
    assert bool(state["scaler"]) == fp16
    model = sibnet.load_model(seed_dir / "best", device="cuda")
    assert next(model.parameters()).dtype == torch.float32  # AMP never changes the stored weights
