"""Alembic migrations of the feedback schema (applied by :class:`feedback_db.FeedbackStore` on open)."""
