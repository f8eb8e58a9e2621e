"""Property tests (hypothesis, fixed budget, derandomised) over the question path and over review recording on
SQLite and PostgreSQL: any text gives an answer or a ValueError subclass (Python API) / a gradio error with a
human message (app handlers), never another exception, and a refused write leaves the database as it was.
The image reader's fuzz lives in test_imaging.py.
"""

from __future__ import annotations


import gradio as gr
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app_support import single_thread_tiny_pipeline
from feedback_db.validation import clean_text
from feedback_support import DB_KINDS, analysis_values, database_url
from reliability_support import QUESTION, row_counts, valid_png

_FIXED = {"deadline": None, "derandomize": True, "database": None,
          "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]}
MODEL_BUDGET = settings(max_examples=100, **_FIXED)  # each example runs the tiny model (~0.1 s of CPU)
APP_BUDGET = settings(max_examples=40, **_FIXED)  # model + rendering + database
STORE_BUDGET = settings(max_examples=200, **_FIXED)  # database only
GENERIC = "Something went wrong on the server"

# Every code point, lone surrogates and control characters included.
ANY_CHAR = st.characters(codec=None, exclude_categories=())
TEXT = st.one_of(
    st.text(ANY_CHAR, max_size=80),
    st.text(ANY_CHAR, min_size=900, max_size=1100),  # around the question limit of 1,000
    st.builds(lambda noise, base: base + noise, st.text(ANY_CHAR, max_size=20), st.sampled_from([QUESTION, ""])),
    st.sampled_from(["\x00", " \t\n", "\u200b", "\ufeff", "e\u0301", "\U0001F4A9" * 300, "<script>", "=1+1"]),
)


@pytest.fixture(scope="module")
def pipe():
    yield from single_thread_tiny_pipeline()


@pytest.fixture(scope="module")
def films() -> tuple[np.ndarray, np.ndarray]:
    from diffvqa_core.imaging import read_image

    film = read_image(valid_png())
    return film, film[::-1].copy()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, pipe):
    from feedback_db import FeedbackStore, OverlayCache
    from review_app.service import ReviewService

    tmp = tmp_path_factory.mktemp("fuzz")
    with FeedbackStore(f"sqlite:///{tmp / 'feedback.sqlite3'}") as store:
        yield ReviewService(pipe, store, OverlayCache(tmp / "overlays"))


@pytest.fixture(scope="module")
def handlers(service):
    from review_app.handlers import Handlers

    return Handlers(service, [])


@pytest.fixture(scope="module", params=DB_KINDS)
def review_handlers(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Handlers over a store on SQLite and on PostgreSQL (no model needed: the analyses are recorded directly)."""
    from feedback_db import FeedbackStore, OverlayCache
    from review_app.handlers import Handlers
    from review_app.service import ReviewService

    tmp = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    for url in database_url(request.param, tmp):
        with FeedbackStore(url) as store:
            yield Handlers(ReviewService(None, store, OverlayCache(tmp / "overlays")), [])


@pytest.fixture(scope="module")
def pair_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("pair")
    (folder / "main.png").write_bytes(valid_png())
    (folder / "ref.png").write_bytes(valid_png()[::1])
    return str(folder / "main.png"), str(folder / "ref.png")


@MODEL_BUDGET
@given(question=TEXT)
@example(question="what has \ud800 changed?")  # a lone surrogate once made the tokenizer raise TypeError
def test_pipeline_answers_any_text_or_raises_value_error(pipe, films, question: str) -> None:
    main, ref = films
    try:
        analysis = pipe.analyze(main, ref, question, max_new_tokens=3)
    except ValueError:
        return
    assert isinstance(analysis.answer, str)
    assert analysis.question == question.strip()


@APP_BUDGET
@given(question=TEXT)
@example(question="what has \ud800 changed?")
def test_app_question_path_gives_an_answer_or_a_clear_message(handlers, service, pair_files, question: str) -> None:
    """Handlers.analyze: pipeline, question family, record_analysis and rendering, as the UI and API call it."""
    before = row_counts(service.store.engine)
    try:
        answer, *_rest = handlers.analyze(*pair_files, question, 0.5)
    except gr.Error as error:
        assert GENERIC not in str(error) and str(error).strip()
        assert row_counts(service.store.engine) == before
        return
    assert isinstance(answer, str) and answer.strip()
    assert row_counts(service.store.engine)["analyses"] == before["analyses"] + 1


@STORE_BUDGET
@given(
    verdict=st.one_of(st.sampled_from(["agree", "partly", "disagree", " Disagree ", None, ""]), st.text(max_size=12)),
    corrected=TEXT,
    rating=st.one_of(st.none(), st.integers(-3, 9), st.sampled_from([2.0, 2.5, "3", "x", float("nan")])),
    comment=TEXT,
    reviewer=st.one_of(st.sampled_from(["Dr. Fuzz", ""]), st.text(ANY_CHAR, max_size=120)),
)
def test_review_recording_takes_any_text_or_gives_a_clear_message(review_handlers, verdict, corrected, rating,
                                                                  comment, reviewer) -> None:
    handlers, store = review_handlers, review_handlers.service.store
    analysis_id = store.record_analysis(**analysis_values())
    before = row_counts(store.engine)
    try:
        _message, review_id = handlers.record_review(analysis_id, verdict, corrected, rating, comment, reviewer)
    except gr.Error as error:
        assert GENERIC not in str(error) and str(error).strip()
        assert row_counts(store.engine) == before
        return
    after = row_counts(store.engine)
    assert after["reviews"] == before["reviews"] + 1 and after["audit_log"] == before["audit_log"] + 1
    (row,) = store.query_reviews(review_ids=[review_id])
    assert row.verdict == verdict.strip().lower()
    # stored exactly as the validator cleans it (NFC, control characters other than tab/newline dropped)
    assert row.corrected_answer == clean_text(corrected, "corrected answer", 10**6)
    assert row.comment == clean_text(comment, "comment", 10**6)

