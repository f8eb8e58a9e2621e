"""What is saved is what is shown: the review screen in a real headless Chromium, each sequence that once let a
review be stored against a case no longer on screen, checked in the database.

The sequences (issue 18): a failed Analyse followed by Save; other films uploaded after an example was picked;
both films removed; a new answer at another lambda with a verdict already given. Then the rest of a screen a
radiologist can trust: errors in one status line, no stray error badges, DICOM that is not a frontal
radiograph, the registered slider whole and labelled, masks legible, the reviewer remembered, a warning
before leaving with an unsaved review, and a Disagreements table that tells cases apart.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app_support import (
    ARTIFACTS,
    RunningApp,
    analyse,
    error_badges,
    launch_chromium,
    open_page,
    pick_example,
    run_app,
    set_film,
    settle,
    synthetic_examples,
)

pytestmark = pytest.mark.browser
CORRECTION = "the main image has an additional finding of edema than the reference image."


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, mhh_pairs_dir: Path) -> Iterator[RunningApp]:
    tmp = tmp_path_factory.mktemp("review-screen")
    yield from run_app(tmp, mhh_pairs_dir, n_examples=2, extra_examples=synthetic_examples(tmp / "synthetic"))


@pytest.fixture(scope="module")
def browser():
    yield from launch_chromium()


@pytest.fixture
def page(browser, running: RunningApp):
    opened = open_page(browser, running.url)
    yield opened
    opened.context.close()


def _real(running: RunningApp, index: int = 0):
    return [pair for pair in running.examples if not pair.truth][index]


def _synthetic(running: RunningApp):
    return next(pair for pair in running.examples if pair.truth)


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _analyses(running: RunningApp) -> int:
    from feedback_db.models import Analysis

    with running.store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(Analysis)).scalar_one()


def _try_to_save(page) -> None:
    """What a reviewer would do: Alt+S, and a click on Save if the browser lets them."""
    page.keyboard.press("Alt+S")
    save = page.locator("#save-review")
    if save.is_enabled():
        save.click()
    settle(page)


# -- 1. screen and record agree -------------------------------------------------------------------------------
def test_save_is_disabled_until_the_pair_on_screen_is_analysed(page, running: RunningApp) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#save-review")).to_be_disabled()
    pick_example(page, _real(running).name)
    expect(page.locator("#save-review")).to_be_disabled()
    analysis_id = analyse(page)
    expect(page.locator("#save-review")).to_be_enabled()
    expect(page.locator("#review-target")).to_contain_text(f"analysis #{analysis_id}")
    assert error_badges(page) == 0


def test_after_a_failed_analyse_save_stores_nothing(page, running: RunningApp, tmp_path: Path) -> None:
    """Once: every panel said Error, and Save stored 'agree' with the leftover correction against the old case."""
    from playwright.sync_api import expect

    pick_example(page, _real(running).name)
    analyse(page)
    page.keyboard.press("Alt+1")
    page.locator("#corrected textarea").fill(CORRECTION)
    page.locator("#reviewer textarea, #reviewer input").first.fill("Dr. Failed")
    text_file = tmp_path / "scan.png"
    text_file.write_text("Findings: none. This is a report, not a film.\n" * 3)
    set_film(page, "main-file", text_file)
    page.locator("#analyze").click()
    settle(page)
    _try_to_save(page)
    assert running.store.query_reviews(reviewer="Dr. Failed") == []
    expect(page.locator("#analysis-status")).to_contain_text("not an image")
    expect(page.locator("#save-review")).to_be_disabled()
    assert page.locator("#answer textarea").input_value() == ""
    assert page.locator("#analysis-id input").input_value() == ""
    assert not page.locator("#verdict input:checked").count()
    assert page.locator("#corrected textarea").input_value() == ""
    assert error_badges(page) == 0


def test_uploading_other_films_drops_the_example_its_source_and_ground_truth(page, running: RunningApp) -> None:
    from playwright.sync_api import expect

    synthetic = _synthetic(running)
    pick_example(page, synthetic.name)
    analyse(page)
    expect(page.locator("#attribution")).to_contain_text("Ground truth")
    page.keyboard.press("Alt+3")
    page.locator("#reviewer textarea, #reviewer input").first.fill("Dr. Upload")
    real = _real(running)
    set_film(page, "main-file", real.main)
    settle(page)
    _try_to_save(page)
    assert running.store.query_reviews(reviewer="Dr. Upload") == []
    expect(page.locator("#example input")).to_have_value("")
    expect(page.locator("#attribution")).not_to_contain_text("Synthetic")
    expect(page.locator("#attribution")).not_to_contain_text("Ground truth")
    assert page.locator("#answer textarea").input_value() == ""
    expect(page.locator("#save-review")).to_be_disabled()
    assert not page.locator("#verdict input:checked").count()

    set_film(page, "ref-file", real.ref)
    analysis_id = analyse(page)
    page.keyboard.press("Alt+3")
    page.keyboard.press("Alt+S")
    expect(page.locator("#review-status")).to_contain_text("Saved review", timeout=60_000)
    (row,) = running.store.query_reviews(reviewer="Dr. Upload")
    assert row.analysis_id == analysis_id
    assert (row.main_sha256, row.ref_sha256) == (_sha256(real.main), _sha256(real.ref))


def test_removing_both_films_empties_the_screen(page, running: RunningApp) -> None:
    from playwright.sync_api import expect

    pick_example(page, _real(running).name)
    analyse(page)
    page.keyboard.press("Alt+2")
    page.locator("#reviewer textarea, #reviewer input").first.fill("Dr. Cleared")
    set_film(page, "main-file", None)
    set_film(page, "ref-file", None)
    settle(page)
    _try_to_save(page)
    assert running.store.query_reviews(reviewer="Dr. Cleared") == []
    for element in ("#main-view img", "#ref-view img", "#registered img", "#mask-u img", "#mask-f img",
                    "#mask-m img"):
        expect(page.locator(element)).to_have_count(0)
    assert page.locator("#answer textarea").input_value() == ""
    assert page.locator("#theta textarea, #theta input").first.input_value() == ""
    expect(page.locator("#save-review")).to_be_disabled()
    expect(page.locator("#analysis-status")).to_contain_text("Choose both films")


@pytest.mark.slow
def test_a_new_answer_at_another_lambda_keeps_the_text_and_asks_for_the_verdict_again(page,
                                                                                      running: RunningApp) -> None:
    """A verdict given to one answer is never saved against another; the reviewer's own text is kept."""
    from playwright.sync_api import expect

    pair = _real(running)
    pick_example(page, pair.name)
    first_id = analyse(page)
    page.keyboard.press("Alt+1")
    page.locator("#mask-rating label", has_text="4").first.click()
    page.locator("#corrected textarea").fill(CORRECTION)
    page.locator("#comment textarea").fill("left base")
    page.locator("#reviewer textarea, #reviewer input").first.fill("Dr. Lambda")

    box = page.locator("#lambda input[type=number]")
    box.fill("0.2")
    box.press("Enter")  # typed and Enter: applies without leaving the box
    expect(page.locator("#analysis-status")).to_contain_text("Re-answered", timeout=120_000)
    expect(page.locator("#analysis-status")).to_contain_text("lambda 0.20")
    new_id = int(page.locator("#analysis-id input").input_value())
    assert new_id != first_id
    assert not page.locator("#verdict input:checked").count()
    assert not page.locator("#mask-rating input:checked").count()
    assert page.locator("#corrected textarea").input_value() == CORRECTION
    assert page.locator("#comment textarea").input_value() == "left base"
    expect(page.locator("#review-status")).to_contain_text("choose your verdict")
    expect(page.locator("#review-target")).to_contain_text(f"analysis #{new_id}")

    _try_to_save(page)  # no verdict: a sentence beside Save, nothing stored
    expect(page.locator("#review-status")).to_contain_text("Choose a verdict")
    assert running.store.query_reviews(reviewer="Dr. Lambda") == []
    assert error_badges(page) == 0

    page.keyboard.press("Alt+2")
    page.keyboard.press("Alt+S")
    expect(page.locator("#review-status")).to_contain_text("Saved review", timeout=60_000)
    (row,) = running.store.query_reviews(reviewer="Dr. Lambda")
    assert (row.analysis_id, row.verdict, row.corrected_answer, row.lam) == (new_id, "partly", CORRECTION,
                                                                           pytest.approx(0.2))
    assert (row.main_sha256, row.ref_sha256) == (_sha256(pair.main), _sha256(pair.ref))

    box.fill("0.8")
    box.press("Enter")
    expect(page.locator("#analysis-status")).to_contain_text("lambda 0.80", timeout=120_000)
    expect(page.locator("#review-status")).to_contain_text("Saved review")  # the confirmation is not wiped


