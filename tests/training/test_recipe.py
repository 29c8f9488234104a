"""The Figure-5 recipe (sibnet.training.recipe) end to end, offline: train the three models through the command,
assemble and publish (dry run) the weights folder, load it in the app's Analyzer from the folder and from a
Hub-style cache, resume, estimate.

The trained folder is the session fixture ``published_weights`` (tests/training/conftest.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import statistics
from pathlib import Path

import pytest

from sibnet import publish, recipe
from sibnet.data.registry import get_dataset
from sibnet.errors import CheckpointError
from sibnet.labels import EMOTIC_CATEGORIES
from sibnet.models.registry import model_config
from sibnet.models.serialization import read_config
from sibnet.training import recipe as recipe_impl
from sibnet.training.cards import FIGURE5, select_seed
from sibnet.training.reproduce import GPU_EFFECTIVE_FLOPS, forward_flops
from tests._images import photo_rgb
from tests._published import PublishedWeights

MODEL_FILES = {"config.json", "model.safetensors", "README.md"}


def _digests(folder: Path) -> dict[str, str]:
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with path.open("rb") as f:
                out[str(path.relative_to(folder))] = hashlib.file_digest(f, "sha256").hexdigest()
    return out


def _configs(published: PublishedWeights) -> dict:
    args, rest = recipe.build_parser().parse_known_args(published.recipe_argv)
    return recipe.resolve_configs(args, rest)


# ---- the published folder --------------------------------------------------------------------------------------


def test_published_folder_holds_the_best_validation_seed_with_its_card(published_weights: PublishedWeights):
    from huggingface_hub import ModelCard

    folder = published_weights.folder
    assert {p.name for p in folder.iterdir()} == {"README.md", *FIGURE5}
    assert "dry run: nothing was uploaded" in published_weights.printed
    for key, summary in published_weights.summaries.items():
        assert {p.name for p in (folder / key).iterdir()} == MODEL_FILES
        seeds = summary["seeds"]
        best = max(seeds, key=lambda s: s["val"])  # by validation, whatever the test scores say
        # The published weights are exactly that seed's selected checkpoint.
        run = published_weights.out / f"emotic-{key}"
        assert (
            _digests(folder / key)["model.safetensors"]
            == _digests(run / f"seed{best['seed']}" / "best")["model.safetensors"]
        )
        config, training = read_config(folder / key / "config.json")
        assert config.name == key and config.labels == EMOTIC_CATEGORIES
        results = training["results"]
        tests = [s["test"] for s in seeds]
        assert results["dataset"] == "emotic" and results["metric"] == "mAP"
        assert results["test"]["mean"] == pytest.approx(statistics.fmean(tests))
        assert results["test"]["std"] == pytest.approx(statistics.stdev(tests))
        assert results["selected"] == {
            "seed": best["seed"],
            "epoch": best["best_epoch"],
            "val": best["val"],
            "test": best["test"],
        }
        assert results["deviations"]  # a one-step run is not the paper's recipe, and says so

        card = ModelCard.load(folder / key / "README.md")
        assert card.data.library_name == "pytorch" and card.data.license == "mit"
        assert card.data.datasets == ["emotic"] and "sibnet" in card.data.tags
        values = {(r.dataset_split, r.metric_name): r.metric_value for r in card.data.eval_results}
        assert values[("test", "test mAP (%), mean over 2 seeds")] == round(100 * statistics.fmean(tests), 2)
        assert values[("test", "test mAP (%), standard deviation over 2 seeds")] == round(
            100 * statistics.stdev(tests), 2
        )
        own = f"test mAP (%) of this checkpoint (seed {best['seed']})"
        assert values[("test", own)] == round(100 * best["test"], 2)
        for label in EMOTIC_CATEGORIES:
            assert f". {label}\n" in card.text
        assert "Intended use and limits" in card.text and "@inproceedings{li2021sibnet" in card.text
        assert "does not follow the paper's recipe" in card.text
    root = ModelCard.load(folder / "README.md")
    assert root.data.model_name == "SIB-Net (EMOTIC)" and root.data.eval_results


def test_analyzer_loads_the_published_folder_as_trained(published_weights: PublishedWeights):
    from demo.pipeline import UNTRAINED, Analyzer

    analyzer = Analyzer(weights=published_weights.folder, person_detector=False)
    assert analyzer.trained
    assert analyzer.labels == EMOTIC_CATEGORIES and analyzer.multi_label
    assert not any(UNTRAINED in notice for notice in analyzer.load_notices)
    for key, loaded in analyzer.models.items():
        model = loaded.model
        assert publish.is_trained(model)
        results = publish.recorded_results(model)
        line = publish.describe(model)
        mean, std = 100 * results["test"]["mean"], 100 * results["test"]["std"]
        assert line == f"{FIGURE5[key]} · EMOTIC · test mAP {mean:.1f} ± {std:.1f} · not the paper's recipe"
        # The card states the same score.
        card = (published_weights.folder / key / "README.md").read_text()
        assert f"test mAP {mean:.2f} ± {std:.2f} % over 2 seeds" in card
    analysis = analyzer.analyze(photo_rgb("grace_hopper"))
    assert len(analysis.people) == 1 and analysis.trained
    assert all(p.trained for p in analysis.predictions.values())


def _hub_cache(folder: Path, cache: Path, repo_id: str) -> str:
    """Lay ``folder`` out as huggingface_hub's cache holds a downloaded repo: blobs, a snapshot, refs/main."""
    owner, name = repo_id.split("/")
    repo = cache / f"models--{owner}--{name}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()  # any 40-hex commit id
    for path, digest in _digests(folder).items():
        blob = repo / "blobs" / digest
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            os.link(folder / path, blob)  # same filesystem: a link costs nothing, a copy ~0.5 GB
        link = repo / "snapshots" / commit / path
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return commit


