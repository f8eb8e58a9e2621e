"""Engines for the feedback store: SQLite tuned for several writers, any other SQLAlchemy URL as is.

SQLite gets WAL journaling (readers never block the writer), foreign keys, a 30 s busy timeout and
``synchronous=FULL`` (a review confirmed to the reviewer survives a crash of the app or the machine).
Write transactions start with ``BEGIN IMMEDIATE`` so that two writers queue on the busy timeout instead of
failing with "database is locked" when a read transaction tries to become a write transaction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.pool import StaticPool

BUSY_TIMEOUT_MS = 30_000
WRITE_OPTION = "diffvqa_write"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_PG_MIGRATION_LOCK = 0x64_76_71_61  # arbitrary advisory-lock key ("dvqa")


def make_engine(url: str) -> Engine:
    """Create the engine for ``url``, with the SQLite settings above when it is SQLite.

    Args:
        url: any SQLAlchemy URL, e.g. ``sqlite:///path/feedback.sqlite3`` or
            ``postgresql+psycopg://user:pw@host/db``. A SQLite file's folder is created.

    Returns:
        The engine; ``engine.execution_options(diffvqa_write=True)`` gives one whose transactions take the
        write lock at once on SQLite.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    database = parsed.database or ""
    in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000}}
    if in_memory:
        kwargs["poolclass"] = StaticPool
    else:
        Path(database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    engine = create_engine(url, **kwargs)
    _install_sqlite_events(engine, wal=not in_memory)
    return engine


def _install_sqlite_events(engine: Engine, *, wal: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (below)
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if wal:
                cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute("PRAGMA synchronous = FULL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def upgrade_schema(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (creates it on an empty database).

    Concurrent openers are serialised: by the SQLite write lock, or by an advisory lock on PostgreSQL.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.execution_options(**{WRITE_OPTION: True}).begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
