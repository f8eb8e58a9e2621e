"""Where the feedback database and its overlay cache live on this machine."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV_DB_URL = "DIFFVQA_DB_URL"
ENV_DATA_DIR = "DIFFVQA_DATA_DIR"
DB_FILENAME = "feedback.sqlite3"


def data_dir() -> Path:
    """The per-user data directory of diffvqa (not created here).

    ``$DIFFVQA_DATA_DIR`` wins; otherwise the platform's convention: ``$XDG_DATA_HOME/diffvqa`` or
    ``~/.local/share/diffvqa`` on Linux, ``~/Library/Application Support/diffvqa`` on macOS and
    ``%LOCALAPPDATA%\\diffvqa`` on Windows.
    """
    if os.environ.get(ENV_DATA_DIR):
        return Path(os.environ[ENV_DATA_DIR]).expanduser()
    if sys.platform.startswith("win"):
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "diffvqa"


def default_db_url() -> str:
    """``$DIFFVQA_DB_URL`` if set, else a SQLite file in :func:`data_dir` (its folder is created, mode 0700)."""
    if os.environ.get(ENV_DB_URL):
        return os.environ[ENV_DB_URL]
    folder = data_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return f"sqlite:///{folder / DB_FILENAME}"
