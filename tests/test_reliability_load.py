"""8 reviewers x 100 reviews through the API of ``python app.py`` (a real process, SQLite file database):
every review confirmed to a reviewer is stored exactly once, nobody sees "database is locked", and the
/record_review latency percentiles are reported (test-artifacts/reliability_load.json)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

from app_support import free_port
from reliability_support import ARTIFACTS, AppProcess, listening_addresses, save_tiny_checkpoint, start_app, stop
from review_app.loadtest import percentiles, run_load

REVIEWERS = 8
REVIEWS = 100


@pytest.fixture(scope="module")
def app_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AppProcess, Path]]:
    tmp = tmp_path_factory.mktemp("load")
    database = tmp / "feedback.sqlite3"
    app = start_app(tmp, f"sqlite:///{database}", save_tiny_checkpoint(tmp / "tiny"), free_port())
    try:
        yield app, database
    finally:
        stop(app)


@pytest.mark.slow
def test_app_listens_on_loopback_only_by_default(app_process: tuple[AppProcess, Path]) -> None:
    app, _ = app_process
    assert listening_addresses(app.port) == {"127.0.0.1"}


def test_percentiles_use_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentiles(values) == {"p50": 50.0, "p90": 90.0, "p99": 99.0, "max": 100.0}
    assert percentiles([]) == {}


@pytest.mark.slow
def test_eight_reviewers_hundred_reviews_each_all_stored_once(app_process: tuple[AppProcess, Path]) -> None:
    app, database = app_process
    report = run_load(app.url, REVIEWERS, REVIEWS)
    print("\n" + report.summary())
    with sqlite3.connect(database) as conn:
        comments = [row[0] for row in conn.execute("SELECT comment FROM reviews WHERE comment LIKE 'load %'")]
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        audited = conn.execute("SELECT count(*) FROM audit_log WHERE action = 'record_review'").fetchone()[0]
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "reliability_load.json").write_text(json.dumps(
        {**asdict(report), "ok": report.ok, "rows_in_database": len(comments), "integrity_check": integrity},
        indent=2), encoding="utf-8")
    assert report.failed == 0 and report.database_locked == 0, report.errors[:5]
    assert report.written == report.stored == REVIEWERS * REVIEWS and report.duplicates == 0
    assert len(comments) == len(set(comments)) == REVIEWERS * REVIEWS == audited
    assert integrity == "ok"
    assert "database is locked" not in app.output()
    assert report.latency_ms["p99"] < 30_000