def test_another_question_clears_the_answer_and_the_ground_truth(page, running: RunningApp) -> None:
    from playwright.sync_api import expect

    pick_example(page, _synthetic(running).name)
    analyse(page)
    question = page.locator("#question input")
    question.fill("is there evidence of pleural effusion in this image?")
    question.press("Enter")
    expect(page.locator("#save-review")).to_be_disabled(timeout=30_000)
    assert page.locator("#answer textarea").input_value() == ""
    expect(page.locator("#attribution")).not_to_contain_text("Ground truth")
    expect(page.locator("#attribution")).to_contain_text("Synthetic")


# -- 2. errors in one place -----------------------------------------------------------------------------------
def test_one_film_only_is_a_sentence_in_the_status_line_and_the_film_stays(page, running: RunningApp) -> None:
    from playwright.sync_api import expect

    set_film(page, "main-file", _real(running).main)
    expect(page.locator("#main-view img")).to_be_visible(timeout=30_000)
    page.locator("#analyze").click()
    expect(page.locator("#analysis-status")).to_contain_text("Choose both images", timeout=60_000)
    settle(page)
    expect(page.locator("#main-view img")).to_be_visible()
    assert error_badges(page) == 0


def test_empty_question_is_a_sentence_in_the_status_line(page, running: RunningApp) -> None:
    from playwright.sync_api import expect

    pick_example(page, _real(running).name)
    question = page.locator("#question input")
    question.fill("")
    question.press("Tab")
    settle(page)  # the question's event cancels pending analyses: click after it (tests/app_support.analyse)
    page.locator("#analyze").click()
    expect(page.locator("#analysis-status")).to_contain_text("question is empty", timeout=60_000)
    settle(page)
    expect(page.locator("#main-view img")).to_be_visible()
    expect(page.locator("#save-review")).to_be_disabled()
    assert error_badges(page) == 0


