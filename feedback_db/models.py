"""The feedback schema: reviewers, cases, analyses, reviews and an append-only audit log.

A *case* is a pair of images (main = current visit, ref = prior visit) known only by the SHA-256 of the
image bytes; no pixels and no DICOM identifiers are ever stored. An *analysis* is one answer the model gave
for a case, a question and a fusion weight lambda (with the checkpoint that produced it). A *review* is one
reviewer's verdict on one analysis. The audit log gets a row for every write the store makes.

The Alembic revision in ``migrations/versions`` creates exactly these tables; a test compares the two.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware.

    SQLite has no time zones: values are stored as naive UTC there and given ``tzinfo=UTC`` on the way out.
    Naive datetimes handed in are taken to be UTC already.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of the feedback schema."""


class Reviewer(Base):
    """A person who reviews answers; the name comes from the app's login when auth is on."""

    __tablename__ = "reviewers"
    __table_args__ = (UniqueConstraint("name", name="uq_reviewers_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    reviews: Mapped[list[Review]] = relationship(back_populates="reviewer")


class Case(Base):
    """A longitudinal pair of images, identified by the SHA-256 of each image's bytes."""

    __tablename__ = "cases"
    __table_args__ = (UniqueConstraint("main_sha256", "ref_sha256", name="uq_cases_pair"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    main_sha256: Mapped[str] = mapped_column(String(64))
    ref_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    analyses: Mapped[list[Analysis]] = relationship(back_populates="case")


class Analysis(Base):
    """One answer of one checkpoint for one case, question and lambda, with its registration and masks."""

    __tablename__ = "analyses"
    __table_args__ = (CheckConstraint("lam >= 0 AND lam <= 1", name="ck_analyses_lam"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    checkpoint_name: Mapped[str] = mapped_column(String(200))
    checkpoint_sha256: Mapped[str] = mapped_column(String(64))
    model_name: Mapped[str] = mapped_column(String(200))
    lam: Mapped[float] = mapped_column(Float)
    question: Mapped[str] = mapped_column(Text)
    question_type: Mapped[str] = mapped_column(String(32), index=True)
    answer: Mapped[str] = mapped_column(Text)
    theta: Mapped[list[list[float]]] = mapped_column(JSON)
    theta_description: Mapped[str] = mapped_column(Text, default="")
    mask_summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    case: Mapped[Case] = relationship(back_populates="analyses")
    reviews: Mapped[list[Review]] = relationship(back_populates="analysis")


class Review(Base):
    """A reviewer's verdict on an analysis; reviews are never edited, a new one supersedes."""

    __tablename__ = "reviews"
    __table_args__ = (
        CheckConstraint("verdict IN ('agree', 'partly', 'disagree')", name="ck_reviews_verdict"),
        CheckConstraint("mask_rating IS NULL OR (mask_rating >= 1 AND mask_rating <= 5)", name="ck_reviews_rating"),
        Index("ix_reviews_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    analysis_id: Mapped[int] = mapped_column(ForeignKey("analyses.id"), index=True)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("reviewers.id"), index=True)
    verdict: Mapped[str] = mapped_column(String(16), index=True)
    corrected_answer: Mapped[str] = mapped_column(Text, default="")
    mask_rating: Mapped[int | None] = mapped_column(Integer, nullable=True)
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    analysis: Mapped[Analysis] = relationship(back_populates="reviews")
    reviewer: Mapped[Reviewer] = relationship(back_populates="reviews")


class AuditEntry(Base):
    """One row per write the store makes. Append-only: the store never updates or deletes, and database
    triggers (SQLite and PostgreSQL) refuse UPDATE and DELETE on this table."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(32))
    entity: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[int] = mapped_column(Integer)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
