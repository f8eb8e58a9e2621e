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


# -- issue 17: the worklist, the subtraction view and the Error analysis tab ------------------------------------
@pytest.fixture(scope="module")
def worklist_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    """The app over a 3-case worklist of a 12-pair synthetic benchmark, its store holding ~270 simulated reviews."""
    import subprocess
    import sys

    import torch

    import app
    from analysis_support import fill_reviews
    from app_support import REPO, free_port, tiny_pipeline
    from feedback_db import FeedbackStore, OverlayCache
    from review_app.launch import serve
    from review_app.worklist import Worklist

    tmp = tmp_path_factory.mktemp("browser-worklist")
    subprocess.run([sys.executable, "-m", "train", "synth", "--out", str(tmp / "bench"), "--pairs", "12", "--seed",
                    "5", "--size", "128", "--workers", "1"], check=True, capture_output=True, cwd=REPO)
    worklist = Worklist.from_folder(tmp / "bench", "all", "difference", limit=3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    store = FeedbackStore(f"sqlite:///{tmp / 'feedback.sqlite3'}")
    fill_reviews(store, cases=160, seed=0)
    demo = app.build_demo(tiny_pipeline(), store, examples=[], overlays=OverlayCache(tmp / "overlays"),
                          worklist=worklist)
    port = free_port()
    serve(demo, port=port, folders=worklist.folders, prevent_thread_lock=True, quiet=True)
    try:
        yield RunningApp(f"http://127.0.0.1:{port}/", store, tmp / "overlays", [worklist])
    finally:
        demo.close()
        store.close()
        torch.set_num_threads(threads)


def _open(browser, url: str, width: int, height: int):
    """A fresh page on the app, ready once Analyse is there (not 'networkidle': Gradio's queue stream sometimes
    stays open for a while after the page's load events, with or without a worklist)."""
    context = browser.new_context(viewport={"width": width, "height": height}, device_scale_factor=1)
    page = context.new_page()
    page.goto(url, wait_until="domcontentloaded")
    page.locator("#analyze").wait_for(timeout=60_000)
    return page


def _case_loaded(page, number: int, total: int = 3) -> None:
    from playwright.sync_api import expect

    from app_support import images_loaded

    expect(page.locator("#worklist-progress")).to_contain_text(f"Case {number} of {total}", timeout=120_000)
    expect(page.locator("#analysis-status")).to_contain_text("Analysed as analysis", timeout=120_000)
    images_loaded(page, "#ref-view img, #main-view img, #mask-m img, #subtraction img", 4)


def test_worklist_next_review_truth_after_the_verdict_and_resume(browser, worklist_app: RunningApp) -> None:
    from playwright.sync_api import expect

    worklist = worklist_app.examples[0]
    page = _open(browser, worklist_app.url, 1600, 1300)
    try:
        expect(page.locator("#worklist-progress")).to_contain_text("Type your name")
        page.locator("#reviewer textarea, #reviewer input").first.fill("Dr. List")
        # the shortcuts are bound by the page's script once Gradio has mounted: a key pressed before is lost
        page.wait_for_selector("html[data-worklist-shortcuts=ready]", state="attached")
        page.keyboard.press("Alt+N")
        _case_loaded(page, 1)
        expect(page.locator("#worklist-progress")).to_contain_text("0 of 3 reviewed")
        assert page.locator("#truth textarea").input_value() == ""  # hidden before the verdict ...
        assert worklist[0].truth not in page.content()  # ... and not in the page at all
        page.keyboard.press("Alt+3")
        page.keyboard.press("Alt+S")
        expect(page.locator("#review-status")).to_contain_text("Saved review", timeout=60_000)
        expect(page.locator("#truth textarea")).to_have_value(worklist[0].truth, timeout=30_000)  # ... shown after
        expect(page.locator("#worklist-progress")).to_contain_text("1 of 3 reviewed")
        page.screenshot(path=str(ARTIFACTS / "app_worklist_saved.png"), full_page=True)

        page.locator("#worklist-next").click()
        _case_loaded(page, 2)
        assert page.locator("#truth textarea").input_value() == ""
        page.keyboard.press("Alt+P")
        _case_loaded(page, 1)
        expect(page.locator("#truth textarea")).to_have_value(worklist[0].truth)  # reviewed: its truth may show

        page.reload(wait_until="domcontentloaded")  # a new session: the reviewer is remembered and resumes at case 2
        _case_loaded(page, 2)
        expect(page.locator("#worklist-progress")).to_contain_text("Dr. List: 1 of 3 reviewed")
    finally:
        page.context.close()


def test_subtraction_sits_beside_the_masks_and_follows_the_window(browser, worklist_app: RunningApp) -> None:
    from playwright.sync_api import expect

    page = _open(browser, worklist_app.url, 1920, 1080)
    try:
        page.locator("#reviewer textarea, #reviewer input").first.fill("Dr. Window")
        page.locator("#worklist-next").click()
        _case_loaded(page, 1)
        masks = [page.locator(f"#mask-{name} img").bounding_box() for name in ("u", "f", "m")]
        subtraction = page.locator("#subtraction img").bounding_box()
        assert abs(subtraction["y"] - masks[2]["y"]) < 2 and subtraction["x"] > masks[2]["x"]  # one row at 1920
        assert subtraction["width"] >= 300
        expect(page.locator("#subtraction-scale")).to_contain_text("+0.25 denser")
        before = page.locator("#subtraction img").get_attribute("src")
        page.locator("#width input[type=number]").fill("0.4")
        page.locator("#width input[type=number]").press("Tab")
        page.wait_for_function("(src) => document.querySelector('#subtraction img')?.getAttribute('src') !== src",
                               arg=before, timeout=60_000)
        settle(page)
        page.locator("#subtraction").scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "app_subtraction_1920.png"))
    finally:
        page.context.close()


def test_error_analysis_tab_with_a_few_hundred_reviews(browser, worklist_app: RunningApp) -> None:
    from playwright.sync_api import expect

    page = _open(browser, worklist_app.url, 1440, 900)
    try:
        page.get_by_role("tab", name="Error analysis").click()
        headline = page.locator("#ea-headline")
        expect(headline).to_contain_text("reviews of", timeout=60_000)
        expect(headline).to_contain_text("Most errors")
        expect(headline).to_contain_text("Fleiss κ")
        for name in ("family", "errors", "finding", "reviewer", "masks"):
            expect(page.locator(f"#ea-{name} img")).to_be_visible(timeout=30_000)
        expect(page.locator("#ea-kappa")).to_contain_text("fleiss")
        assert page.evaluate("document.documentElement.scrollWidth") <= 1440
        settle(page)
        page.screenshot(path=str(ARTIFACTS / "app_error_analysis.png"), full_page=True)
        with page.expect_download(timeout=30_000) as download:
            page.locator("#ea-csv").click()
        assert download.value.suggested_filename.endswith(".csv")
    finally:
        page.context.close()
