"""ReviewService: what the UI's handlers call. Pipeline in, store out, no Gradio here.

Every analysis shown to a reviewer is recorded (``FeedbackStore.record_analysis``) and kept in memory (a
small LRU) with the full-resolution films, so that window/level, opacity, mask choice and lambda re-render
at once and a re-answer at another lambda reuses the cached features (``pipeline.reanalyze``). A saved
review also stores the overlay picture the reviewer saw in the :class:`~feedback_db.OverlayCache`, which
exports read (the database itself never holds pixels).
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from diffvqa_core.imaging import ImageReadError, lateral_view, not_a_radiograph, read_image, sha256_of
from diffvqa_core.theta_description import describe_theta
from feedback_db import FeedbackStore, OverlayCache, ReviewRow
from review_app import rendering
from review_app.errors import UserError
from review_app.questions import question_type
from review_app.rendering import Display, Views

log = logging.getLogger("diffvqa.app")
CACHED_ANALYSES = 32
MAX_EXPORT_ROWS = 5_000


@dataclass
class _Entry:
    """An analysis held in memory with the films it was made from."""

    analysis: Any
    main: np.ndarray
    ref: np.ndarray
    question_type: str
    main_sha256: str
    ref_sha256: str
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class AnalysisResult:
    """What the UI shows after an analysis or a re-answer."""

    analysis_id: int
    answer: str
    theta_words: str
    lam: float
    question_type: str
    views: Views | None
    """None when the caller asked for no drawing (``analyze(render=False)``)."""
    flags: tuple[str, ...] = ()
    """What the reviewer must know about the inputs (e.g. a lateral view), one sentence each."""
    answered_by: str = "decoder"
    """"decoder", or "change heads" when the model's change encoder read the answer (``difference_readout``)."""


