"""The review app in a real headless Chromium (Debian's, driven by Playwright): pick an example, analyse, see
the answer and overlays, review with the keyboard, save, find it under Disagreements. Screenshots are kept in
test-artifacts/ for a person to look at. (The review screen's guarantees are in test_app_review_screen.py.)"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from app_support import ARTIFACTS, CHROMIUM, RunningApp, analyse, launch_chromium, open_page, pick_example, \
    run_app, set_film, settle

XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, mhh_pairs_dir: Path) -> Iterator[RunningApp]:
    yield from run_app(tmp_path_factory.mktemp("browser-app"), mhh_pairs_dir)


@pytest.fixture(scope="module")
def browser():
    yield from launch_chromium()


@pytest.fixture
def page(browser, running: RunningApp):
    opened = open_page(browser, running.url, 1600, 1300)
    opened.requests = []  # type: ignore[attr-defined]
    opened.on("request", lambda request: opened.requests.append(request.url))
    yield opened
    opened.context.close()


def test_pick_analyse_review_and_find_it_under_disagreements(page, running: RunningApp) -> None:
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    expect(page.locator("#banner")).to_contain_text("random weights, answers are meaningless")

    example = running.examples[0]
    pick_example(page, example.name)
    expect(page.locator("#attribution")).to_contain_text("Hannover Medical School")
    expect(page.locator("#main-file")).to_contain_text(example.main.stem[:8], timeout=30_000)
    expect(page.locator("#ref-view img")).to_be_visible(timeout=30_000)

    first_id = analyse(page)
    assert page.locator("#answer textarea").input_value().strip()
    expect(page.locator("#theta textarea")).to_have_value(re.compile(r"^rotation"))
    for element in ("#ref-view img", "#main-view img", "#mask-u img", "#mask-f img", "#mask-m img"):
        expect(page.locator(element)).to_be_visible()
    assert page.locator("#registered img").count() >= 2

    page.locator("#lambda input[type=number]").fill("0.2")
    page.locator("#lambda input[type=number]").press("Tab")  # leaving the box applies it too
    expect(page.locator("#analysis-status")).to_contain_text("Re-answered", timeout=120_000)
    expect(page.locator("#analysis-status")).to_contain_text("lambda 0.20")
    assert page.locator("#analysis-id input").input_value() != str(first_id)

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


def test_unreadable_upload_is_a_sentence_beside_the_inputs_not_a_traceback(page, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    fake = tmp_path / "scan.png"
    fake.write_text("<script>window.__xss=3</script> not an image")
    set_film(page, "main-file", fake)
    set_film(page, "ref-file", fake)
    page.get_by_role("button", name="Analyse").click()
    status = page.locator("#analysis-status")
    expect(status).to_contain_text("not an image", timeout=60_000)
    settle(page)
    text = status.inner_text()
    assert "Traceback" not in text and 'File "' not in text
    assert page.evaluate("window.__xss") is None
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app_error.png"))


def test_environment_requires_browser_in_ci() -> None:
    if os.environ.get("DIFFVQA_REQUIRE_BROWSER") == "1":
        assert CHROMIUM.exists(), "CI must provide /usr/bin/chromium"
