"""Overlay PNGs for exports, kept on disk beside (never inside) the database.

Decision: the database holds no pixels. When a reviewer saves a review, the app renders the side-by-side
overlay exactly as the reviewer saw it (window/level, opacity, lambda) and puts the PNG here, keyed by the
analysis id, under a folder named after the database URL (so two databases never mix). Exports read from
here, so a disagreement exported next week still carries its picture after the app restarts; only
reviewed cases leave pixels on disk. A case reviewed from another machine (shared PostgreSQL) has no local
overlay: its export lists it without a picture and says so in cases.csv.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from sqlalchemy.engine import make_url

from feedback_db.paths import data_dir

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class OverlayCache:
    """A folder of ``analysis_<id>.png`` files.

    Args:
        root: the folder (created on first write, mode 0700).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @classmethod
    def for_database(cls, url: str, base: str | Path | None = None) -> OverlayCache:
        """The cache that belongs to the database at ``url`` (under ``<data dir>/overlays`` by default)."""
        key = make_url(url).render_as_string(hide_password=True)
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
        return cls(Path(base) if base is not None else data_dir() / "overlays" / digest)

    def path(self, analysis_id: int) -> Path:
        """Where the overlay of ``analysis_id`` is (or would be) stored."""
        return self.root / f"analysis_{int(analysis_id)}.png"

    def put(self, analysis_id: int, png: bytes) -> Path:
        """Store PNG bytes for an analysis atomically (a reader never sees half a file).

        Raises:
            ValueError: the bytes are not a PNG.
        """
        if not png.startswith(PNG_SIGNATURE):
            raise ValueError("overlay must be PNG bytes")
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        target = self.path(analysis_id)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=".png")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(png)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def get(self, analysis_id: int) -> bytes | None:
        """The stored PNG bytes, or None when this machine has none for the analysis."""
        try:
            return self.path(analysis_id).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