class ReviewService:
    """The app's logic over a pipeline and a feedback store.

    Args:
        pipeline: a ``diffvqa_core.DiffVQAPipeline`` (anything with its ``analyze/reanalyze/fuse`` contract).
        store: where analyses and reviews go.
        overlays: where review pictures go; default: the per-user cache of ``store``'s database.
        cached_analyses: how many analyses stay in memory for re-rendering and re-answering.
    """

    def __init__(self, pipeline: Any, store: FeedbackStore, overlays: OverlayCache | None = None,
                 cached_analyses: int = CACHED_ANALYSES) -> None:
        self.pipeline = pipeline
        self.store = store
        self.overlays = overlays or OverlayCache.for_database(store.url)
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._capacity = cached_analyses
        self._pinned: set[int] = set()
        self._cache_lock = threading.Lock()
        self._model_lock = threading.Lock()  # one inference at a time: the CPU is shared anyway

    # -- facts for the banner ----------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        """A short name of the architecture (encoder and input size)."""
        config = self.pipeline.config
        name = getattr(config, "name", None) or getattr(config, "preset", None)
        return str(name) if name else f"DiffVQA ({config.image_encoder}, {config.image_size} px)"

    @property
    def is_random(self) -> bool:
        """Whether the pipeline runs untrained weights."""
        return str(self.pipeline.checkpoint_sha256) == "random-init"

    # -- analysis ----------------------------------------------------------------------------------------
    def analyze(self, main: str | Path, ref: str | Path, question: str, lam: float | None = None,
                display: Display | None = None, *, pin: bool = False, memo: Any = None,
                render: bool = True) -> AnalysisResult:
        """Read both films, run the pipeline, record the analysis and render it.

        A DICOM that is not a radiograph (CT, MR, ...) is refused; a lateral view is analysed and flagged.

        Args:
            pin: keep this analysis in memory for good (the app's preloaded example).
            memo: a ``review_app.preload_memo.PreloadMemo`` to read the analysis from (the pipeline, a
                ``ModelProcess``, is then not asked) or to keep it in.
            render: draw the views (False: ``views`` is None; the caller has the pictures already).

        Raises:
            UserError: an image is missing or is not a radiograph.
            ValueError: unreadable image (``ImageReadError``), bad question (``QuestionError``), bad lambda.
        """
        if not main or not ref:
            raise UserError("Choose both images first: the main (current) and the reference (prior) visit.")
        main_full, ref_full = _read(main, MAIN), _read(ref, REFERENCE)
        flags = tuple(f"{what}: {reason}." for what, path in ((MAIN, main), (REFERENCE, ref))
                      if (reason := lateral_view(path)))
        key = memo.key(main_full, ref_full, question, lam) if memo is not None else None
        stored = memo.get(key) if memo is not None else None
        if stored is not None:
            analysis = self.pipeline.remembered(stored, (main_full, ref_full))
        else:
            with self._model_lock:
                analysis = self.pipeline.analyze(main_full, ref_full, question, lam=lam)
            if memo is not None:
                memo.put(key, analysis)
        entry = _Entry(analysis, main_full, ref_full, question_type(analysis.question), sha256_of(main),
                       sha256_of(ref), flags)
        analysis_id = self._record(entry)
        self._remember(analysis_id, entry, pin=pin)
        return self._result(analysis_id, display or Display(), render)

    @staticmethod
    def film_note(path: str | Path | None, what: str) -> str | None:
        """From a DICOM header alone: why Analyse will refuse this film (not a radiograph), or the flag its
        answer will carry (a lateral view); None for anything else. For the status line, before Analyse."""
        if not path:
            return None
        if reason := not_a_radiograph(path):
            return f"{what}: {reason}. Choose a chest radiograph."
        if reason := lateral_view(path):
            return f"{what}: {reason}; its answer will be flagged."
        return None

    def memoized(self, main: str | Path, ref: str | Path, question: str, lam: float | None, memo: Any) -> bool:
        """Whether ``memo`` holds the analysis ``analyze`` would make of these films (False for any doubt)."""
        try:
            return memo.get(memo.key(_read(main, MAIN), _read(ref, REFERENCE), question, lam)) is not None
        except ValueError:
            return False

    def reanswer(self, analysis_id: int, lam: float, display: Display | None = None) -> AnalysisResult:
        """Answer again at another lambda from the cached features; the new answer is a new analysis."""
        entry = self._entry(analysis_id)
        with self._model_lock:
            analysis = self.pipeline.reanalyze(entry.analysis, lam=float(lam))
        new_entry = _Entry(analysis, entry.main, entry.ref, entry.question_type, entry.main_sha256, entry.ref_sha256,
                           entry.flags)
        new_id = self._record(new_entry)
        self._remember(new_id, new_entry)
        return self._result(new_id, display or Display())

    def lam_of(self, analysis_id: int | float) -> float | None:
        """Lambda of an analysis still in memory (None when it is not)."""
        with self._cache_lock:
            entry = self._entries.get(int(analysis_id))
        return None if entry is None else float(entry.analysis.lam)

    def render(self, analysis_id: int, lam: float | None = None, display: Display | None = None) -> Views:
        """Re-render an analysis (new display settings, or M re-fused at ``lam``: no network pass)."""
        entry = self._entry(analysis_id)
        lam = entry.analysis.lam if lam is None else float(lam)
        fused = entry.analysis.fused_mask if abs(lam - entry.analysis.lam) < 1e-9 else self.pipeline.fuse(entry.analysis, lam)
        masks = rendering.masks_of(entry.analysis, fused)
        return rendering.render_views(entry.main, entry.ref, entry.analysis.theta, masks, display or Display(), lam)

    def preview(self, path: str | Path | None, display: Display | None = None) -> np.ndarray | None:
        """A windowed view of one chosen film before any analysis (None when no file)."""
        if not path:
            return None
        return rendering.preview(_read(path, "This file", check_modality=False), display or Display())

    # -- reviews -----------------------------------------------------------------------------------------
    def record_review(self, analysis_id: int | None, *, reviewer: str, verdict: str, corrected_answer: str = "",
                      mask_rating: int | None = None, comment: str = "", display: Display | None = None,
                      lam: float | None = None) -> int:
        """Store a review, then the overlay picture as the reviewer saw it (when still in memory).

        The picture is rendered before the review is stored, so that a bad display value (e.g. lambda outside
        [0, 1]) stores nothing; once the review is stored, the call succeeds even if the picture cannot be
        written (a confirmed review is never reported as failed).

        Raises:
            UserError: nothing analysed yet.
            FeedbackValidationError: any bad value (nothing is stored).
        """
        if analysis_id is None or (isinstance(analysis_id, float) and np.isnan(analysis_id)):
            raise UserError("Analyse a case before saving a review.")
        picture = self._review_picture(int(analysis_id), display or Display(), lam)
        review_id = self.store.record_review(analysis_id=int(analysis_id), reviewer=reviewer, verdict=verdict,
                                             corrected_answer=corrected_answer, mask_rating=mask_rating,
                                             comment=comment)
        if picture is not None:
            try:
                self.overlays.put(int(analysis_id), picture)
            except OSError:
                log.warning("review #%d is stored; its overlay picture could not be written", review_id, exc_info=True)
        return review_id

    def _review_picture(self, analysis_id: int, display: Display, lam: float | None) -> bytes | None:
        """The side-by-side overlay PNG of an analysis still in memory (None when it is not)."""
        with self._cache_lock:
            entry = self._entries.get(analysis_id)
        if entry is None:
            return None
        picture_lam = entry.analysis.lam if lam is None else lam
        return rendering.review_png(self.render(analysis_id, picture_lam, display), display.mask, picture_lam)

    def find_reviews(self, *, question_type: str | None = None, verdicts: Iterable[str] = ("disagree", "partly"),
                     reviewer: str | None = None, since: str | None = None, until: str | None = None) -> list[ReviewRow]:
        """Reviews for the disagreements table; dates as ``YYYY-MM-DD`` (UTC), ``until`` inclusive."""
        return self.store.query_reviews(
            question_type=question_type or None, verdict=list(verdicts) or None, reviewer=reviewer or None,
            since=parse_day(since, "from"), until=_day_after(parse_day(until, "to")), limit=MAX_EXPORT_ROWS,
        )

    def export(self, review_ids: Iterable[int], out_dir: str | Path | None = None) -> Path:
        """Write the export zip of the given reviews into ``out_dir`` (a new temp folder by default)."""
        ids = list(review_ids)
        if not ids:
            raise UserError("Nothing to export: no reviews match the filters.")
        folder = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="diffvqa-export-"))
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        return self.store.export_cases(ids, folder / f"diffvqa-reviews-{stamp}.zip", overlays=self.overlays.get)

    # -- internals ---------------------------------------------------------------------------------------
    def _record(self, entry: _Entry) -> int:
        analysis = entry.analysis
        masks = rendering.masks_of(analysis)
        return self.store.record_analysis(
            main_sha256=entry.main_sha256, ref_sha256=entry.ref_sha256, question=analysis.question,
            question_type=entry.question_type,
            answer=analysis.answer, lam=analysis.lam, theta=np.asarray(analysis.theta),
            theta_description=self.theta_words(analysis.theta), mask_summary=rendering.mask_summary(masks),
            checkpoint_name=self.pipeline.checkpoint_name, checkpoint_sha256=self.pipeline.checkpoint_sha256,
            model_name=self.model_name,
        )

    def theta_words(self, theta: Any) -> str:
        """Theta in words (rotation, scale, shift in pixels of the model input)."""
        return describe_theta(np.asarray(theta, dtype=np.float64), self.pipeline.config.image_size)

    def _result(self, analysis_id: int, display: Display, render: bool = True) -> AnalysisResult:
        entry = self._entry(analysis_id)
        return AnalysisResult(analysis_id=analysis_id, answer=entry.analysis.answer,
                              theta_words=self.theta_words(entry.analysis.theta), lam=float(entry.analysis.lam),
                              question_type=entry.question_type,
                              views=self.render(analysis_id, None, display) if render else None,
                              flags=entry.flags, answered_by=getattr(entry.analysis, "answered_by", "decoder"))

    def _remember(self, analysis_id: int, entry: _Entry, pin: bool = False) -> None:
        with self._cache_lock:
            self._entries[analysis_id] = entry
            self._entries.move_to_end(analysis_id)
            if pin:
                self._pinned.add(analysis_id)
            evictable = [key for key in self._entries if key not in self._pinned]
            while len(self._entries) > self._capacity and evictable:
                del self._entries[evictable.pop(0)]

    def _entry(self, analysis_id: int | float | None) -> _Entry:
        if analysis_id is None or (isinstance(analysis_id, float) and np.isnan(analysis_id)):
            raise UserError("Analyse a case first.")
        with self._cache_lock:
            entry = self._entries.get(int(analysis_id))
            if entry is not None:
                self._entries.move_to_end(int(analysis_id))
        if entry is None:
            raise UserError(f"Analysis #{int(analysis_id)} is no longer in memory: press Analyse again.")
        return entry


