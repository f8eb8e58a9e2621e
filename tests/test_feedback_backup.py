"""python -m feedback_db backup / restore: a consistent copy while reviews are being written, and back again."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from feedback_db import FeedbackStore
from feedback_db.__main__ import main
from feedback_db.backup import backup, restore
from feedback_support import analysis_values

REPO = Path(__file__).resolve().parents[1]


def write_reviews(store: FeedbackStore, stop: threading.Event, written: list[int], start: int) -> None:
    """Analyse and review new cases until told to stop; ``written`` counts the reviews confirmed."""
    case = start
    while not stop.is_set():
        analysis_id = store.record_analysis(**analysis_values(main_sha256=f"{case:064x}"))
        store.record_review(analysis_id=analysis_id, reviewer=f"R{start}", verdict="agree")
        written.append(case)
        case += 1


def counts(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("analyses", "reviews", "audit_log", "cases")}


def test_a_backup_during_concurrent_writes_is_a_consistent_snapshot_and_restores(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'live.sqlite3'}"
    with FeedbackStore(url) as store:
        for i in range(20):
            store.record_review(analysis_id=store.record_analysis(**analysis_values(main_sha256=f"{i:064x}")),
                                reviewer="seed", verdict="partly")
        stop, written = threading.Event(), [[], []]
        writers = [threading.Thread(target=write_reviews, args=(store, stop, written[k], 10_000 * (k + 1)))
                   for k in range(2)]
        for thread in writers:
            thread.start()
        try:
            while sum(map(len, written)) < 20:  # writes are under way
                stop.wait(0.01)
            before = 20 + sum(map(len, written))
            first = backup(url, tmp_path / "backups" / "first.sqlite3")
            # The command line, from another process, while the writers go on.
            cli = subprocess.run([sys.executable, "-m", "feedback_db", "backup", "--db", url, "--out",
                                  str(tmp_path / "backups" / "second.sqlite3")], cwd=REPO, capture_output=True,
                                 text=True, timeout=120)
        finally:
            stop.set()
            for thread in writers:
                thread.join()
        final = store.count_reviews()
    assert cli.returncode == 0, cli.stderr
    assert "backed up to" in cli.stdout
    for snapshot in (first.path, tmp_path / "backups" / "second.sqlite3"):
        rows = counts(snapshot)
        # One transaction writes a row and its audit row together: a consistent snapshot holds both or neither.
        assert rows["audit_log"] == rows["analyses"] + rows["reviews"]
        # A case and its analysis are one transaction, its review the next: a snapshot may fall between the two,
        # once per writer.
        assert rows["analyses"] == rows["cases"] and 0 <= rows["analyses"] - rows["reviews"] <= len(writers)
        assert before <= rows["reviews"] <= final
        assert not Path(f"{snapshot}-wal").exists()  # a single self-contained file
    assert first.rows["reviews"] == counts(first.path)["reviews"]

    restored_url = f"sqlite:///{tmp_path / 'restored.sqlite3'}"
    assert main(["restore", "--from", str(first.path), "--db", restored_url]) == 0
    with FeedbackStore(restored_url) as again:  # opens (and migrates) like the app would
        assert again.count_reviews() == first.rows["reviews"]
        assert len(again.audit_log()) == first.rows["audit_log"]
        again.record_review(analysis_id=1, reviewer="after restore", verdict="agree")  # and takes new writes


def test_backup_refuses_to_overwrite_or_to_copy_onto_the_database(tmp_path: Path, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'live.sqlite3'}"
    FeedbackStore(url).close()
    out = tmp_path / "b.sqlite3"
    assert main(["backup", "--db", url, "--out", str(out)]) == 0
    assert main(["backup", "--db", url, "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["backup", "--db", url, "--out", str(out), "--overwrite"]) == 0
    with pytest.raises(FileExistsError, match="database itself"):
        backup(url, tmp_path / "live.sqlite3", overwrite=True)
    assert main(["backup", "--db", f"sqlite:///{tmp_path / 'absent.sqlite3'}", "--out", str(tmp_path / "x")]) == 2


def test_restore_refuses_a_database_that_holds_reviews(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'live.sqlite3'}"
    with FeedbackStore(url) as store:
        store.record_review(analysis_id=store.record_analysis(**analysis_values()), reviewer="A", verdict="agree")
    saved = backup(url, tmp_path / "b.sqlite3")
    with pytest.raises(FileExistsError, match="already holds reviews"):
        restore(saved.path, url)
    assert restore(saved.path, url, overwrite=True).rows["reviews"] == 1


def test_postgresql_without_pg_dump_says_how_and_exits_non_zero(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    status = main(["backup", "--db", "postgresql+psycopg://rev:secret@db.example:5432/feedback",
                   "--out", str(tmp_path / "feedback.dump")])
    err = capsys.readouterr().err
    assert status == 3
    assert "pg_dump --format=custom" in err and "postgresql://rev@db.example:5432/feedback" in err
    assert "secret" not in err and "pg_restore" in err
