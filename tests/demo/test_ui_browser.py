"""The page in a real browser: headless Debian Chromium driven by Playwright (no browser download).

Two visits, one at desktop width and one at phone width, go through every state a visitor meets: a fresh
page, an example, a method and a target change, a click on a person's box, a person switch, a bad upload
after a result. They count the requests each action sends, check that panels keep their content while maps
are recomputed, that no developer text reaches the page, and record the time each action takes
(``test-artifacts/browser_timings.json``) with a screenshot of each width.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from demo.ui import EXAMPLES_DIR
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
# Text that is for operators, never for a visitor.
DEVELOPER_TEXT = (
    "/tmp", "/work", "/home", "http://", "https://github", "SIBNET_", "YOLO_", "HF_HUB", "Traceback",
    "Error(", "Exception", "ConnectionError", "ModuleNotFoundError", "pi_heif", "PersonDetector", ".py",
    "Could not preprocess", "yolo11n",
)  # fmt: skip


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (make test installs it: apt-get install chromium)")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _src(page, elem_id: str) -> str:
    img = page.locator(f"#{elem_id} img")
    return (img.first.get_attribute("src") or "") if img.count() else ""


def _wait_idle(page, timeout_ms: int = 90_000) -> None:
    """Until every component's status tracker is hidden (no event queued or running)."""
    page.wait_for_function(
        "document.querySelectorAll('[data-testid=status-tracker]:not(.hide)').length === 0",
        timeout=timeout_ms,
    )


def _wait_for_change(page, elem_id: str, old: str, timeout_s: float = 90) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        src = _src(page, elem_id)
        if src and src != old:
            _wait_idle(page)
            return _src(page, elem_id)
        page.wait_for_timeout(50)
    raise AssertionError(f"#{elem_id} did not update")


def _open(browser, url: str, width: int, height: int) -> tuple:
    """A page at this viewport, loaded and ready, with the page errors it raises collected."""
    page = browser.new_page(viewport={"width": width, "height": height})
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(url)
    page.wait_for_selector("#analyse")
    return page, errors


def _wait_loaded(page, elem_id: str, timeout_ms: int = 30_000) -> None:
    """Until the component's image is decoded (its natural size known)."""
    page.wait_for_function(
        f"(() => {{ const i = document.querySelector('#{elem_id} img'); "
        "return !!i && i.complete && i.naturalWidth > 0; })()",
        timeout=timeout_ms,
    )


def _choose(page, dropdown_id: str, option: str) -> None:
    page.click(f"#{dropdown_id} input")
    page.get_by_role("option", name=option, exact=True).click()


class Joins:
    """Counts the queue requests (one per event the page sends to the server)."""

    def __init__(self, page) -> None:
        self.urls: list[str] = []
        page.on("request", lambda r: self.urls.append(r.url) if "/queue/join" in r.url else None)

    def __len__(self) -> int:
        return len(self.urls)


def _no_developer_text(page) -> None:
    text = page.inner_text("body")
    leaked = [t for t in DEVELOPER_TEXT if t in text]
    assert leaked == [], f"developer text on the page: {leaked}"


def _click_face(page, analysis, person: int) -> None:
    """Click the centre of a person's face box on the people image (mapping analysed pixels to the screen)."""
    x1, y1, x2, y2 = analysis.people[person].face_box
    h, w = analysis.image.shape[:2]
    box = page.evaluate(
        """() => { const i = document.querySelector('#people img'); const r = i.getBoundingClientRect();
        return [r.left, r.top, r.width, r.height]; }"""
    )
    left, top, width, height = box
    scale = min(width / w, height / h)
    ox, oy = left + (width - w * scale) / 2, top + (height - h * scale) / 2
    page.mouse.click(ox + (x1 + x2) / 2 * scale, oy + (y1 + y2) / 2 * scale)


