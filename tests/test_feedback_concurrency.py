"""Several reviewers writing at once: every review is stored once, nobody sees "database is locked"."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from feedback_db import FeedbackStore
from feedback_support import DB_KINDS, analysis_values, database_url

THREADS = 8
REVIEWS_PER_THREAD = 50


@pytest.fixture(params=DB_KINDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from database_url(request.param, tmp_path)


@pytest.mark.parametrize("shared_store", [True, False], ids=["one-store", "store-per-thread"])
def test_eight_writers_fifty_reviews_each_are_all_stored(db_url: str, shared_store: bool) -> None:
    with FeedbackStore(db_url) as setup:
        analysis_id = setup.record_analysis(**analysis_values())
    shared = FeedbackStore(db_url) if shared_store else None
    errors: list[BaseException] = []
    ids: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(THREADS)

    def reviewer(number: int) -> None:
        store = shared or FeedbackStore(db_url)
        try:
            start.wait()
            for i in range(REVIEWS_PER_THREAD):
                review_id = store.record_review(analysis_id=analysis_id, reviewer=f"reviewer {number}",
                                                verdict=("agree", "partly", "disagree")[i % 3], comment=f"{number}/{i}")
                with lock:
                    ids.append(review_id)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            if shared is None:
                store.close()

    threads = [threading.Thread(target=reviewer, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if shared is not None:
        shared.close()
    assert errors == [], errors[:3]
    with FeedbackStore(db_url) as check:
        rows = check.query_reviews()
        assert len(ids) == len(set(ids)) == len(rows) == THREADS * REVIEWS_PER_THREAD
        assert {r.comment for r in rows} == {f"{n}/{i}" for n in range(THREADS) for i in range(REVIEWS_PER_THREAD)}
        assert len(check.reviewers()) == THREADS
        assert sum(e["action"] == "record_review" for e in check.audit_log()) == THREADS * REVIEWS_PER_THREAD