def test_analyzer_loads_the_repo_from_the_hub_cache_offline(
    published_weights: PublishedWeights, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import huggingface_hub
    from huggingface_hub import constants

    from demo.pipeline import Analyzer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    repo_id = published_weights.repo_id
    commit = _hub_cache(published_weights.folder, tmp_path / "hub", repo_id)
    scanned = {r.repo_id: r for r in huggingface_hub.scan_cache_dir(tmp_path / "hub").repos}
    assert {rev.commit_hash for rev in scanned[repo_id].revisions} == {commit}  # huggingface_hub reads it

    analyzer = Analyzer(weights=repo_id, person_detector=False)
    assert analyzer.trained and analyzer.labels == EMOTIC_CATEGORIES
    for key, loaded in analyzer.models.items():
        assert loaded.source.startswith(f"hub:{repo_id}/{key}")
        _, local = read_config(published_weights.folder / key / "config.json")
        assert publish.describe(loaded.model) == publish.describe(local) is not None
    # Offline means offline: a repo that is not in the cache is an error, not a download.
    with pytest.raises(CheckpointError, match="not in the Hugging Face cache"):
        Analyzer(weights="sibnet-tests/not-cached", person_detector=False)


# ---- resuming ---------------------------------------------------------------------------------------------------


def test_rerun_trains_nothing_and_rewrites_the_same_files(
    published_weights: PublishedWeights, capsys: pytest.CaptureFixture[str]
):
    weights = published_weights.weights
    before = _digests(weights)
    # What an assembly killed midway leaves behind.
    (weights / ".sibnet.tmp").mkdir()
    (weights / ".sibnet.tmp" / "model.safetensors").write_bytes(b"half")
    (weights / ".README.md.tmp").write_text("half")
    argv = [a if a != "flops" else "measure" for a in published_weights.recipe_argv]
    assert recipe.main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("is finished; not retrained") == 3 and "training " not in printed
    assert "nothing left to train" in printed
    assert _digests(weights) == before  # the leftovers are gone and every file is byte for byte the same


def _link_tree(src: Path, dest: Path) -> None:
    """Copy a run folder with hard links (the runs are hundreds of MB; links cost nothing)."""
    for path in src.rglob("*"):
        target = dest / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, target)


