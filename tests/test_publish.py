"""Publishing a weights folder (sibnet.publish) and what a checkpoint says about itself, without the network.

The folder is assembled by the recipe's own :func:`sibnet.training.recipe.assemble` from small untrained
checkpoints and summaries written by :func:`sibnet.training.summary.summarize` (the scores are inputs here;
the trained path end to end is tests/training/test_recipe.py). The Hub is never contacted: the dry run must
not build an API client at all, and the real push path runs against a fake ``HfApi`` that records what
would be sent.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from sibnet import publish
from sibnet.checkpoints import load_model
from sibnet.models.registry import build_model, create_model
from sibnet.training.cards import FIGURE5, describe_results, results_record
from sibnet.training.cli import build_parser, resolve_config
from sibnet.training.recipe import assemble
from sibnet.training.summary import SeedResult, summarize

REPO = "someone/sibnet-emotic"
TOKEN = "hf_test_token_not_real_123456"
# Per model, (val, test) of seeds 0, 1, 2: the best validation seed is never the best test seed.
SCORES = {
    "sibnet": [(0.30, 0.40), (0.36, 0.33), (0.34, 0.35)],
    "concat": [(0.33, 0.31), (0.31, 0.36), (0.32, 0.30)],
    "attention": [(0.29, 0.33), (0.30, 0.28), (0.35, 0.31)],
}


def _config(dataset: str, root: Path, key: str, *extra: str):
    argv = [
        "--dataset",
        dataset,
        "--data-root",
        str(root / "data"),
        "--out",
        str(root / "runs"),
        "--model",
        key,
    ]
    return resolve_config(build_parser().parse_args([*argv, "--seeds", "0", "1", "2", *extra]))


def _summary(cfg, scores: list[tuple[float, float | None]]) -> dict[str, Any]:
    results = [
        SeedResult(
            seed=s, best_epoch=1 + s, val=v, test=t, epochs_done=cfg.epochs, best_dir=str(cfg.seed_dir(s))
        )
        for s, (v, t) in zip(cfg.seeds, scores)
    ]
    return summarize(cfg, results)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An assembled weights folder (small untrained checkpoints, 32 px); read-only."""
    root = tmp_path_factory.mktemp("publish")
    runs = {}
    for key, scores in SCORES.items():
        cfg = _config("emotic", root, key, "--input-size", "32", "--icm-expansion", "1", "--no-pretrained")
        best = max(range(3), key=lambda s: scores[s][0])
        torch.manual_seed(best)
        build_model(cfg.model).save_pretrained(cfg.seed_dir(best) / "best", training={"seed": best})
        runs[key] = (cfg, _summary(cfg, scores))
    assemble(runs, root / "weights")
    return root / "weights"


def _planned(folder: Path) -> list[str]:
    return [
        "README.md",
        *(f"{key}/{name}" for key in FIGURE5 for name in ("config.json", "model.safetensors", "README.md")),
    ]


class _NoNetwork:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("a dry run must not build a Hub client")


def test_dry_run_prints_the_plan_stages_exactly_it_and_sends_nothing(
    weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", _NoNetwork)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: pytest.fail("the dry run read the token"))
    source = tmp_path / "weights"
    shutil.copytree(weights, source, copy_function=os.link)
    (source / "sibnet" / "notes.txt").write_text("not part of the checkpoint")
    staged = tmp_path / "staged"
    assert (
        publish.main(["--weights", str(source), "--repo", REPO, "--dry-run", "--staging", str(staged)]) == 0
    )
    out = capsys.readouterr().out
    assert f"repo: {REPO} (model)" in out and "dry run: nothing was uploaded" in out
    assert "commit message: SIB-Net, concatenation and attention weights trained on EMOTIC" in out
    for path in _planned(source):
        assert f"{(source / path).stat().st_size:>12,d}  {path}\n" in out
    assert "notes.txt" not in out
    files = sorted(str(p.relative_to(staged)) for p in staged.rglob("*") if p.is_file())
    assert files == sorted(_planned(source))
    for path in files:
        assert (staged / path).read_bytes() == (source / path).read_bytes()
    # The staged folder is a complete repository: every checkpoint loads from it.
    for key in FIGURE5:
        assert publish.describe(load_model(staged / key)) is not None


class _FakeApi:
    """Records what :func:`sibnet.publish.push` hands huggingface_hub, and checks the files are there."""

    calls: ClassVar[list[tuple[str, dict[str, Any]]]] = []
    fail_with: ClassVar[Exception | None] = None

    def __init__(self, token: str | None = None, **kwargs: Any) -> None:
        self.calls.append(("init", {"token": token, **kwargs}))

    def create_repo(self, repo_id: str, **kwargs: Any) -> str:
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, **kwargs: Any) -> Any:
        if self.fail_with is not None:
            raise self.fail_with
        folder = Path(kwargs["folder_path"])
        kwargs["present"] = all((folder / p).is_file() for p in kwargs["allow_patterns"])
        self.calls.append(("upload_folder", kwargs))
        return type(
            "CommitInfo", (), {"commit_url": f"https://huggingface.co/{kwargs['repo_id']}/commit/abc"}
        )()


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> type[_FakeApi]:
    import huggingface_hub

    _FakeApi.calls, _FakeApi.fail_with = [], None
    monkeypatch.setattr(huggingface_hub, "HfApi", _FakeApi)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: TOKEN)
    return _FakeApi


