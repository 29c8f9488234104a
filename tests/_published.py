"""The trained path's shared fixture: the Figure-5 set trained by the recipe, published (dry run) to a folder.

``published_weights`` runs ``python -m sibnet.recipe`` once per session on planted-cue EMOTIC-format data
(SIB-Net, concatenation and attention, two seeds each — the fewest that make a seed selection and a
standard deviation; the recipe's default is three —, one step of 4 triples per seed at 32 px: the
plumbing of the trained path, not learning), then ``python -m sibnet.publish --dry-run --staging`` into a
folder holding exactly what the Hub repo would hold. ``tests/conftest.py`` registers it for the whole suite
(a module that imported it itself would get a second copy of the fixture, trained again), and its users form
one xdist work unit (``PUBLISHED_TESTS`` there). Read-only: a test that changes files copies them first
(``tests/training/test_recipe.py`` reruns the recipe on ``weights``, which rewrites it byte for byte; nobody
writes to ``folder``).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO_ID = "sibnet-tests/planted-emotic"  # the repo id the dry run names (never contacted)
FIGURE5 = ("sibnet", "concat", "attention")


@dataclass(frozen=True)
class PublishedWeights:
    """A trained, assembled and staged Figure-5 weights folder."""

    folder: Path  # the staged repository: README.md + sibnet/, concat/, attention/ (Analyzer(weights=folder))
    weights: Path  # the folder the recipe assembled (the staging's source)
    out: Path  # the training runs (<out>/emotic-<key>/summary.json, seed<k>/...)
    data_root: Path  # the planted-cue dataset
    recipe_argv: list[str]  # the recipe's command line (rerunning it trains nothing)
    repo_id: str  # the repo id of the dry run
    printed: str  # what the recipe and the dry run printed
    summaries: dict[str, dict[str, Any]]  # model key → the run's summary.json


@pytest.fixture(scope="session")
def published_weights(
    tmp_path_factory: pytest.TempPathFactory, synthetic: Callable[..., Path]
) -> PublishedWeights:
    from sibnet import publish, recipe

    # The same parameters as the suite's emotic_root: written once per session, shared read-only.
    data = synthetic("emotic", n_train=16, n_val=6, n_test=6, size=128, seed=1)
    base = tmp_path_factory.mktemp("published")
    out, weights, folder = base / "runs", base / "weights", base / "staged"
    argv = [
        "--dataset", "emotic", "--data-root", str(data), "--out", str(out), "--weights", str(weights),
        "--seeds", "0", "1", "--no-pretrained", "--input-size", "32", "--batch-size", "4",
        "--epochs", "1", "--max-steps-per-epoch", "1", "--workers", "0", "--no-progress",
        # dC = C: SIB-Net's ICM is most of its checkpoint beyond the trunks; the test is about plumbing.
        "--icm-expansion", "1",
        # The FLOP model only: the measured estimate has its own (cheaper) test.
        "--estimate", "flops",
    ]  # fmt: skip
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert recipe.main(argv) == 0, printed.getvalue()[-2000:]
        dry = ["--weights", str(weights), "--repo", REPO_ID, "--dry-run", "--staging", str(folder)]
        assert publish.main(dry) == 0, printed.getvalue()[-2000:]
    summaries = {key: json.loads((out / f"emotic-{key}" / "summary.json").read_text()) for key in FIGURE5}
    return PublishedWeights(folder, weights, out, data, argv, REPO_ID, printed.getvalue(), summaries)
