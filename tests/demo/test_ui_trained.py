"""The trained path end to end (issue 16): the recipe's published folder, loaded by the app, seen in Chromium.

``published_weights`` (tests/training/conftest.py) trains the Figure-5 set briefly on planted-cue data with
``python -m sibnet.recipe`` and stages it with ``python -m sibnet.publish --dry-run``; this loads that folder
as a visitor's app would and checks the page: no untrained warning, each model's card metric in the header,
scores and a figure for a photo. (Loading the same folder from a Hub-style cache with ``HF_HUB_OFFLINE=1`` is
tests/training/test_recipe.py's.)
"""

from __future__ import annotations

import pytest

from demo.pipeline import Analyzer
from sibnet import publish
from tests import _images
from tests._app import running_app
from tests._published import PublishedWeights
from tests.demo.test_ui_browser import ARTIFACTS, _no_developer_text, _open, _src, _wait_for_change, browser  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def test_the_app_on_published_weights_shows_what_it_loaded(browser, published_weights: PublishedWeights):  # noqa: F811
    analyzer = Analyzer(weights=published_weights.folder, person_detector=False)
    assert analyzer.trained
    lines = [publish.describe(m.model) for m in analyzer.models.values()]
    assert all(line and "test mAP" in line for line in lines)
    with running_app(analyzer) as (url, _):
        page, errors = _open(browser, url, 1400, 1000)
        intro = page.inner_text("#intro")
        assert "untrained" not in intro.lower()  # the warning is gone exactly when all three are trained
        for line in lines:  # "SIB-Net · EMOTIC · test mAP 12.3 ± 0.4 · ...", each model's card metric
            assert line in intro, (line, intro)
        page.set_input_files("#photo input[type=file]", str(_images.photo_path("grace_hopper")))
        page.wait_for_selector("#photo img")
        page.click("#analyse")
        figure = _wait_for_change(page, "figure-wide", "")
        assert "grace_hopper_person-1_gradcam" in figure
        for key in ("concat", "attention", "sibnet"):
            assert "%" in page.inner_text(f"#label-{key}")  # the scores are shown
        assert "untrained" not in page.inner_text("body").lower()
        _no_developer_text(page)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser-trained.png"), full_page=True)
        assert errors == []
        page.close()
