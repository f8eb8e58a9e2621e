"""FeedbackStore: round trips, filters, validation, audit log and schema, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import DBAPIError

from feedback_db import FeedbackStore, FeedbackValidationError
from feedback_db.models import Base
from feedback_db.paths import default_db_url
from feedback_support import DB_KINDS, analysis_values, database_url

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(params=DB_KINDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from database_url(request.param, tmp_path)


@pytest.fixture
def store(db_url: str) -> Iterator[FeedbackStore]:
    with FeedbackStore(db_url) as opened:
        yield opened


def test_review_round_trip_returns_every_field(store: FeedbackStore) -> None:
    values = analysis_values()
    analysis_id = store.record_analysis(**values)
    review_id = store.record_review(analysis_id=analysis_id, reviewer="Dr. Weber", verdict="partly",
                                    corrected_answer="nothing has changed.", mask_rating=4, comment="subtle")
    (row,) = store.query_reviews()
    assert (row.review_id, row.analysis_id, row.reviewer, row.verdict) == (
        review_id, analysis_id, "Dr. Weber", "partly")
    assert (row.corrected_answer, row.mask_rating, row.comment) == ("nothing has changed.", 4, "subtle")
    for key in ("question", "question_type", "answer", "theta", "theta_description", "checkpoint_name",
                "checkpoint_sha256", "model_name", "main_sha256", "ref_sha256", "mask_summary"):
        assert getattr(row, key) == values[key], key
    assert row.lam == pytest.approx(0.5)
    assert row.reviewed_at.tzinfo is not None and row.reviewed_at.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - row.reviewed_at) < timedelta(minutes=1)


def test_the_same_review_saved_again_is_stored_once_and_a_changed_one_supersedes(store: FeedbackStore) -> None:
    analysis_id = store.record_analysis(**analysis_values())
    review = dict(analysis_id=analysis_id, reviewer="Dr. Weber", verdict="disagree",
                  corrected_answer="nothing has changed.", mask_rating=2, comment="double click")
    first = store.record_review(**review)
    assert store.record_review(**review) == first  # a second click on Save, or a retried request
    assert store.record_review(**{**review, "corrected_answer": " nothing has changed. "}) == first  # same once cleaned
    assert store.count_reviews() == 1
    assert [e["action"] for e in store.audit_log()] == ["record_analysis", "record_review"]
    changed = store.record_review(**{**review, "verdict": "partly"})
    other_reviewer = store.record_review(**{**review, "reviewer": "Dr. Roth"})
    back_again = store.record_review(**review)  # not the latest of this reviewer any more: a new review
    assert len({first, changed, other_reviewer, back_again}) == 4
    assert store.count_reviews() == 4


def test_same_image_pair_is_one_case(store: FeedbackStore) -> None:
    first = store.record_analysis(**analysis_values(lam=0.2))
    second = store.record_analysis(**analysis_values(lam=0.8))
    other = store.record_analysis(**analysis_values(ref_sha256="d" * 64))
    for analysis_id in (first, second, other):
        store.record_review(analysis_id=analysis_id, reviewer="r", verdict="agree")
    cases = {row.analysis_id: row.case_id for row in store.query_reviews()}
    assert cases[first] == cases[second] != cases[other]


def test_filters_by_question_type_verdict_reviewer_and_time(store: FeedbackStore) -> None:
    plan = [("difference", "disagree", "ann"), ("presence", "agree", "ann"), ("presence", "disagree", "bob"),
            ("level", "partly", "bob")]
    for question_type, verdict, reviewer in plan:
        analysis_id = store.record_analysis(**analysis_values(question_type=question_type))
        store.record_review(analysis_id=analysis_id, reviewer=reviewer, verdict=verdict)
    assert len(store.query_reviews()) == 4
    assert {r.question_type for r in store.query_reviews(question_type="presence")} == {"presence"}
    assert len(store.query_reviews(verdict="disagree")) == 2
    assert len(store.query_reviews(verdict=["disagree", "partly"])) == 3
    assert {r.reviewer for r in store.query_reviews(reviewer="bob")} == {"bob"}
    assert len(store.query_reviews(question_type="presence", verdict="disagree", reviewer="bob")) == 1
    now = datetime.now(UTC)
    assert len(store.query_reviews(since=now - timedelta(hours=1))) == 4
    assert store.query_reviews(since=now + timedelta(hours=1)) == []
    assert store.query_reviews(until=now - timedelta(hours=1)) == []
    assert len(store.query_reviews(until=(now + timedelta(hours=1)).replace(tzinfo=None))) == 4  # naive = UTC
    assert store.reviewers() == ["ann", "bob"]


def test_newest_reviews_come_first(store: FeedbackStore) -> None:
    analysis_id = store.record_analysis(**analysis_values())
    ids = [store.record_review(analysis_id=analysis_id, reviewer="r", verdict="agree", comment=f"#{i}")
           for i in range(3)]
    assert [r.review_id for r in store.query_reviews()] == ids[::-1]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"verdict": "maybe"}, "verdict must be one of"),
        ({"mask_rating": 0}, "mask rating"),
        ({"mask_rating": 6}, "mask rating"),
        ({"mask_rating": True}, "mask rating"),
        ({"reviewer": "  "}, "reviewer must not be empty"),
        ({"comment": "x" * 10_000}, "comment is too long"),
        ({"corrected_answer": "y" * 2_001}, "corrected answer is too long"),
        ({"analysis_id": 10_000}, "unknown analysis id"),
        ({"comment": "\ud800"}, "invalid Unicode"),
    ],
)
def test_bad_review_raises_clear_value_error_and_stores_nothing(store: FeedbackStore, changes: dict,
                                                                 message: str) -> None:
    analysis_id = store.record_analysis(**analysis_values())
    audit_rows = len(store.audit_log())
    kwargs = {"analysis_id": analysis_id, "reviewer": "r", "verdict": "agree", **changes}
    with pytest.raises(FeedbackValidationError, match=message) as info:
        store.record_review(**kwargs)
    assert isinstance(info.value, ValueError)
    assert store.count_reviews() == 0
    assert store.reviewers() == []
    assert len(store.audit_log()) == audit_rows


@pytest.mark.parametrize(
    "changes",
    [{"lam": 1.5}, {"lam": float("nan")}, {"theta": [[1, 0], [0, 1]]}, {"main_sha256": "xyz"},
     {"question": ""}, {"question": "q" * 10_000}, {"checkpoint_sha256": None}],
)
def test_bad_analysis_raises_value_error_and_stores_nothing(store: FeedbackStore, changes: dict) -> None:
    with pytest.raises(FeedbackValidationError):
        store.record_analysis(**analysis_values(**changes))
    assert store.audit_log() == []


def test_text_is_stored_verbatim_except_control_characters(store: FeedbackStore) -> None:
    analysis_id = store.record_analysis(**analysis_values())
    html = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    store.record_review(analysis_id=analysis_id, reviewer="Dr. 🩻 Müller", verdict="disagree",
                        corrected_answer=html, comment="nul\x00 byte\r\nnew line 😀")
    (row,) = store.query_reviews()
    assert row.corrected_answer == html
    assert row.reviewer == "Dr. 🩻 Müller"
    assert row.comment == "nul byte\nnew line 😀"


def test_every_write_appends_one_audit_row(store: FeedbackStore) -> None:
    analysis_id = store.record_analysis(**analysis_values(), actor="ann")
    review_id = store.record_review(analysis_id=analysis_id, reviewer="bob", verdict="disagree")
    log = store.audit_log()
    assert [(e["action"], e["entity_id"], e["actor"]) for e in log] == [
        ("record_analysis", analysis_id, "ann"), ("record_review", review_id, "bob")]
    assert log[1]["detail"] == {"analysis_id": analysis_id, "verdict": "disagree"}


def test_audit_log_refuses_update_and_delete_in_the_database(store: FeedbackStore) -> None:
    store.record_analysis(**analysis_values())
    for statement in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"), store.engine.begin() as conn:
            conn.execute(text(statement))
    assert [e["actor"] for e in store.audit_log()] == ["app"]


def test_store_api_only_inserts() -> None:
    public = {name for name in dir(FeedbackStore) if not name.startswith("_")}
    assert not {name for name in public if name.startswith(("update", "delete", "remove", "edit"))}


def test_schema_comes_from_alembic_and_matches_the_models(store: FeedbackStore) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn)
        assert context.get_current_revision() == "0001_initial"
        assert compare_metadata(context, Base.metadata) == []


def test_reopening_keeps_reviews_and_schema(db_url: str) -> None:
    with FeedbackStore(db_url) as first:
        first.record_review(analysis_id=first.record_analysis(**analysis_values()), reviewer="r", verdict="agree")
    with FeedbackStore(db_url) as second:
        assert second.count_reviews() == 1
        assert set(inspect(second.engine).get_table_names()) >= {"reviews", "analyses", "cases", "reviewers",
                                                                  "audit_log", "alembic_version"}


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    with FeedbackStore(f"sqlite:///{tmp_path / 'f.sqlite3'}") as store, store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000


def test_default_database_is_a_per_user_sqlite_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DIFFVQA_DB_URL", raising=False)
    monkeypatch.delenv("DIFFVQA_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_db_url() == f"sqlite:///{tmp_path / 'diffvqa' / 'feedback.sqlite3'}"
    monkeypatch.setenv("DIFFVQA_DB_URL", "sqlite:///elsewhere.sqlite3")
    assert default_db_url() == "sqlite:///elsewhere.sqlite3"


def test_any_sqlalchemy_url_works_including_in_memory_sqlite() -> None:
    with FeedbackStore("sqlite://") as store:
        store.record_review(analysis_id=store.record_analysis(**analysis_values()), reviewer="r", verdict="agree")
        assert store.count_reviews() == 1


def test_feedback_db_never_imports_torch() -> None:
    code = "import sys, feedback_db, feedback_db.export; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_foreign_keys_are_enforced_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'f.sqlite3'}"
    FeedbackStore(url).close()
    with FeedbackStore(url) as store, pytest.raises(DBAPIError), store.engine.begin() as conn:
        conn.execute(text("INSERT INTO reviews (analysis_id, reviewer_id, verdict, corrected_answer, comment, "
                          "created_at) VALUES (999, 999, 'agree', '', '', '2026-01-01')"))
    create_engine(url).dispose()
