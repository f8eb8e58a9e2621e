"""Every bad input of issue 8, through the Python API and through the launched app's API, in one table.

Each row is tried twice: with the Python API (``DiffVQAPipeline.analyze`` for images and questions,
``FeedbackStore.record_review`` for corrections) and through ``gradio_client`` against a launched app
(``/analyze``, ``/record_review``, ``/list_reviews``, ``/export_disagreements``). A refused input must give a
``ValueError`` subclass (Python) or a gradio error carrying the same human message (app), never a traceback,
and leave every table of the feedback database as it was. An accepted input must be analysed, or stored
exactly as typed and exported inertly (cases.json exact, cases.csv formula-neutralised). How each row was
handled is written to test-artifacts/reliability_inputs.{md,json} for the note. That the disagreements table
shows stored HTML as text in a real browser is checked in test_app_browser.py.
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from app_support import RunningApp, run_app, single_thread_tiny_pipeline
from reliability_support import (
    BAD_INPUTS,
    QUESTION,
    BadInput,
    HandlingTable,
    jpeg_ls_decoder_available,
    row_counts,
    valid_png,
)

TABLE = HandlingTable("reliability_inputs")
REVIEWER = "Dr. Reliability"


@pytest.fixture(scope="module", autouse=True)
def handling_table() -> Iterator[HandlingTable]:
    yield TABLE
    print("\ninput -> handling written to", TABLE.write())


@pytest.fixture(scope="module")
def pipe():
    yield from single_thread_tiny_pipeline()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    from feedback_db import FeedbackStore

    with FeedbackStore(f"sqlite:///{tmp_path_factory.mktemp('py-store') / 'feedback.sqlite3'}") as opened:
        yield opened


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, mhh_pairs_dir: Path) -> Iterator[RunningApp]:
    yield from run_app(tmp_path_factory.mktemp("reliability-app"), mhh_pairs_dir, n_examples=1)


@pytest.fixture(scope="module")
def client(running: RunningApp):
    from gradio_client import Client

    return Client(running.url, verbose=False)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ref") / "reference.png"
    path.write_bytes(valid_png())
    return path


def _write(case: BadInput, folder: Path) -> Path:
    path = folder / case.filename
    path.write_bytes(case.make())
    return path


def _skip_if_not_applicable(case: BadInput) -> None:
    if case.needs_no_jpeg_ls and jpeg_ls_decoder_available():
        from feedback_support import missing

        missing("a JPEG-LS decoder is installed here, so that DICOM is readable", "DIFFVQA_REQUIRE_DICOM_CASES")


def _expected_stored(text: str) -> str:
    """What the store keeps of a text: NFC, no control characters, stripped (feedback_db.validation)."""
    return unicodedata.normalize("NFC", text).strip()


def _exported(zip_path: str | Path, review_id: int) -> tuple[dict, dict]:
    """(cases.json record, cases.csv row) of one review in an export zip."""
    with zipfile.ZipFile(zip_path) as archive:
        record = next(c for c in json.loads(archive.read("cases.json"))["cases"] if c["review_id"] == review_id)
        rows = csv.DictReader(io.StringIO(archive.read("cases.csv").decode("utf-8-sig")))
        row = next(r for r in rows if r["review_id"] == str(review_id))
    return record, row


def _check_inert_export(text: str, record: dict, row: dict) -> str:
    stored = _expected_stored(text)
    assert record["corrected_answer"] == stored  # JSON: exact text
    csv_cell = row["corrected_answer"]
    if stored.startswith(("=", "+", "-", "@")):
        assert csv_cell == "'" + stored
        return f"stored verbatim; CSV cell neutralised as {csv_cell[:12]!r}…; JSON exact"
    assert csv_cell == stored
    return "stored verbatim; CSV and JSON exact (plain text)"


# -------------------------------------------------------------------------------------- Python API


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c.key for c in BAD_INPUTS])
def test_bad_input_through_the_python_api(case: BadInput, pipe, store, reference: Path, tmp_path: Path) -> None:
    _skip_if_not_applicable(case)
    before = row_counts(store.engine)
    if case.field in ("main", "question"):
        main = _write(case, tmp_path) if case.field == "main" else reference
        question = case.make() if case.field == "question" else QUESTION
        if case.refused:
            with pytest.raises(ValueError, match=case.refused) as info:
                pipe.analyze(main, reference, question, max_new_tokens=4)
            TABLE.record(case, "python", f"refused: {type(info.value).__name__}: {info.value}")
        else:
            analysis = pipe.analyze(main, reference, question, max_new_tokens=4)
            size = pipe.config.image_size
            assert analysis.main_image.shape == (size, size) and np.isfinite(analysis.main_image).all()
            assert 0.0 <= analysis.main_image.min() <= analysis.main_image.max() <= 1.0
            assert analysis.question == question.strip()
            read = _read_shape(main)
            TABLE.record(case, "python", f"accepted: read as {read}, analysed" +
                         ("" if case.field == "main" else "; question kept verbatim"))
        assert row_counts(store.engine) == before  # the pipeline never writes
        return
    analysis_id = store.record_analysis(**_analysis_values())
    before = row_counts(store.engine)
    text = case.make()
    if case.refused:
        with pytest.raises(ValueError, match=case.refused) as info:
            store.record_review(analysis_id=analysis_id, reviewer=REVIEWER, verdict="disagree",
                                corrected_answer=text)
        assert row_counts(store.engine) == before
        TABLE.record(case, "python", f"refused: {type(info.value).__name__}: {info.value}; nothing stored")
        return
    review_id = store.record_review(analysis_id=analysis_id, reviewer=REVIEWER, verdict="disagree",
                                    corrected_answer=text)
    after = row_counts(store.engine)
    assert after["reviews"] == before["reviews"] + 1 and after["audit_log"] == before["audit_log"] + 1
    (row,) = store.query_reviews(review_ids=[review_id])
    assert row.corrected_answer == _expected_stored(text)
    record, csv_row = _exported(store.export_cases([review_id], tmp_path / "export.zip"), review_id)
    TABLE.record(case, "python", "accepted: " + _check_inert_export(text, record, csv_row))


def _read_shape(path: Path) -> str:
    from diffvqa_core.imaging import read_image

    height, width = read_image(path).shape
    return f"{height} x {width} gray"


def _analysis_values() -> dict:
    from feedback_support import analysis_values

    return analysis_values()


# ---------------------------------------------------------------------------------------- app API


def _app_error_text(info: pytest.ExceptionInfo) -> str:
    text = str(info.value)
    assert text.strip()
    assert "Traceback" not in text and 'File "' not in text and "Something went wrong" not in text, text
    return text


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c.key for c in BAD_INPUTS])
def test_bad_input_through_the_app_api(case: BadInput, client, running: RunningApp, reference: Path,
                                       tmp_path: Path) -> None:
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    _skip_if_not_applicable(case)
    engine = running.store.engine
    if case.field in ("main", "question"):
        main = _write(case, tmp_path) if case.field == "main" else reference
        question = case.make() if case.field == "question" else QUESTION
        before = row_counts(engine)
        if case.refused:
            with pytest.raises(AppError) as info:
                _send(client, handle_file(str(main)), handle_file(str(reference)), question, api_name="/analyze")
            text = _app_error_text(info)
            assert re.search(case.refused, text, flags=re.IGNORECASE), text
            assert row_counts(engine) == before
            TABLE.record(case, "app", f"gradio error: {text}; nothing stored")
            return
        answer, _theta, analysis_id, *_images, status, _ = client.predict(
            handle_file(str(main)), handle_file(str(reference)), question, api_name="/analyze")
        after = row_counts(engine)
        assert after["analyses"] == before["analyses"] + 1 and answer.strip()
        assert "Analysed as analysis" in status
        stored = _stored_question(engine, int(analysis_id))
        assert stored == _expected_stored(question)
        TABLE.record(case, "app", "accepted: analysed and recorded" +
                     ("" if case.field == "main" else "; question stored verbatim"))
        return
    analysis_id = client.predict(handle_file(str(reference)), handle_file(str(reference)), QUESTION,
                                 api_name="/analyze")[2]
    text = case.make()
    before = row_counts(engine)
    if case.refused:
        with pytest.raises(AppError) as info:
            _send(client, analysis_id, "disagree", text, 2, "", REVIEWER, api_name="/record_review")
        message = _app_error_text(info)
        assert re.search(case.refused, message), message
        assert row_counts(engine) == before
        TABLE.record(case, "app", f"gradio error: {message}; nothing stored")
        return
    confirmation, review_id = client.predict(analysis_id, "disagree", text, 2, "", REVIEWER,
                                             api_name="/record_review")
    assert "Saved review" in confirmation
    after = row_counts(engine)
    assert after["reviews"] == before["reviews"] + 1
    (row,) = running.store.query_reviews(review_ids=[int(review_id)])
    assert row.corrected_answer == _expected_stored(text)
    table, _count = client.predict(None, ["disagree"], REVIEWER, "", "", api_name="/list_reviews")
    shown = next(r for r in table["data"] if int(r[0]) == int(review_id))
    assert shown[6] == _expected_stored(text)  # the table gets the text as data, not markup
    zip_path = client.predict(None, ["disagree"], REVIEWER, "", "", str(int(review_id)),
                              api_name="/export_disagreements")
    record, csv_row = _exported(zip_path, int(review_id))
    TABLE.record(case, "app", "accepted: " + _check_inert_export(text, record, csv_row) +
                 "; listed as plain data")


def _send(client, *args, api_name: str):
    """Send a request; a text the client cannot even encode is sent as raw JSON, as a script could."""
    try:
        return client.predict(*args, api_name=api_name)
    except UnicodeEncodeError:
        return _raw_predict(client, args, api_name)


DISPLAY_DEFAULTS = [0.5, "M", 0.5, 0.5, 1.0]  # lambda, mask, opacity, window centre, window width


def _raw_predict(client, args, api_name: str):
    """POST the call as JSON with \\uXXXX escapes (what json.dumps writes for a lone surrogate), then read the
    event stream; files are uploaded first, the way gradio_client does it."""
    import httpx
    from gradio_client.exceptions import AppError

    base = client.src.rstrip("/")
    data = []
    for value in args:
        if isinstance(value, dict) and "path" in value:  # handle_file(...)
            with open(value["path"], "rb") as handle:
                upload = httpx.post(f"{base}/gradio_api/upload", files={"files": handle}, timeout=60)
            upload.raise_for_status()
            value = {"path": upload.json()[0], "meta": {"_type": "gradio.FileData"}}
        data.append(value)
    data += DISPLAY_DEFAULTS
    route = api_name.lstrip("/")
    response = httpx.post(f"{base}/gradio_api/call/{route}", content=json.dumps({"data": data}),
                          headers={"content-type": "application/json"}, timeout=60)
    response.raise_for_status()
    stream = httpx.get(f"{base}/gradio_api/call/{route}/{response.json()['event_id']}", timeout=120).text
    kind, payload = re.findall(r"^event: (\w+)\ndata: (.*)$", stream, flags=re.MULTILINE)[-1]
    if kind == "error":
        error = json.loads(payload) if payload and payload != "null" else "error"
        raise AppError(error.get("error", error) if isinstance(error, dict) else error)
    return json.loads(payload)


def _stored_question(engine, analysis_id: int) -> str:
    from sqlalchemy import text

    with engine.connect() as conn:
        return conn.execute(text("SELECT question FROM analyses WHERE id = :id"), {"id": analysis_id}).scalar_one()


@pytest.mark.parametrize("lam", [7.0, -0.5])
def test_review_with_a_bad_display_value_stores_nothing(lam: float, client, running: RunningApp, pipe,
                                                        reference: Path, tmp_path: Path) -> None:
    """Through the API Gradio's slider refuses it; through ReviewService the overlay picture is now rendered
    before the review is stored, so a bad lambda stores nothing (it used to store the review and then raise,
    inviting a second, duplicate save)."""
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    from feedback_db import FeedbackStore, OverlayCache
    from review_app.service import ReviewService

    analysis_id = client.predict(handle_file(str(reference)), handle_file(str(reference)), QUESTION,
                                 api_name="/analyze")[2]
    before = row_counts(running.store.engine)
    with pytest.raises(AppError, match="(greater|less) than (maximum|minimum) value") as info:
        client.predict(analysis_id, "agree", "", None, "", REVIEWER, lam, api_name="/record_review")
    _app_error_text(info)
    assert row_counts(running.store.engine) == before

    with FeedbackStore(f"sqlite:///{tmp_path / 'f.sqlite3'}") as store:
        service = ReviewService(pipe, store, OverlayCache(tmp_path / "overlays"))
        analysis_id = service.analyze(reference, reference, QUESTION).analysis_id
        before = row_counts(store.engine)
        with pytest.raises(ValueError, match=r"lambda must lie in \[0, 1\]"):
            service.record_review(analysis_id, reviewer=REVIEWER, verdict="agree", lam=lam)
        assert row_counts(store.engine) == before


def test_a_stored_review_is_confirmed_even_if_its_picture_cannot_be_written(pipe, tmp_path: Path,
                                                                           reference: Path) -> None:
    from feedback_db import FeedbackStore, OverlayCache
    from review_app.service import ReviewService

    class FullDisk(OverlayCache):
        def put(self, analysis_id: int, png: bytes) -> Path:
            raise OSError(28, "No space left on device")

    with FeedbackStore(f"sqlite:///{tmp_path / 'f.sqlite3'}") as store:
        service = ReviewService(pipe, store, FullDisk(tmp_path / "overlays"))
        analysis_id = service.analyze(reference, reference, QUESTION).analysis_id
        review_id = service.record_review(analysis_id, reviewer=REVIEWER, verdict="agree")
        assert store.query_reviews(review_ids=[review_id])[0].reviewer == REVIEWER
