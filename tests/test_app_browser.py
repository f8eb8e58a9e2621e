"""The review app in a real headless Chromium (Debian's, driven by Playwright): pick an example, analyse, see
the answer and overlays, review with the keyboard, save, find it under Disagreements. Screenshots are kept in
test-artifacts/ for a person to look at."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from app_support import REPO, RunningApp, run_app
from feedback_support import missing

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
ARTIFACTS = REPO / "test-artifacts"
XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, mhh_pairs_dir: Path) -> Iterator[RunningApp]:
    yield from run_app(tmp_path_factory.mktemp("browser-app"), mhh_pairs_dir)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        missing(f"no Chromium at {CHROMIUM}", "DIFFVQA_REQUIRE_BROWSER")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed", "DIFFVQA_REQUIRE_BROWSER")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser, running: RunningApp):
    context = browser.new_context(viewport={"width": 1600, "height": 1300}, device_scale_factor=1)
    opened = context.new_page()
    opened.requests = []  # type: ignore[attr-defined]
    opened.on("request", lambda request: opened.requests.append(request.url))
    opened.goto(running.url, wait_until="networkidle")
    yield opened
    context.close()


def test_pick_analyse_review_and_find_it_under_disagreements(page, running: RunningApp) -> None:
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    expect(page.locator("#banner")).to_contain_text("random weights, answers are meaningless")

    example = running.examples[0]
    page.locator("#example input").click()
    page.get_by_role("option", name=example.name).click()
    expect(page.locator("#attribution")).to_contain_text("Hannover Medical School")
    expect(page.locator("#main-file")).to_contain_text(example.main.stem, timeout=30_000)
    expect(page.locator("#ref-view img")).to_be_visible(timeout=30_000)

    page.get_by_role("button", name="Analyse").click()
    expect(page.locator("#analysis-status")).to_contain_text("Analysed as analysis", timeout=120_000)
    assert page.locator("#answer textarea").input_value().strip()
    expect(page.locator("#theta textarea")).to_have_value(lambda_value_re("rotation"))
    for element in ("#ref-view img", "#main-view img", "#mask-strip img"):
        expect(page.locator(element)).to_be_visible()
    assert page.locator("#registered img").count() >= 2

    first_id = page.locator("#analysis-id input").input_value()
    page.locator("#lambda input[type=number]").fill("0.2")
    page.locator("#lambda input[type=number]").press("Tab")  # the number box releases on blur
    expect(page.locator("#analysis-status")).to_contain_text("Re-answered", timeout=120_000)
    expect(page.locator("#analysis-status")).to_contain_text("lambda 0.20")
    assert page.locator("#analysis-id input").input_value() != first_id

    page.keyboard.press("Alt+3")
    expect(page.locator("#verdict input[value=disagree]")).to_be_checked()
    page.locator("#mask-rating label", has_text="2").first.click()
    page.locator("#corrected textarea").fill("the main image has an additional finding of edema than the reference image.")
    page.locator("#comment textarea").fill(XSS)
    page.locator("#reviewer textarea, #reviewer input").first.fill("Dr. Browser")
    page.keyboard.press("Alt+S")
    expect(page.locator("#review-status")).to_contain_text("Saved review", timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "app_review.png"), full_page=True)

    (row,) = running.store.query_reviews(reviewer="Dr. Browser")
    assert (row.verdict, row.mask_rating, row.comment) == ("disagree", 2, XSS)

    page.get_by_role("tab", name="Disagreements").click()
    expect(page.locator("#reviews-table")).to_contain_text("Dr. Browser", timeout=30_000)
    expect(page.locator("#reviews-table")).to_contain_text("window.__xss")  # shown as text ...
    assert page.evaluate("window.__xss") is None  # ... never run
    page.get_by_role("button", name="Export zip").click()
    expect(page.locator("#export-file")).to_contain_text(".zip", timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "app_disagreements.png"), full_page=True)

    outside = [url for url in page.requests if not url.startswith(("http://127.0.0.1", "data:", "blob:"))]
    assert outside == [], outside[:5]


def test_unreadable_upload_shows_a_message_not_a_traceback(page, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    fake = tmp_path / "scan.png"
    fake.write_text("<script>window.__xss=3</script> not an image")
    page.locator("#main-file input[type=file]").set_input_files(str(fake))
    page.locator("#ref-file input[type=file]").set_input_files(str(fake))
    page.get_by_role("button", name="Analyse").click()
    toast = page.locator(".toast-body").first
    expect(toast).to_be_visible(timeout=60_000)
    text = toast.inner_text()
    assert text.strip() and "Traceback" not in text and 'File "' not in text
    assert page.evaluate("window.__xss") is None
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app_error.png"))


def lambda_value_re(prefix: str):
    import re

    return re.compile(rf"^{prefix}")


def test_environment_requires_browser_in_ci() -> None:
    if os.environ.get("DIFFVQA_REQUIRE_BROWSER") == "1":
        assert CHROMIUM.exists(), "CI must provide /usr/bin/chromium"
