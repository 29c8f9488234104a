"""The page in a real browser: headless Debian Chromium driven by Playwright (no browser download).

Loads the app, uploads a photo, runs the analysis, waits for the figure and the labels, switches the person
and the target, saves a screenshot under ``test-artifacts/``, and fails on any page error.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from tests import _images
from tests._app import running_app

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (make test installs it: apt-get install chromium)")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _figure_src(page) -> str:
    return page.get_attribute("#figure img", "src") or ""


def _choose(page, dropdown_id: str, option: str) -> None:
    page.click(f"#{dropdown_id} input")
    page.get_by_role("option", name=option, exact=True).click()


def _wait_idle(page, timeout_ms: int = 90_000) -> None:
    """Until every component's status tracker is hidden (no event queued or running)."""
    page.wait_for_function(
        "document.querySelectorAll('[data-testid=status-tracker]:not(.hide)').length === 0",
        timeout=timeout_ms,
    )


def _wait_for_new_figure(page, old: str, timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        src = _figure_src(page)
        if src and src != old:
            _wait_idle(page)
            return _figure_src(page)
        page.wait_for_timeout(200)
    raise AssertionError("the figure did not update")


@pytest.mark.parametrize(
    "viewport", [{"width": 1400, "height": 1000}, {"width": 390, "height": 844}], ids=["desktop", "phone"]
)
def test_analyse_switch_person_and_target(browser, analyzer, viewport):
    with running_app(analyzer) as (url, _):
        page = browser.new_page(viewport=viewport)
        errors: list[str] = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto(url)
        page.wait_for_selector("#analyse")
        assert "untrained weights" in page.inner_text("#intro")

        page.set_input_files("#photo input[type=file]", str(_images.photo_path("zidane")))
        page.wait_for_selector("#photo img")
        page.click("#analyse")
        page.wait_for_selector("#figure img", state="attached", timeout=90_000)
        _wait_idle(page)
        page.locator("#figure img").scroll_into_view_if_needed()
        first = _figure_src(page)
        page.wait_for_function("document.querySelector('#label-sibnet').innerText.includes('%')")
        sibnet_labels = page.inner_text("#label-sibnet")
        assert "SIB-Net" in sibnet_labels
        assert "untrained weights" in page.inner_text("#status")
        assert page.locator("#strip img").count() == 1 and page.locator("#people img").count() == 1

        _choose(page, "person", "person 1 (estimated body)")
        second = _wait_for_new_figure(page, first)
        _choose(page, "target", "Anger")
        third = _wait_for_new_figure(page, second)
        assert len({first, second, third}) == 3

        ARTIFACTS.mkdir(exist_ok=True)
        name = "desktop" if viewport["width"] > 800 else "phone"
        page.screenshot(path=str(ARTIFACTS / f"browser-{name}.png"), full_page=True)
        # nothing wider than the screen on a phone
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 2, f"page is {overflow}px wider than the {viewport['width']}px screen"
        assert errors == []
        page.close()


def test_example_click_runs_the_analysis(browser, analyzer):
    """Clicking an example photo loads it and runs the analysis (the screenshot in docs/ comes from here)."""
    with running_app(analyzer) as (url, _):
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto(url)
        page.wait_for_selector("#analyse")
        page.get_by_role("button", name="grace_hopper.jpg").or_(
            page.locator("img[src*='grace_hopper']")
        ).first.click()
        page.wait_for_selector("#figure img", state="attached", timeout=90_000)
        _wait_idle(page)
        assert page.input_value("#person input").startswith("person 0")
        assert "%" in page.inner_text("#label-sibnet")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser-example.png"), full_page=True)
        assert errors == []
        page.close()
