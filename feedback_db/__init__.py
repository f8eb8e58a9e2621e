"""feedback_db: the radiologists' feedback on DiffVQA answers and masks.

SQLAlchemy 2 models, an Alembic-migrated schema and :class:`FeedbackStore`, the only API the app (and
scripts) use to record analyses and reviews, query them and export cases. SQLite at a per-user path by
default (WAL, foreign keys on); any SQLAlchemy URL works, e.g. PostgreSQL for several reviewers.

The package never imports torch and never stores pixels: cases are identified by the SHA-256 of their
image bytes; overlay images for exports are PNG bytes handed in by the caller (see
:mod:`feedback_db.overlay_cache`).
"""

from __future__ import annotations

from feedback_db.paths import data_dir, default_db_url
from feedback_db.overlay_cache import OverlayCache
from feedback_db.store import FeedbackStore, ReviewRow
from feedback_db.validation import FeedbackValidationError, VERDICTS

__all__ = [
    "FeedbackStore",
    "ReviewRow",
    "FeedbackValidationError",
    "VERDICTS",
    "OverlayCache",
    "data_dir",
    "default_db_url",
]