def test_interrupted_recipe_resumes_where_it_stopped(
    published_weights: PublishedWeights, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    out = tmp_path / "runs"
    for key in FIGURE5:
        _link_tree(published_weights.out / f"emotic-{key}", out / f"emotic-{key}")
    # Killed while training attention's second seed: no summary yet, seed 1 never finished an epoch.
    (out / "emotic-attention" / "summary.json").unlink()
    shutil.rmtree(out / "emotic-attention" / "seed1")
    finished = out / "emotic-sibnet" / "seed0" / "last.pt"
    stamp = finished.stat().st_mtime_ns
    argv = list(published_weights.recipe_argv)
    argv[argv.index("--out") + 1] = str(out)
    argv[argv.index("--weights") + 1] = str(tmp_path / "weights")

    configs = recipe.resolve_configs(*recipe.build_parser().parse_known_args(argv))
    sizes, _ = recipe_impl.split_sizes(configs["attention"])
    assert recipe_impl.workload(configs["sibnet"], sizes) == recipe_impl.Workload(0, 0)
    # Attention's remaining work: seed 1's epoch (1 step of 4) and val pass, and a test pass per seed.
    assert recipe_impl.workload(configs["attention"], sizes) == recipe_impl.Workload(
        4, sizes["val"] + 2 * sizes["test"]
    )

    assert recipe.main(argv) == 0
    printed = capsys.readouterr().out
    assert "sibnet: " in printed and printed.count("is finished; not retrained") == 2
    assert "attention: training" in printed
    assert "seed 0: all 1 epochs done already" in printed and "seed 1 epoch 1/1" in printed
    assert "seed 0 epoch 1/1" not in printed  # the finished seeds were not trained again
    assert finished.stat().st_mtime_ns == stamp
    summary = json.loads((out / "emotic-attention" / "summary.json").read_text())
    assert [s["seed"] for s in summary["seeds"]] == [0, 1]
    assert {p.name for p in (tmp_path / "weights").iterdir()} == {"README.md", *FIGURE5}
    # Seed 0 resumed from the same state: its selection and scores did not change.
    old = published_weights.summaries["attention"]["seeds"]
    assert (summary["seeds"][0]["val"], summary["seeds"][0]["test"]) == (old[0]["val"], old[0]["test"])


# ---- selection, estimate, flags ---------------------------------------------------------------------------------


def test_the_published_seed_is_chosen_by_validation_never_by_test():
    summary = {
        "run": "r",
        "seeds": [
            {"seed": 0, "val": 0.30, "test": 0.90, "best_epoch": 1},
            {"seed": 1, "val": 0.40, "test": 0.10, "best_epoch": 2},
            {"seed": 2, "val": 0.40, "test": 0.20, "best_epoch": 3},
            {"seed": 3, "val": float("nan"), "test": 0.99, "best_epoch": 1},
        ],
    }
    assert select_seed(summary)["seed"] == 1  # best val; the first of a tie; NaN never wins
    summary["seeds"] = summary["seeds"][3:]
    with pytest.raises(ValueError, match="no seed with a finite validation score"):
        select_seed(summary)


def _hours(line: str) -> float:
    value, unit = re.search(r"total ([0-9.]+) (s|min|h|days)", line).groups()
    return float(value) * {"s": 1 / 3600, "min": 1 / 60, "h": 1, "days": 24}[unit]


def test_estimate_for_emotic_follows_the_flop_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    argv = ["--dataset", "emotic", "--data-root", str(tmp_path / "absent"), "--out", str(tmp_path / "runs")]
    assert recipe.main([*argv, "--estimate", "flops", "--estimate-only", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "10 epochs of 728 steps of 32, 224 px" in printed and "release's split sizes" in printed
    gpu = next(line for line in printed.splitlines() if "A100-class GPU" in line)
    # docs/REPRODUCE.md §4's cost model, three seeds of each model: per seed and epoch 3 forward passes per
    # training triple and one per validation triple, at the assumed effective throughput.
    spec = get_dataset("emotic")
    expected = 0.0
    for key in FIGURE5:
        fwd = forward_flops(model_config(key, labels=spec.labels, multi_label=spec.multi_label))
        expected += (
            3 * spec.epochs * fwd * (3 * spec.train_items + spec.val_items) / GPU_EFFECTIVE_FLOPS / 3600
        )
    assert _hours(gpu) == pytest.approx(expected, rel=0.05)
    assert not (tmp_path / "runs").exists()  # --estimate-only trains and writes nothing


def test_measured_estimate_times_steps_on_this_device(emotic_root: Path, tmp_path: Path):
    import torch

    from sibnet.training.cli import build_parser, resolve_config

    argv = [
        "--dataset", "emotic", "--data-root", str(emotic_root), "--model", "face", "--out", str(tmp_path),
        "--no-pretrained", "--input-size", "32", "--batch-size", "4", "--epochs", "2", "--seeds", "0", "1",
    ]  # fmt: skip
    cfg = resolve_config(build_parser().parse_args(argv))
    seconds = recipe_impl.measure_seconds_per_triple(cfg, torch.device("cpu"))
    assert 0 < seconds < 10
    state = torch.random.get_rng_state()
    text = recipe_impl.estimate_text({"face": cfg}, torch.device("cpu"), "measure")
    assert torch.equal(state, torch.random.get_rng_state())  # measuring leaves the training's RNG alone
    n = len(get_dataset("emotic").open(emotic_root, "train", transform=cfg.model.transform))
    assert f"train {n}," in text and "split sizes read from the data" in text
    assert "this device (cpu" in text and "A100-class GPU" in text and "Assumes" in text


def test_recipe_refuses_the_flags_it_sets_itself(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    base = ["--dataset", "emotic", "--data-root", str(tmp_path), "--out", str(tmp_path / "runs")]
    for extra in (["--model", "face"], ["--run-name", "x"], ["--dry-run"]):
        assert recipe.main([*base, *extra, "--estimate-only"]) == 2
        assert "the recipe chooses the models" in capsys.readouterr().err
    assert recipe.main([*base, "--assemble-only", "--estimate", "none"]) == 2
    assert "is not a finished run" in capsys.readouterr().err
