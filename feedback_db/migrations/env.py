"""Alembic environment: runs migrations on the connection the store hands in, or on ``sqlalchemy.url``.

The store passes its open connection as ``config.attributes["connection"]``; the ``alembic`` command line
(``alembic -c feedback_db/alembic.ini upgrade head``) uses ``$DIFFVQA_DB_URL`` or the per-user default.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from feedback_db.models import Base
from feedback_db.paths import default_db_url

config = context.config
target_metadata = Base.metadata


def _run(connection) -> None:  # noqa: ANN001 - an SQLAlchemy Connection
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate through the store's connection, or a fresh engine for the command line."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url") or default_db_url()
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; run against a database")
run_migrations_online()
