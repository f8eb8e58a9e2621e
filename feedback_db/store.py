"""FeedbackStore: record analyses and reviews, query them, export cases. The only door to the database.

Every public write is one transaction that also appends an audit row: either all of it is stored or
nothing is. Values are checked first (:mod:`feedback_db.validation`); a bad value raises
:class:`~feedback_db.validation.FeedbackValidationError` (a ``ValueError``) and touches nothing. The store
only inserts: reviews are never edited (a later review supersedes) and the audit log is append-only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from feedback_db import validation as v
from feedback_db.engine import WRITE_OPTION, make_engine, upgrade_schema
from feedback_db.models import Analysis, AuditEntry, Base, Case, Review, Reviewer
from feedback_db.paths import default_db_url

T = TypeVar("T", bound=Base)
OverlaySource = Callable[[int], bytes | None] | Mapping[int, bytes] | None


@dataclass(frozen=True)
class ReviewRow:
    """A review joined with its analysis and case: one row of the disagreements table and of exports."""

    review_id: int
    analysis_id: int
    case_id: int
    reviewer: str
    verdict: str
    corrected_answer: str
    mask_rating: int | None
    comment: str
    reviewed_at: datetime
    question: str
    question_type: str
    answer: str
    lam: float
    theta: list[list[float]]
    theta_description: str
    mask_summary: dict[str, Any]
    model_name: str
    checkpoint_name: str
    checkpoint_sha256: str
    main_sha256: str
    ref_sha256: str
    analyzed_at: datetime

    def as_dict(self) -> dict[str, Any]:
        """The row as JSON-able values (times as ISO 8601 UTC strings)."""
        out = asdict(self)
        out["reviewed_at"] = self.reviewed_at.isoformat()
        out["analyzed_at"] = self.analyzed_at.isoformat()
        return out


class FeedbackStore:
    """Reviews of DiffVQA answers in any SQLAlchemy database (SQLite by default).

    Opening a store creates or upgrades the schema with Alembic. One store is safe to share between
    threads; several processes (or app instances) may open the same database.

    Args:
        url: SQLAlchemy URL; ``None`` = ``$DIFFVQA_DB_URL`` or the per-user SQLite file
            (see :func:`feedback_db.paths.default_db_url`).
    """

    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_db_url()
        self.engine = make_engine(self.url)
        upgrade_schema(self.engine)
        self._reader = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = sessionmaker(self.engine.execution_options(**{WRITE_OPTION: True}), expire_on_commit=False)

    # -- lifecycle -----------------------------------------------------------------------------------------
    def close(self) -> None:
        """Release all pooled connections."""
        self.engine.dispose()

    def __enter__(self) -> FeedbackStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def display_url(self) -> str:
        """The URL with any password masked, for banners and logs."""
        return self.engine.url.render_as_string(hide_password=True)

    # -- writes --------------------------------------------------------------------------------------------
    def record_analysis(
        self,
        *,
        main_sha256: str,
        ref_sha256: str,
        question: str,
        question_type: str,
        answer: str,
        lam: float,
        theta: Any,
        checkpoint_name: str,
        checkpoint_sha256: str,
        model_name: str,
        theta_description: str = "",
        mask_summary: Mapping[str, Mapping[str, Any]] | None = None,
        actor: str = "app",
    ) -> int:
        """Store one answer of the model for a case (created on first sight) and return its id.

        Args:
            main_sha256: SHA-256 of the main (current) image's bytes.
            ref_sha256: SHA-256 of the reference (prior) image's bytes.
            question: the question asked.
            question_type: its family (one of the benchmark's seven, or ``"other"``).
            answer: the generated answer.
            lam: fusion weight lambda in [0, 1] the answer was generated with.
            theta: the 2x3 affine registration (ndarray or nested lists).
            checkpoint_name: name of the checkpoint (folder name or "demo").
            checkpoint_sha256: SHA-256 of the checkpoint's weights (``random-init`` for an untrained model).
            model_name: architecture / preset name.
            theta_description: theta in words (rotation, scale, shift).
            mask_summary: per mask (``"U"``, ``"F"``, ``"M"``) statistics, e.g. mean, max, argmax.
            actor: who caused the write, for the audit log.

        Returns:
            The new analysis id.

        Raises:
            FeedbackValidationError: a value is missing, malformed or too long; nothing is stored.
        """
        values = {
            "question": v.clean_text(question, "question", v.MAX_QUESTION, required=True),
            "question_type": v.clean_text(question_type, "question type", 32, required=True),
            "answer": v.clean_text(answer, "answer", v.MAX_ANSWER),
            "lam": v.check_lambda(lam),
            "theta": v.check_theta(theta),
            "theta_description": v.clean_text(theta_description, "theta description", v.MAX_SHORT),
            "mask_summary": v.check_mask_summary(mask_summary),
            "checkpoint_name": v.clean_text(checkpoint_name, "checkpoint name", v.MAX_SHORT, required=True),
            "checkpoint_sha256": v.check_checkpoint_hash(checkpoint_sha256),
            "model_name": v.clean_text(model_name, "model name", v.MAX_SHORT, required=True),
        }
        main = v.check_sha256(main_sha256, "main image sha256")
        ref = v.check_sha256(ref_sha256, "reference image sha256")
        actor = v.clean_text(actor, "actor", v.MAX_REVIEWER) or "app"
        with self._writer.begin() as session:
            case = self._get_or_create(
                session, select(Case).where(Case.main_sha256 == main, Case.ref_sha256 == ref),
                lambda: Case(main_sha256=main, ref_sha256=ref),
            )
            analysis = Analysis(case_id=case.id, **values)
            session.add(analysis)
            session.flush()
            self._audit(session, actor, "record_analysis", "analysis", analysis.id,
                        {"case_id": case.id, "lam": values["lam"], "question_type": values["question_type"]})
            return analysis.id

    def record_review(
        self,
        *,
        analysis_id: int,
        reviewer: str,
        verdict: str,
        corrected_answer: str = "",
        mask_rating: int | None = None,
        comment: str = "",
    ) -> int:
        """Store a reviewer's verdict on an analysis, in one transaction, and return the review id.

        Args:
            analysis_id: id from :meth:`record_analysis`.
            reviewer: the reviewer's name (the login name when the app runs with auth).
            verdict: ``"agree"``, ``"partly"`` or ``"disagree"``.
            corrected_answer: the answer the reviewer would have given (may be empty).
            mask_rating: how well the fused mask points at the change, 1 (useless) to 5 (exact), or None.
            comment: free text.

        Returns:
            The new review id; or, when this reviewer's latest review of this analysis already says exactly
            this (a second click on Save, a client retrying a request whose answer it lost), that review's id,
            and nothing is written. A review that differs in any field is stored as a new one (it supersedes).

        Raises:
            FeedbackValidationError: unknown analysis, bad verdict or rating, empty reviewer, text too long.
        """
        name = v.clean_text(reviewer, "reviewer", v.MAX_REVIEWER, required=True)
        values = {
            "verdict": v.check_verdict(verdict),
            "corrected_answer": v.clean_text(corrected_answer, "corrected answer", v.MAX_CORRECTION),
            "mask_rating": v.check_mask_rating(mask_rating),
            "comment": v.clean_text(comment, "comment", v.MAX_COMMENT),
        }
        if isinstance(analysis_id, bool) or not isinstance(analysis_id, int):
            raise v.FeedbackValidationError("analysis id must be an integer: analyse a case before reviewing it")
        with self._writer.begin() as session:
            if session.get(Analysis, analysis_id) is None:
                raise v.FeedbackValidationError(f"unknown analysis id {analysis_id}: analyse the case again")
            person = self._get_or_create(
                session, select(Reviewer).where(Reviewer.name == name), lambda: Reviewer(name=name),
            )
            latest = session.scalars(
                select(Review).where(Review.analysis_id == analysis_id, Review.reviewer_id == person.id)
                .order_by(Review.id.desc()).limit(1)
            ).first()
            if latest is not None and all(getattr(latest, key) == value for key, value in values.items()):
                return latest.id  # the same review again: store it once
            review = Review(analysis_id=analysis_id, reviewer_id=person.id, **values)
            session.add(review)
            session.flush()
            self._audit(session, name, "record_review", "review", review.id,
                        {"analysis_id": analysis_id, "verdict": values["verdict"]})
            return review.id

    # -- reads ---------------------------------------------------------------------------------------------
    def query_reviews(
        self,
        *,
        question_type: str | Iterable[str] | None = None,
        verdict: str | Iterable[str] | None = None,
        reviewer: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        review_ids: Iterable[int] | None = None,
        limit: int | None = None,
    ) -> list[ReviewRow]:
        """Reviews with their analyses, newest first, filtered by every argument that is given.

        Args:
            question_type: one family or several.
            verdict: one verdict or several (e.g. ``("disagree", "partly")``).
            reviewer: exact reviewer name.
            since: reviews at or after this time (naive = UTC).
            until: reviews strictly before this time (naive = UTC).
            review_ids: only these reviews.
            limit: at most this many rows.

        Returns:
            A list of :class:`ReviewRow`.
        """
        query = _review_query()
        if question_type:
            query = query.where(Analysis.question_type.in_(_as_list(question_type)))
        if verdict:
            query = query.where(Review.verdict.in_([v.check_verdict(x) for x in _as_list(verdict)]))
        if reviewer:
            query = query.where(Reviewer.name == reviewer)
        if since is not None:
            query = query.where(Review.created_at >= since)
        if until is not None:
            query = query.where(Review.created_at < until)
        if review_ids is not None:
            query = query.where(Review.id.in_([int(i) for i in review_ids]))
        query = query.order_by(Review.created_at.desc(), Review.id.desc())
        if limit is not None:
            query = query.limit(int(limit))
        with self._reader() as session:
            return [_row(*columns) for columns in session.execute(query).all()]

    def count_reviews(self) -> int:
        """How many reviews are stored."""
        with self._reader() as session:
            return int(session.scalar(select(func.count(Review.id))) or 0)

    def reviewers(self) -> list[str]:
        """Names of everyone who has reviewed, sorted."""
        with self._reader() as session:
            return list(session.scalars(select(Reviewer.name).order_by(Reviewer.name)))

    def audit_log(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The audit log, oldest first, as dicts (``at`` as a UTC datetime)."""
        query = select(AuditEntry).order_by(AuditEntry.id)
        if limit is not None:
            query = query.limit(int(limit))
        with self._reader() as session:
            return [
                {"id": e.id, "at": e.at, "actor": e.actor, "action": e.action, "entity": e.entity,
                 "entity_id": e.entity_id, "detail": dict(e.detail)}
                for e in session.scalars(query)
            ]

    # -- export --------------------------------------------------------------------------------------------
    def export_cases(self, review_ids: Iterable[int], out_zip: str | Path, overlays: OverlaySource = None) -> Path:
        """Write the given reviews as a zip: overlay PNGs, cases.csv, cases.json and README.txt.

        Args:
            review_ids: reviews to export (unknown ids are ignored).
            out_zip: the zip file to write (replaced atomically).
            overlays: side-by-side overlay PNG bytes per *analysis id*: a mapping, or a callable that returns
                bytes or None (e.g. :meth:`feedback_db.OverlayCache.get`). The store never renders pixels.

        Returns:
            The path of the zip.
        """
        from feedback_db.export import write_export_zip

        rows = self.query_reviews(review_ids=list(review_ids))
        return write_export_zip(rows, Path(out_zip), overlays, exported_by=self.display_url)

    # -- helpers -------------------------------------------------------------------------------------------
    @staticmethod
    def _get_or_create(session: Session, query: Select[tuple[T]], make: Callable[[], T]) -> T:
        """Select one row or insert it; a concurrent insert of the same row (PostgreSQL) is tolerated."""
        found = session.scalars(query).first()
        if found is not None:
            return found
        try:
            with session.begin_nested():
                obj = make()
                session.add(obj)
            return obj
        except IntegrityError:
            return session.scalars(query).one()

    @staticmethod
    def _audit(session: Session, actor: str, action: str, entity: str, entity_id: int, detail: dict[str, Any]) -> None:
        session.add(AuditEntry(at=datetime.now(UTC), actor=actor or "app", action=action, entity=entity,
                               entity_id=entity_id, detail=detail))


def _as_list(value: str | Iterable[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _review_query() -> Select[Any]:
    return (
        select(Review, Analysis, Case, Reviewer.name)
        .join(Analysis, Review.analysis_id == Analysis.id)
        .join(Case, Analysis.case_id == Case.id)
        .join(Reviewer, Review.reviewer_id == Reviewer.id)
    )


def _row(review: Review, analysis: Analysis, case: Case, reviewer: str) -> ReviewRow:
    return ReviewRow(
        review_id=review.id, analysis_id=analysis.id, case_id=case.id, reviewer=reviewer,
        verdict=review.verdict, corrected_answer=review.corrected_answer, mask_rating=review.mask_rating,
        comment=review.comment, reviewed_at=review.created_at, question=analysis.question,
        question_type=analysis.question_type, answer=analysis.answer, lam=analysis.lam, theta=analysis.theta,
        theta_description=analysis.theta_description, mask_summary=dict(analysis.mask_summary or {}),
        model_name=analysis.model_name, checkpoint_name=analysis.checkpoint_name,
        checkpoint_sha256=analysis.checkpoint_sha256, main_sha256=case.main_sha256, ref_sha256=case.ref_sha256,
        analyzed_at=analysis.created_at,
    )