def test_desktop_every_state(browser, analyzer):
    timings: dict[str, float] = {}
    collage = EXAMPLES_DIR / "launch_collage.jpg"
    with running_app(analyzer) as (url, _):
        page, errors = _open(browser, url, 1400, 1000)
        joins = Joins(page)
        assert "untrained weights" in page.inner_text("#intro") and "Li, Xiaojiang Peng" in page.inner_text(
            "#intro"
        )
        # Fresh page: no result, downloads disabled; a control change says nothing and sends one request.
        assert page.locator("#download-figure").is_disabled() and page.locator("#download-json").is_disabled()
        _choose(page, "method", "LayerCAM")
        _wait_idle(page)
        assert len(joins) == 1 and page.inner_text("#message").strip() == ""
        assert _src(page, "figure-wide") == ""

        # An example, analysed with the current controls (LayerCAM), in one request.
        before = len(joins)
        started = time.perf_counter()
        page.locator("#examples img").nth(sorted(EXAMPLES_DIR.glob("*.jpg")).index(collage)).click()
        figure = _wait_for_change(page, "figure-wide", "")
        timings["example click → figure"] = time.perf_counter() - started
        assert len(joins) == before + 1
        assert "launch_collage_person-1_layercam" in figure
        assert not page.locator("#download-figure").is_disabled()
        assert page.locator("#person input[type=radio]").count() == 2
        assert "Person 1" in page.inner_text("#person") and "Person 2" in page.inner_text("#person")
        assert "%" in page.inner_text("#label-sibnet") and "fused" in page.inner_text("#branch-table")
        _no_developer_text(page)

        # A method change: one request; the other panels keep their content while the maps are recomputed.
        strip, people = _src(page, "strip"), _src(page, "people")
        before = len(joins)
        started = time.perf_counter()
        _choose(page, "method", "Grad-CAM++")
        page.wait_for_timeout(30)
        assert _src(page, "strip") == strip and _src(page, "people") == people  # not blanked meanwhile
        figure = _wait_for_change(page, "figure-wide", figure)
        timings["method change → figure"] = time.perf_counter() - started
        assert len(joins) == before + 1 and "gradcamplus" in figure

        # A class-agnostic method greys out the target; a target change recomputes once.
        _choose(page, "method", "Eigen-CAM")
        figure = _wait_for_change(page, "figure-wide", figure)
        assert page.locator("#target input").is_disabled()
        _choose(page, "method", "Grad-CAM")
        figure = _wait_for_change(page, "figure-wide", figure)
        assert not page.locator("#target input").is_disabled()
        before = len(joins)
        _choose(page, "target", "Anger")
        figure = _wait_for_change(page, "figure-wide", figure)
        assert len(joins) == before + 1 and "_anger" in figure

        # A click on the second person's face picks that person.
        expected = analyzer.analyze(collage)
        started = time.perf_counter()
        _click_face(page, expected, 1)
        figure = _wait_for_change(page, "figure-wide", figure)
        timings["click on a person → figure"] = time.perf_counter() - started
        assert "person-2" in figure
        assert page.locator("#person input[type=radio]").nth(1).is_checked()
        # ... and the radio switches back.
        started = time.perf_counter()
        page.locator("#person label").nth(0).click()
        figure = _wait_for_change(page, "figure-wide", figure)
        timings["person switch → figure"] = time.perf_counter() - started
        assert "person-1" in figure

        # The contributions of face, body and scene, on demand: one request, a chart, its note and its table.
        assert page.locator("#attribute").is_visible() and _src(page, "attribution") == ""
        before = len(joins)
        started = time.perf_counter()
        page.click("#attribute")
        chart = _wait_for_change(page, "attribution", "")
        timings["contributions click → chart"] = time.perf_counter() - started
        assert len(joins) == before + 1 and "person-1_contributions" in chart
        assert "all (the photo)" in page.inner_text("#attribution-table")
        assert "Anger" in page.inner_text("#attribution-note") and not page.locator("#attribute").is_visible()
        # ... which a target change re-reads (the chart follows the target) and a person switch redraws.
        _choose(page, "target", "Fear")
        chart = _wait_for_change(page, "attribution", chart)
        figure = _src(page, "figure-wide")
        assert "Fear" in page.inner_text("#attribution-note") and "_fear" in figure
        page.locator("#person label").nth(1).click()
        chart = _wait_for_change(page, "attribution", chart)
        figure = _wait_for_change(page, "figure-wide", figure)
        assert "person-2_contributions" in chart
        _no_developer_text(page)

        # An uploaded photo analysed, then a text file renamed .jpg: one plain sentence, the previous result
        # stays, and no broken image is left in the photo input. (An analysis that left the photo out of its
        # outputs once made Gradio rebuild the input for the session, and the next upload met Gradio's own
        # decoder: a bare "Error".)
        page.set_input_files("#photo input[type=file]", str(_images.photo_path("zidane")))
        page.wait_for_selector("#photo img")
        page.click("#analyse")
        figure = _wait_for_change(page, "figure-wide", figure)
        bad = ARTIFACTS / "not-a-photo.jpg"
        ARTIFACTS.mkdir(exist_ok=True)
        bad.write_text("this is a shopping list, not a photo\n")
        page.set_input_files("#photo input[type=file]", str(bad))
        page.wait_for_timeout(500)
        page.click("#analyse")
        page.wait_for_function("document.querySelector('#message').innerText.includes('text file')")
        _wait_idle(page)
        assert _src(page, "figure-wide") == figure  # kept
        broken = "[...document.querySelectorAll('#photo img')].filter(i => i.naturalWidth === 0 && getComputedStyle(i).visibility !== 'hidden').length"
        assert page.evaluate(broken) == 0
        _no_developer_text(page)
        page.screenshot(path=str(ARTIFACTS / "browser-desktop.png"), full_page=True)
        assert errors == []
        page.close()
    previous = (
        json.loads((ARTIFACTS / "browser_timings.json").read_text())
        if (ARTIFACTS / "browser_timings.json").exists()
        else {}
    )
    (ARTIFACTS / "browser_timings.json").write_text(
        json.dumps({**previous, **{k: round(v, 2) for k, v in timings.items()}}, indent=2) + "\n"
    )