def test_push_creates_the_repo_and_uploads_the_plan_in_one_commit(
    weights: Path, fake_hub: type[_FakeApi], capsys: pytest.CaptureFixture[str]
):
    assert publish.main(["--weights", str(weights), "--repo", REPO, "--private"]) == 0
    out, err = capsys.readouterr()
    assert [name for name, _ in fake_hub.calls] == ["init", "create_repo", "upload_folder"]
    assert fake_hub.calls[0][1]["token"] == TOKEN
    assert fake_hub.calls[1][1] == {"repo_id": REPO, "repo_type": "model", "private": True, "exist_ok": True}
    upload = fake_hub.calls[2][1]
    assert upload["repo_id"] == REPO and upload["repo_type"] == "model" and upload["revision"] is None
    assert Path(upload["folder_path"]) == weights and upload["present"]
    assert upload["allow_patterns"] == _planned(weights)  # exactly the checked files, nothing else
    assert upload["commit_message"] == "SIB-Net, concatenation and attention weights trained on EMOTIC"
    lines = [publish.describe(load_model(weights / key)) for key in FIGURE5]
    assert upload["commit_description"].splitlines()[:3] == lines
    assert f"https://huggingface.co/{REPO}/commit/abc" in out
    assert TOKEN not in out + err


def test_push_without_a_token_says_how_to_log_in_and_sends_nothing(
    weights: Path,
    fake_hub: type[_FakeApi],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    assert publish.main(["--weights", str(weights), "--repo", REPO]) == 2
    assert "hf auth login" in capsys.readouterr().err and fake_hub.calls == []


def test_a_hub_error_is_one_line_that_never_echoes_the_token(
    weights: Path, fake_hub: type[_FakeApi], capsys: pytest.CaptureFixture[str]
):
    fake_hub.fail_with = RuntimeError(f"401 Unauthorized for token {TOKEN}")
    assert publish.main(["--weights", str(weights), "--repo", REPO]) == 2
    out, err = capsys.readouterr()
    assert "error: the Hub refused the upload" in err and "***" in err
    assert TOKEN not in out + err


@pytest.mark.parametrize("repo", ["no-owner", "a/b/c", "/abs", "owner/-x", "owner/name.git", "ow ner/x"])
def test_bad_repo_ids_are_refused(weights: Path, repo: str, fake_hub: type[_FakeApi], capsys):
    assert publish.main(["--weights", str(weights), "--repo", repo]) == 2
    assert "owner/name" in capsys.readouterr().err and fake_hub.calls == []


def test_incomplete_folders_are_refused_before_anything_is_sent(
    weights: Path, tmp_path: Path, fake_hub: type[_FakeApi], capsys: pytest.CaptureFixture[str]
):
    broken = tmp_path / "broken"
    shutil.copytree(weights, broken, copy_function=os.link)
    (broken / "concat" / "README.md").unlink()
    assert publish.main(["--weights", str(broken), "--repo", REPO]) == 2
    assert "concat lacks README.md" in capsys.readouterr().err
    # A checkpoint straight from training (no results record) is not a published checkpoint. (New files:
    # writing into the linked ones would change the shared fixture.)
    shutil.rmtree(broken / "concat")
    create_model("concat", input_size=32).save_pretrained(broken / "concat")
    (broken / "concat" / "README.md").write_text("---\nlicense: mit\n---\n")
    assert publish.main(["--weights", str(broken), "--repo", REPO, "--dry-run"]) == 2
    assert "records no results" in capsys.readouterr().err
    assert fake_hub.calls == []


def test_space_readme_front_matter_names_the_weights_repo(tmp_path: Path):
    from huggingface_hub import RepoCard

    readme = tmp_path / "README.md"
    shutil.copyfile(Path(__file__).parents[1] / "README.md", readme)
    before = RepoCard.load(readme)
    assert publish.name_weights_in_space_readme(readme, REPO, write=False)
    assert RepoCard.load(readme).data.to_dict() == before.data.to_dict()  # write=False writes nothing
    assert publish.name_weights_in_space_readme(readme, REPO)
    after = RepoCard.load(readme)
    assert after.data.models == [REPO] and after.text == before.text
    assert {k: v for k, v in after.data.to_dict().items() if k != "models"} == before.data.to_dict()
    assert not publish.name_weights_in_space_readme(readme, REPO)  # once is enough


# ---- describe() and friends --------------------------------------------------------------------------------------


def test_describe_reads_the_published_record(weights: Path):
    model = load_model(weights / "sibnet")
    record = publish.recorded_results(model)
    tests = [t for _, t in SCORES["sibnet"]]
    mean = sum(tests) / 3
    std = math.sqrt(sum((t - mean) ** 2 for t in tests) / 2)
    assert record["selected"]["seed"] == 1 and record["selected"]["test"] == pytest.approx(0.33)
    assert publish.is_trained(model)
    assert publish.describe(model) == (
        f"SIB-Net · EMOTIC · test mAP {100 * mean:.1f} ± {100 * std:.1f} · not the paper's recipe"
    )
    assert publish.describe(model.training_info) == publish.describe(model)  # the mapping works too


def test_describe_is_none_without_results_and_for_malformed_ones():
    fresh = create_model("sibnet", input_size=32)
    assert publish.describe(fresh) is None and publish.recorded_results(fresh) is None
    assert not publish.is_trained(fresh)
    good = {"model": "sibnet", "dataset": "emotic", "metric": "mAP", "test": {"mean": 0.351, "std": 0.003}}
    assert describe_results(good) == "SIB-Net · EMOTIC · test mAP 35.1 ± 0.3"
    for broken in (
        {**good, "metric": "<b>bogus</b>"},
        {**good, "test": {"mean": "35", "std": 0.1}},
        {**good, "test": {"mean": float("nan"), "std": 0.1}},
        {**good, "test": {"mean": True, "std": 0.1}},
        {**good, "model": None, "title": None},
        ["not", "a", "mapping"],
    ):
        assert describe_results(broken) is None, broken
    # Free text from the file is bounded; registered names win over it.
    odd = {**good, "model": "custom", "title": "x" * 500, "dataset": "nowhere", "dataset_title": "Set " * 50}
    assert len(describe_results(odd)) < 140
    assert describe_results({**good, "dataset_title": "Evil"}).split(" · ")[1] == "EMOTIC"


def test_describe_caer_accuracy_and_the_paper_recipe(tmp_path: Path):
    cfg = _config("caer", tmp_path, "sibnet")  # the paper's recipe: defaults, 224 px, three seeds
    summary = _summary(cfg, [(0.75, 0.744), (0.76, 0.748), (0.74, 0.751)])
    record = results_record(summary, "sibnet", cfg.model)
    assert record["deviations"] == [] and record["selected"]["seed"] == 1
    assert describe_results(record) == "SIB-Net · CAER-S · test accuracy 74.8 ± 0.4"
    no_test = results_record(_summary(cfg, [(0.75, None), (0.76, None), (0.74, None)]), "sibnet", cfg.model)
    assert describe_results(no_test) == "SIB-Net · CAER-S · val accuracy 75.0 ± 1.0"
    # --neutral-dropout leaves the paper's recipe, and the card says so.
    blanked = _config("caer", tmp_path, "sibnet", "--neutral-dropout", "0.1")
    record = results_record(_summary(blanked, [(0.75, 0.744)] * 3), "sibnet", blanked.model)
    assert record["deviations"] == ["each branch blanked with probability 0.1 in training (paper: never)"]
    assert describe_results(record).endswith(" · not the paper's recipe")
