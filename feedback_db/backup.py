"""Backups of the feedback database while the app keeps writing, and restoring one.

SQLite: SQLite's online backup API (``sqlite3.Connection.backup``) copies the whole database in one step, inside
one read transaction: in WAL mode the app's writers are not blocked, and the copy is a consistent snapshot (every
review with its analysis and its audit row, or neither). The copy is written beside the destination, checked with
``PRAGMA integrity_check``, switched to a self-contained rollback journal (no ``-wal`` file to carry along) and
moved into place with one rename.

PostgreSQL: ``pg_dump --format=custom`` when it is on PATH (the password passed in ``PGPASSWORD``, never on the
command line), otherwise the commands to run are printed; restore with ``pg_restore``.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from feedback_db.engine import BUSY_TIMEOUT_MS

COUNTED_TABLES = ("reviewers", "cases", "analyses", "reviews", "audit_log")


class BackupUnavailable(RuntimeError):
    """This database cannot be backed up from here; the message says how to do it instead."""


@dataclass(frozen=True)
class BackupResult:
    """Where the backup went and how many rows each table held in the snapshot."""

    path: Path
    rows: dict[str, int]
    action: str = "backed up to"

    def describe(self) -> str:
        """One line for the terminal."""
        counts = ", ".join(f"{n} {table}" for table, n in self.rows.items())
        return f"{self.action} {self.path}" + (f" ({counts})" if counts else "")


def sqlite_path(url: str | URL) -> Path | None:
    """The database file of a SQLite URL; None for another backend. In-memory SQLite raises ValueError."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file::memory:"):
        raise ValueError("an in-memory SQLite database has nothing on disk to back up")
    return Path(database).expanduser()


def backup(url: str, out: str | Path, *, overwrite: bool = False) -> BackupResult:
    """Back up the feedback database at ``url`` to ``out``.

    Args:
        url: SQLAlchemy URL of the database (SQLite file or PostgreSQL).
        out: the backup file (SQLite: a database file any SQLite opens; PostgreSQL: a ``pg_dump`` custom archive).
        overwrite: replace an existing ``out``.

    Returns:
        The :class:`BackupResult` (row counts of the snapshot; empty for PostgreSQL).

    Raises:
        FileExistsError: ``out`` exists and ``overwrite`` is off, or ``out`` is the database itself.
        FileNotFoundError: the SQLite file does not exist.
        BackupUnavailable: PostgreSQL without ``pg_dump`` on PATH (the message holds the commands to run).
        ValueError: an in-memory database.
    """
    out = Path(out).expanduser()
    source = sqlite_path(url)
    if source is not None and source.resolve() == out.resolve():
        raise FileExistsError(f"{out} is the database itself: back up to another file")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists: pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    if source is None:
        return _pg_dump(make_url(url), out)
    if not source.is_file():
        raise FileNotFoundError(f"no SQLite database at {source}")
    handle, temporary = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    os.close(handle)
    try:
        with _connect(source) as src, _connect(Path(temporary)) as dst:
            src.backup(dst)  # all pages in one step: one read transaction, one snapshot
            dst.execute("PRAGMA journal_mode = DELETE")  # a single self-contained file
            _check_integrity(dst, out)
            rows = _row_counts(dst)
        os.replace(temporary, out)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return BackupResult(out, rows)


def restore(backup_file: str | Path, url: str, *, overwrite: bool = False) -> BackupResult:
    """Restore a SQLite backup into the (SQLite) database at ``url``, through SQLite so that its WAL stays right.

    Stop the app first: a restore replaces every row.

    Raises:
        FileExistsError: the target database holds reviews and ``overwrite`` is off.
        FileNotFoundError: no backup file.
        BackupUnavailable: the target is not SQLite (use ``pg_restore``).
    """
    backup_file = Path(backup_file).expanduser()
    target = sqlite_path(url)
    if target is None:
        raise BackupUnavailable(f"restore into PostgreSQL with pg_restore: {_pg_commands(make_url(url), backup_file)}")
    if not backup_file.is_file():
        raise FileNotFoundError(f"no backup file at {backup_file}")
    with _connect(backup_file, read_only=True) as src:
        _check_integrity(src, backup_file)
        target.parent.mkdir(parents=True, exist_ok=True)
        with _connect(target) as dst:
            if not overwrite and _has_reviews(dst):
                raise FileExistsError(f"{target} already holds reviews: pass --overwrite to replace them")
            src.backup(dst)
            rows = _row_counts(dst)
    return BackupResult(target, rows, action="restored into")


def _connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    uri = f"{path.resolve().as_uri()}?mode=ro" if read_only else f"{path.resolve().as_uri()}"
    connection = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return _Closing(connection)


class _Closing:
    """A sqlite3 connection that closes at the end of a ``with`` block (sqlite3's own only ends a transaction)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def __getattr__(self, name: str):
        return getattr(self.connection, name)

    def backup(self, target: _Closing | sqlite3.Connection) -> None:
        self.connection.backup(getattr(target, "connection", target))

    def __enter__(self) -> _Closing:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.connection.close()


def _check_integrity(connection, path: Path) -> None:
    result = connection.execute("PRAGMA integrity_check").fetchone()[0]
    if result != "ok":
        raise RuntimeError(f"{path} failed SQLite's integrity check: {result}")


def _row_counts(connection) -> dict[str, int]:
    names = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return {table: int(connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])
            for table in COUNTED_TABLES if table in names}


def _has_reviews(connection) -> bool:
    return _row_counts(connection).get("reviews", 0) > 0


def _libpq(url: URL) -> str:
    """The URL as libpq reads it: no SQLAlchemy driver suffix, no password."""
    bare = URL.create("postgresql", username=url.username, host=url.host, port=url.port, database=url.database,
                      query=url.query)  # URL.set(password=None) would keep the password
    return bare.render_as_string(hide_password=False)


def _pg_commands(url: URL, out: Path) -> str:
    return (f"PGPASSWORD=... pg_dump --format=custom --file {out} '{_libpq(url)}'; restore with "
            f"PGPASSWORD=... pg_restore --clean --if-exists --dbname '{_libpq(url)}' {out}")


def _pg_dump(url: URL, out: Path) -> BackupResult:
    if url.get_backend_name() != "postgresql":
        raise BackupUnavailable(f"backups of {url.get_backend_name()} databases are not supported here; "
                                "use that database's own dump tool")
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        raise BackupUnavailable("pg_dump is not on PATH (install the PostgreSQL client tools, e.g. "
                                f"apt-get install postgresql-client), then run: {_pg_commands(url, out)}")
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    partial = out.with_name(f".{out.name}.partial")
    completed = subprocess.run([pg_dump, "--format=custom", f"--file={partial}", _libpq(url)], env=env,
                               capture_output=True, text=True)
    if completed.returncode != 0:
        partial.unlink(missing_ok=True)
        raise BackupUnavailable(f"pg_dump failed ({completed.returncode}): {completed.stderr.strip()}")
    os.replace(partial, out)
    return BackupResult(out, {})