def test_phone_result_in_view_and_legible(browser, analyzer):
    with running_app(analyzer) as (url, _):
        page, errors = _open(browser, url, 390, 844)
        page.set_input_files("#photo input[type=file]", str(_images.photo_path("zidane")))
        page.wait_for_selector("#photo img")
        started = time.perf_counter()
        page.click("#analyse")
        _wait_for_change(page, "figure-narrow", "")
        seconds = time.perf_counter() - started
        page.wait_for_timeout(1200)  # the smooth scroll to the results
        top = page.evaluate("document.getElementById('results').getBoundingClientRect().top")
        people_top = page.evaluate("document.getElementById('people').getBoundingClientRect().top")
        assert -50 <= people_top < 844 or -50 <= top < 844, (top, people_top)  # the result is in view
        # The narrow figure is the one shown, and its smallest text stays >= 10 px on this screen.
        assert page.evaluate("document.getElementById('figure-wide').offsetParent === null")
        _wait_loaded(page, "figure-narrow")
        shown = page.evaluate(
            "(() => { const i = document.querySelector('#figure-narrow img'); return [i.clientWidth, i.naturalWidth]; })()"
        )
        from demo.render import NARROW_FONT_PX

        assert NARROW_FONT_PX * shown[0] / shown[1] >= 10, shown
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 2, f"page is {overflow}px wider than the 390px screen"
        # The contributions chart on a phone: in the page's width, its text as legible as the figure's.
        page.click("#attribute")
        _wait_for_change(page, "attribution", "")
        _wait_loaded(page, "attribution")  # under load the new image may not be decoded yet
        chart = page.evaluate(
            "(() => { const i = document.querySelector('#attribution img'); return [i.clientWidth, i.naturalWidth]; })()"
        )
        assert NARROW_FONT_PX * chart[0] / chart[1] >= 10, chart
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 2, f"page is {overflow}px wider than the 390px screen with the chart"
        _no_developer_text(page)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser-phone.png"), full_page=True)
        assert errors == []
        page.close()
    path = ARTIFACTS / "browser_timings.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**previous, "phone: analyse → figure": round(seconds, 2)}, indent=2) + "\n")