MAIN = "Main image (current visit)"
REFERENCE = "Reference image (prior visit)"


def _read(path: str | Path, what: str, check_modality: bool = True) -> np.ndarray:
    """Read a film; an unreadable one, or a DICOM that is no radiograph, raises ``ImageReadError`` naming it."""
    try:
        gray = read_image(path)
    except ImageReadError as exc:
        message = str(exc)
        if not message[1:2].isupper():  # keep "DICOM ..." as it is
            message = message[:1].lower() + message[1:]
        raise ImageReadError(f"{what}: {message}") from None
    reason = not_a_radiograph(path) if check_modality else None
    if reason:
        raise ImageReadError(f"{what}: {reason}. Choose a chest radiograph.")
    return gray


def parse_day(text: str | None, which: str) -> datetime | None:
    """``YYYY-MM-DD`` -> midnight UTC of that day; empty -> None.

    Raises:
        UserError: not a date.
    """
    if not text or not str(text).strip():
        return None
    try:
        return datetime.combine(date.fromisoformat(str(text).strip()), time(0), tzinfo=UTC)
    except ValueError:
        raise UserError(f"The '{which}' date must look like 2026-11-30.") from None


def _day_after(day: datetime | None) -> datetime | None:
    return None if day is None else day + timedelta(days=1)
