"""Shared helpers of the feedback_db and app tests: database URLs (SQLite, PostgreSQL) and sample values.

PostgreSQL tests run against ``$DIFFVQA_TEST_POSTGRES_URL`` (set by .ci/run), each in a fresh schema that is
dropped afterwards, so concurrent test runs on one server never see each other's rows. Without a server they
skip locally, and FAIL when ``DIFFVQA_REQUIRE_POSTGRES=1`` (CI).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

POSTGRES_ENV = "DIFFVQA_TEST_POSTGRES_URL"
REQUIRE_POSTGRES_ENV = "DIFFVQA_REQUIRE_POSTGRES"


def missing(what: str, require_env: str) -> None:
    """Fail when ``require_env`` is "1" (CI must exercise it), else skip."""
    if os.environ.get(require_env) == "1":
        pytest.fail(f"{what} ({require_env}=1)")
    pytest.skip(what)


def postgres_schema_url() -> Iterator[str]:
    """Yield a URL whose connections use a new, empty schema on the test PostgreSQL server."""
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        missing(f"no PostgreSQL server: {POSTGRES_ENV} is not set", REQUIRE_POSTGRES_ENV)
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(base)
    schema = f"test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # noqa: BLE001 - any connection failure means "no server"
        admin.dispose()
        missing(f"PostgreSQL at {make_url(base).render_as_string(hide_password=True)} unreachable: {exc}",
                REQUIRE_POSTGRES_ENV)
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def database_url(kind: str, tmp_path: Path) -> Iterator[str]:
    """Yield a fresh database URL of ``kind`` ("sqlite" or "postgresql")."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'feedback.sqlite3'}"
    else:
        yield from postgres_schema_url()


DB_KINDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def analysis_values(**overrides: Any) -> dict[str, Any]:
    """Valid keyword arguments of ``FeedbackStore.record_analysis``."""
    values: dict[str, Any] = {
        "main_sha256": "a" * 64,
        "ref_sha256": "b" * 64,
        "question": "what has changed compared to the reference image?",
        "question_type": "difference",
        "answer": "the main image has an additional finding of edema than the reference image.",
        "lam": 0.5,
        "theta": [[1.0, 0.01, 0.02], [-0.01, 0.99, -0.03]],
        "theta_description": "rotation 0.6 deg, scale 1.00, shift 1% right",
        "checkpoint_name": "demo",
        "checkpoint_sha256": "c" * 64,
        "model_name": "diffvqa-tiny",
        "mask_summary": {"U": {"mean": 0.4, "max": 1.0, "argmax": [10, 12]},
                         "F": {"mean": 0.3, "max": 0.8, "argmax": [11, 12]},
                         "M": {"mean": 0.35, "max": 0.9, "argmax": [11, 12]}},
    }
    values.update(overrides)
    return values