# -- 5. input sanity ------------------------------------------------------------------------------------------
def test_a_ct_slice_is_refused_before_and_at_analyse(page, running: RunningApp) -> None:
    from playwright.sync_api import expect
    from pydicom.data import get_testdata_file

    ct = get_testdata_file("CT_small.dcm", download=False)
    if ct is None:
        from feedback_support import missing

        missing("pydicom's test files are not installed", "DIFFVQA_REQUIRE_DICOM_CASES")
    set_film(page, "ref-file", _real(running).ref)
    settle(page)  # one upload's event at a time, as a person uploads (on a loaded machine they can finish out of turn)
    set_film(page, "main-file", Path(ct))
    expect(page.locator("#analysis-status")).to_contain_text("Modality CT", timeout=30_000)
    before = _analyses(running)
    settle(page)  # the uploads' events cancel pending analyses: click after them (tests/app_support.analyse)
    page.locator("#analyze").click()
    settle(page)
    expect(page.locator("#analysis-status")).to_contain_text("not a radiograph")
    assert page.locator("#answer textarea").input_value() == ""
    expect(page.locator("#save-review")).to_be_disabled()
    assert _analyses(running) == before
    assert error_badges(page) == 0


def test_a_lateral_view_is_analysed_but_flagged(page, running: RunningApp, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    from reliability_support import _monochrome1  # pydicom's CR example: ViewPosition LL

    lateral = tmp_path / "lateral.dcm"
    lateral.write_bytes(_monochrome1())
    set_film(page, "ref-file", _real(running).ref)
    set_film(page, "main-file", lateral)
    expect(page.locator("#analysis-status")).to_contain_text("lateral view", timeout=30_000)
    analyse(page)
    expect(page.locator("#analysis-status")).to_contain_text("Flagged")
    expect(page.locator("#analysis-status")).to_contain_text("lateral view")


# -- 3. images whole and labelled, 4. masks legible -----------------------------------------------------------
def test_registered_slider_shows_the_whole_film_labelled(page, running: RunningApp) -> None:
    pick_example(page, _real(running).name)
    analyse(page)
    box = page.locator("#registered").bounding_box()
    images = page.locator("#registered img")
    assert images.count() == 2
    for index in range(2):
        image = images.nth(index)
        rect = image.bounding_box()
        natural = image.evaluate("img => [img.naturalWidth, img.naturalHeight]")
        assert rect["y"] >= box["y"] - 1 and rect["y"] + rect["height"] <= box["y"] + box["height"] + 1
        drawn = image.evaluate("""img => { const s = Math.min(img.clientWidth / img.naturalWidth,
                                                              img.clientHeight / img.naturalHeight);
                                           return [img.naturalWidth * s, img.naturalHeight * s]; }""")
        assert drawn[1] <= rect["height"] + 1 and drawn[0] <= rect["width"] + 1  # contained, not cropped
        assert natural[0] >= 512  # the film's own resolution, not a thumbnail
    label = page.locator("#registered").inner_text()
    assert "Registered main" in label and "reference" in label


def test_films_are_rendered_at_their_own_resolution(page, running: RunningApp) -> None:
    from PIL import Image

    pair = _real(running)
    pick_example(page, pair.name)
    analyse(page)
    with Image.open(pair.main) as film:
        long_side = max(film.size)
    natural = page.locator("#main-view img").evaluate("img => Math.max(img.naturalWidth, img.naturalHeight)")
    assert natural == min(long_side, 1024)


def test_masks_side_by_side_at_least_300px_with_one_scale_and_a_line_each(page, running: RunningApp) -> None:
    from playwright.sync_api import expect

    pick_example(page, _real(running).name)
    analyse(page)
    boxes = [page.locator(f"#mask-{name} img").bounding_box() for name in ("u", "f", "m")]
    assert all(box["width"] >= 300 for box in boxes), boxes
    assert abs(boxes[0]["y"] - boxes[1]["y"]) < 2 and abs(boxes[1]["y"] - boxes[2]["y"]) < 2  # one row
    assert boxes[0]["x"] < boxes[1]["x"] < boxes[2]["x"]
    expect(page.locator("#mask-scale .colour-bar")).to_be_visible()
    notes = page.locator(".mask-note").all_inner_texts()
    assert any("DINO" in n for n in notes) and any("learned" in n for n in notes) and any("λU" in n for n in notes)
    expect(page.locator("#lambda")).to_contain_text("1 = only the prior U")
    page.screenshot(path=str(_artifact("app_masks_1440.png")), full_page=True)


# -- 6. state that survives, a table that tells cases apart ---------------------------------------------------
def test_reviewer_name_survives_a_reload(page) -> None:
    from playwright.sync_api import expect

    reviewer = page.locator("#reviewer textarea, #reviewer input").first
    reviewer.fill("Dr. Memory")
    settle(page, 1.5)
    page.reload(wait_until="networkidle")
    expect(page.locator("#reviewer textarea, #reviewer input").first).to_have_value("Dr. Memory", timeout=30_000)


@pytest.mark.slow
def test_leaving_with_an_unsaved_review_asks_first(page, running: RunningApp) -> None:
    from playwright.sync_api import expect

    dialogs: list[str] = []

    def answer(dialog) -> None:
        dialogs.append(dialog.type)
        dialog.accept()

    page.on("dialog", answer)
    pick_example(page, _real(running).name)
    analyse(page)
    page.keyboard.press("Alt+3")
    page.locator("#reviewer textarea, #reviewer input").first.fill("Dr. Leaving")
    page.reload(wait_until="networkidle")
    assert dialogs == ["beforeunload"]

    pick_example(page, _real(running).name)
    analyse(page)
    page.keyboard.press("Alt+3")
    page.locator("#reviewer textarea, #reviewer input").first.fill("Dr. Leaving")
    page.keyboard.press("Alt+S")
    expect(page.locator("#review-status")).to_contain_text("Saved review", timeout=60_000)
    settle(page)
    page.reload(wait_until="networkidle")
    assert dialogs == ["beforeunload"]  # saved: no second question


def test_disagreements_table_shows_case_and_films_and_highlights_the_selection(page, running: RunningApp) -> None:
    from playwright.sync_api import expect

    pair = _real(running, 1)
    pick_example(page, pair.name)
    analysis_id = analyse(page)
    page.keyboard.press("Alt+3")
    page.locator("#comment textarea").fill("a long comment that must stay readable in the table " * 3)
    page.locator("#reviewer textarea, #reviewer input").first.fill("Dr. Table")
    page.keyboard.press("Alt+S")
    expect(page.locator("#review-status")).to_contain_text("Saved review", timeout=60_000)
    (row,) = running.store.query_reviews(reviewer="Dr. Table")
    assert row.analysis_id == analysis_id

    page.get_by_role("tab", name="Disagreements").click()
    table = page.locator("#reviews-table")
    expect(table).to_contain_text("Dr. Table", timeout=30_000)
    headers = " ".join(table.locator("th").all_inner_texts())
    assert "case" in headers and "films" in headers and "mask rating" in headers
    line = table.get_by_role("row").filter(has_text="Dr. Table").first
    expect(line).to_contain_text(_sha256(pair.main)[:10])
    expect(line).to_contain_text(f"{row.case_id}")
    table.get_by_role("gridcell", name="Dr. Table").first.click()
    expect(page.locator("#selected input, #selected textarea").first).to_have_value(str(row.review_id),
                                                                                   timeout=30_000)
    expect(page.locator("#review-details")).to_contain_text(f"case #{row.case_id}")
    expect(page.locator("#review-picture img")).to_be_visible(timeout=30_000)
    settle(page)
    colour = table.get_by_role("gridcell", name="Dr. Table").first.evaluate(
        "td => getComputedStyle(td).backgroundColor + '|' + getComputedStyle(td.firstElementChild || td)"
        ".backgroundColor")
    assert "7, 89, 133" in colour, colour
    page.screenshot(path=str(_artifact("app_disagreements_selected.png")), full_page=True)


# -- 7. the first screen ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("width", "height"), [(1280, 800), (1920, 1080)])
def test_no_horizontal_scroll_and_analyse_in_view(browser, running: RunningApp, width: int, height: int) -> None:
    page = open_page(browser, running.url, width, height)
    try:
        pick_example(page, _synthetic(running).name)
        analyse(page)
        page.evaluate("window.scrollTo(0, 0)")
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        button = page.locator("#analyze").bounding_box()
        assert button["y"] >= 0 and button["y"] + button["height"] <= height
        page.screenshot(path=str(_artifact(f"app_review_{width}x{height}.png")))
        page.screenshot(path=str(_artifact(f"app_review_{width}x{height}_full.png")), full_page=True)
    finally:
        page.context.close()


def _artifact(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name
