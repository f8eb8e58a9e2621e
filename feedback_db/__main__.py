"""``python -m feedback_db backup|restore``: copies of the feedback database (see :mod:`feedback_db.backup`).

    python -m feedback_db backup --db sqlite:///path/feedback.sqlite3 --out backups/feedback-2026-12-04.sqlite3
    python -m feedback_db restore --from backups/feedback-2026-12-04.sqlite3 --db sqlite:///path/feedback.sqlite3

Exit status: 0 done; 2 a usage error (file exists, no database); 3 the backup cannot be made from here (PostgreSQL
without pg_dump: the commands to run are printed).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from feedback_db.backup import BackupUnavailable, backup, restore
    from feedback_db.paths import default_db_url

    parser = argparse.ArgumentParser(prog="python -m feedback_db", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    make = sub.add_parser("backup", help="copy the database while the app runs (SQLite backup API / pg_dump)")
    make.add_argument("--db", help="database URL (default: $DIFFVQA_DB_URL or the per-user SQLite file)")
    make.add_argument("--out", required=True, help="backup file to write")
    make.add_argument("--overwrite", action="store_true", help="replace an existing backup file")
    back = sub.add_parser("restore", help="put a SQLite backup back (stop the app first)")
    back.add_argument("--from", dest="source", required=True, help="backup file")
    back.add_argument("--db", help="database URL to restore into (default: as for backup)")
    back.add_argument("--overwrite", action="store_true", help="replace a database that already holds reviews")
    args = parser.parse_args(argv)
    url = args.db or default_db_url()
    try:
        if args.command == "backup":
            result = backup(url, args.out, overwrite=args.overwrite)
        else:
            result = restore(args.source, url, overwrite=args.overwrite)
    except BackupUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    except (FileExistsError, FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(result.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
