"""A worklist: the cases of a benchmark folder reviewed one after another, each reviewer with their own progress.

``python app.py --worklist DIR [--split test] [--question-type difference] [--limit N]`` reads the rows of a
benchmark folder (the real Medical-Diff-VQA layout or the synthetic one of ``python -m train synth``) through
:class:`diffvqa_core.data.reader.DiffVQADataset`, so a worklist case is exactly a row the evaluation scores:
the same film per study, the same reference-first order, the same rows dropped for missing files.

Progress is not kept anywhere of its own. A case counts as reviewed by X when the feedback store holds a
review by X of an analysis of the same two films (their SHA-256s, which is how the store knows a case) and
the same question. So progress survives a restart, follows a reviewer from one browser to another, and
several reviewers work the same list without seeing each other's progress.

The ground truth of a case is never sent to the browser before its reviewer's verdict is saved: the screen
handlers reveal it only after a save whose stored review belongs to the case on screen.
"""

from __future__ import annotations

import html
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from diffvqa_core.imaging import sha256_of
from feedback_db import FeedbackStore
from review_app.errors import UserError, user_errors
from review_app.handlers import EXAMPLE, REVIEW, SCREEN, Handlers, display_of, inert

log = logging.getLogger("diffvqa.app")
ALL = "all"
"""``--split all`` / ``--question-type all``: no filter."""
TRUTH_HIDDEN = "hidden until your verdict is saved"
NEXT_JS = """
() => {
  // Worklist shortcuts: Alt+N next case, Alt+P previous case. Moving on with an unsaved review asks first.
  const go = (id) => { const b = document.querySelector(`#${id}`); if (b && !b.disabled) { b.click(); } };
  document.addEventListener("keydown", (event) => {
    if (!event.altKey || event.ctrlKey || event.metaKey) { return; }
    if (event.code === "KeyN") { go("worklist-next"); event.preventDefault(); }
    if (event.code === "KeyP") { go("worklist-previous"); event.preventDefault(); }
  });
  document.addEventListener("click", (event) => {
    const button = event.target instanceof Element && event.target.closest("#worklist-next, #worklist-previous");
    if (!button) { return; }
    const review = window.diffvqaReview;
    if (review && review.unsaved()) {
      if (!window.confirm("Your review of this case is not saved. Move on without saving it?")) {
        event.stopImmediatePropagation(); event.preventDefault(); return;
      }
      review.saved();
    }
  }, true);
  document.documentElement.dataset.worklistShortcuts = "ready";  // tests wait for this before pressing a key
}
"""
"""Keyboard shortcuts and the unsaved-review guard of the worklist buttons (run once when a page opens)."""


def question_key(question: str) -> str:
    """A question as the worklist compares it: whitespace collapsed, case folded."""
    return " ".join(str(question).split()).casefold()


@dataclass(frozen=True)
class WorklistCase:
    """One row of the benchmark to review.

    Attributes:
        position: 0-based place in the worklist.
        main: the main (current) film.
        ref: the reference (prior) film.
        question: the benchmark's question.
        question_type: its family.
        truth: the benchmark's answer (shown only after the reviewer's verdict is saved).
        row_id: the row's 0-based position in ``mimic_pair_questions.csv`` (the id evaluation scores by).
        subject_id, study_id, ref_id: the benchmark's ids of the patient and the two studies.
        main_sha256, ref_sha256: SHA-256 of the two files, as the feedback store identifies the case.
    """

    position: int
    main: Path
    ref: Path
    question: str
    question_type: str
    truth: str
    row_id: str
    subject_id: str
    study_id: str
    ref_id: str
    main_sha256: str
    ref_sha256: str

    @property
    def key(self) -> tuple[str, str, str]:
        """(main SHA-256, reference SHA-256, question): what makes a review count for this case."""
        return self.main_sha256, self.ref_sha256, question_key(self.question)

    @property
    def source(self) -> str:
        """The case's ids in words (plain text)."""
        return f"row {self.row_id}: patient {self.subject_id}, study {self.study_id} against prior {self.ref_id}"


class Worklist:
    """The cases of a benchmark folder in the CSV's order.

    Args:
        cases: the cases, positions 0..N-1.
        root: the benchmark folder.
        split: the split read ("all" for every split).
        question_type: the family read ("all" for every family).
    """

    def __init__(self, cases: Sequence[WorklistCase], root: str | Path, split: str = "test",
                 question_type: str = "difference") -> None:
        self.cases = list(cases)
        self.root = Path(root)
        self.split = split
        self.question_type = question_type
        self._positions: dict[tuple[str, str, str], list[int]] = {}
        for case in self.cases:  # a row repeated in the CSV is one case to review: it counts for every copy
            self._positions.setdefault(case.key, []).append(case.position)

    @classmethod
    def from_folder(cls, root: str | Path, split: str = "test", question_type: str = "difference",
                    limit: int | None = None) -> Worklist:
        """Read a benchmark folder's rows of one split and family (the first ``limit`` of them) and hash their films.

        Raises:
            ValueError: not a benchmark folder, or no row matches (the message names the splits and families there).
        """
        from diffvqa_core.data.reader import DiffVQADataset

        root = Path(root)
        if not (root / "mimic_pair_questions.csv").is_file() or not (root / "mimic_all.csv").is_file():
            raise ValueError(f"--worklist {root}: not a benchmark folder (mimic_pair_questions.csv and "
                             "mimic_all.csv expected there)")
        if limit is not None and limit < 1:
            raise ValueError(f"--limit must be at least 1, not {limit}")
        data = DiffVQADataset(root, split=None if split == ALL else split,
                              question_types=None if question_type == ALL else [question_type])
        rows = data.rows[:limit] if limit is not None else data.rows
        if not rows:
            raise ValueError(f"--worklist {root}: no {question_type} questions in split {split} "
                             f"({_what_is_there(root)})")
        start = time.perf_counter()
        digests: dict[Path, str] = {}

        def digest(path: Path) -> str:
            if path not in digests:
                digests[path] = sha256_of(path)
            return digests[path]

        cases = []
        for position, row in enumerate(_progress(rows, "hashing the worklist's films")):
            main, ref = data.image_path(row["study_id"]), data.image_path(row["ref_id"])
            cases.append(WorklistCase(position, main, ref, row["question"], row["question_type"],
                                      row["answer"].strip(), str(row["row_id"]), str(row["subject_id"]),
                                      str(row["study_id"]), str(row["ref_id"]), digest(main), digest(ref)))
        log.info("worklist: %d cases from %s (split %s, %s) in %.1f s", len(cases), root, split, question_type,
                 time.perf_counter() - start)
        return cls(cases, root, split, question_type)

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, position: int) -> WorklistCase:
        return self.cases[position]

    @property
    def folders(self) -> list[str]:
        """The folders the app must be allowed to serve the worklist's films from."""
        return [str(self.root.resolve())]

    def position_of(self, main_sha256: str, ref_sha256: str, question: str) -> int | None:
        """Where a case is in the list (its first row), or None."""
        positions = self._positions.get((main_sha256, ref_sha256, question_key(question)))
        return positions[0] if positions else None

    def reviewed_by(self, store: FeedbackStore, reviewer: str) -> set[int]:
        """Positions of the cases ``reviewer`` has reviewed (any verdict, any lambda, any time)."""
        if not reviewer:
            return set()
        rows = store.query_reviews(reviewer=reviewer)
        keys = {(r.main_sha256, r.ref_sha256, question_key(r.question)) for r in rows}
        return {position for key in keys for position in self._positions.get(key, ())}

    def next_unreviewed(self, store: FeedbackStore, reviewer: str, after: int = -1) -> int | None:
        """The first case after ``after`` that ``reviewer`` has not reviewed, wrapping round to the start
        (cases skipped earlier); None when every case is reviewed."""
        done = self.reviewed_by(store, reviewer)
        order = [*range(after + 1, len(self)), *range(0, min(after + 1, len(self)))]
        return next((position for position in order if position not in done), None)


def _what_is_there(root: Path) -> str:
    import pandas as pd

    questions = pd.read_csv(root / "mimic_pair_questions.csv", dtype=str, keep_default_na=False,
                            usecols=["split", "question_type"])
    splits = ", ".join(sorted(questions["split"].unique()))
    families = ", ".join(sorted(questions["question_type"].unique()))
    return f"splits there: {splits or 'none'}; question types: {families or 'none'}"


def _progress(items: Sequence[Any], what: str) -> Any:
    """A progress bar when the list is long enough to wait for."""
    if len(items) < 200:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=what, unit="case")


# -- handlers -------------------------------------------------------------------------------------------------
WORKLIST_SCREEN = ("position", "progress", "truth")
"""What worklist handlers return first, before :data:`EXAMPLE` + :data:`SCREEN` + :data:`REVIEW`."""


class WorklistHandlers:
    """The worklist's event handlers, beside the review screen's :class:`~review_app.handlers.Handlers`."""

    def __init__(self, handlers: Handlers, worklist: Worklist) -> None:
        self.h = handlers
        self.worklist = worklist

    @property
    def store(self) -> FeedbackStore:
        return self.h.service.store

    # -- progress --------------------------------------------------------------------------------------------
    def progress_text(self, position: int | None, reviewer: str) -> str:
        """'Case k of N' and the reviewer's own count, as Markdown."""
        total = len(self.worklist)
        where = f"split *{inert(self.worklist.split)}*, *{inert(self.worklist.question_type)}* questions"
        if position is None or position < 0:
            head = f"**Worklist** of {total} cases ({where})"
        else:
            head = f"**Case {position + 1} of {total}** ({where})"
        if not reviewer:
            return head + "  \nType your name under *Reviewer*, then press **Next** (Alt+N)."
        done = self.worklist.reviewed_by(self.store, reviewer)
        line = f"{head}  \n{inert(reviewer)}: **{len(done)} of {total}** reviewed"
        if position is not None and position >= 0 and position in done:
            line += " · you have reviewed this case"
        return line

    # -- screen ----------------------------------------------------------------------------------------------
    def next_on_screen(self, position: int | None, reviewer: str, lam: float | None, mask: str = "M",
                       opacity: float = 0.5, center: float = 0.5, width: float = 1.0,
                       request: gr.Request | None = None) -> tuple[Any, ...]:
        """The next case this reviewer has not reviewed, loaded and analysed.

        Returns :data:`WORKLIST_SCREEN` + :data:`EXAMPLE` + :data:`SCREEN` + :data:`REVIEW`; with every case
        reviewed, or without a reviewer's name, only the progress line changes (and says so).
        """
        name = _reviewer(reviewer, request)
        current = -1 if position is None else int(position)
        if not name:
            return self._unchanged(self.progress_text(current, ""))
        target = self.worklist.next_unreviewed(self.store, name, current)
        if target is None:
            return self._unchanged(self.progress_text(current, name) + f"  \n✔ All {len(self.worklist)} cases "
                                   "of this worklist are reviewed by you. Thank you.")
        return self._load(target, name, lam, mask, opacity, center, width)

    def previous_on_screen(self, position: int | None, reviewer: str, lam: float | None, mask: str = "M",
                           opacity: float = 0.5, center: float = 0.5, width: float = 1.0,
                           request: gr.Request | None = None) -> tuple[Any, ...]:
        """The case before the one on screen (reviewed or not), loaded and analysed; same outputs as Next."""
        name = _reviewer(reviewer, request)
        current = -1 if position is None else int(position)
        if current <= 0:
            return self._unchanged(self.progress_text(current, name) + "  \nThis is the first case of the list.")
        return self._load(current - 1, name, lam, mask, opacity, center, width)

    def resume_on_load(self, remembered: str | None, lam: float | None, mask: str = "M", opacity: float = 0.5,
                       center: float = 0.5, width: float = 1.0, request: gr.Request | None = None) -> tuple[Any, ...]:
        """A page opens: the reviewer (the login, else the name this browser remembered) and, when known, the
        first case they have not reviewed (where they left off). Returns ``reviewer`` then Next's outputs."""
        login = getattr(request, "username", None) if request is not None else None
        name = login or remembered or ""
        return (self.h.reviewer_on_load(remembered, request),
                *self.next_on_screen(-1, name, lam, mask, opacity, center, width, request))

    def _load(self, position: int, reviewer: str, lam: float | None, mask: str, opacity: float, center: float,
              width: float) -> tuple[Any, ...]:
        case = self.worklist[position]
        main, ref = str(case.main), str(case.ref)
        screen_and_review = self.h.analyze_on_screen(main, ref, case.question, lam, mask, opacity, center, width)
        truth = self._truth_update(case, reviewer)
        attribution = f"Worklist case {position + 1}: {inert(case.source)}"
        return (position, self.progress_text(position, reviewer), truth, main, ref, case.question, None, attribution,
                *screen_and_review)

    def _truth_update(self, case: WorklistCase, reviewer: str) -> Any:
        """The ground truth when this reviewer has already reviewed the case, else the 'hidden' placeholder."""
        if reviewer and case.position in self.worklist.reviewed_by(self.store, reviewer):
            return gr.update(value=case.truth or "(no answer in the benchmark)")
        return gr.update(value="", placeholder=TRUTH_HIDDEN)

    @staticmethod
    def _unchanged(progress: str) -> tuple[Any, ...]:
        return (gr.update(), progress, gr.update(), *(gr.update() for _ in (*EXAMPLE, *SCREEN, *REVIEW)))

    def reveal_truth(self, position: int | None, review_id: float | None, reviewer: str,
                     request: gr.Request | None = None) -> tuple[Any, Any]:
        """After a save: the case's ground truth, if the saved review is of the worklist case on screen.

        Returns ``truth``, ``progress``. A review of anything else (films or question changed by hand) reveals
        nothing.
        """
        if position is None or review_id is None or int(position) < 0:
            return gr.update(), gr.update()
        case = self.worklist[int(position)]
        rows = self.store.query_reviews(review_ids=[int(review_id)])
        if not rows or (rows[0].main_sha256, rows[0].ref_sha256, question_key(rows[0].question)) != case.key:
            return gr.update(), gr.update()
        name = _reviewer(reviewer, request) or rows[0].reviewer
        return gr.update(value=case.truth or "(no answer in the benchmark)"), self.progress_text(case.position, name)

    @staticmethod
    def truth_cleared() -> Any:
        """The inputs changed by hand: the truth box empties (it belonged to the worklist case)."""
        return gr.update(value="", placeholder=TRUTH_HIDDEN)

    # -- API ---------------------------------------------------------------------------------------------------
    @user_errors
    def next_case(self, reviewer: str, after: float | None = None, lam: float | None = None,
                  request: gr.Request | None = None) -> tuple[Any, ...]:
        """Scripting API ``/next_case``: the first case after position ``after`` (1-based; 0 or empty: from the
        start) that ``reviewer`` has not reviewed, analysed.

        Returns:
            case number (1-based; None when every case is reviewed), progress line, question, answer, theta in
            words, analysis id (for ``/record_review``), status line. The ground truth is not returned.

        Raises:
            gr.Error: no reviewer name; the case cannot be analysed.
        """
        name = _reviewer(reviewer, request)
        if not name:
            raise UserError("Give the reviewer's name: progress through the worklist is kept per reviewer.")
        start = int(after or 0) - 1
        target = self.worklist.next_unreviewed(self.store, name, start)
        if target is None:
            return (None, _plain(self.progress_text(start, name)) + f" All {len(self.worklist)} cases are reviewed.",
                    "", "", "", None, "")
        case = self.worklist[target]
        begin = time.perf_counter()
        result = self.h.service.analyze(case.main, case.ref, case.question, lam, display_of("M", 0.5, 0.5, 1.0))
        status = Handlers._status_of(result, time.perf_counter() - begin, "Analysed")
        return (target + 1, _plain(self.progress_text(target, name)), case.question, result.answer,
                result.theta_words, result.analysis_id, status)


def _reviewer(reviewer: str | None, request: gr.Request | None) -> str:
    """The login name when the app runs with auth, else the typed name (trimmed)."""
    login = getattr(request, "username", None) if request is not None else None
    return " ".join(str(login or reviewer or "").split())[:100]


def _plain(markdown: str) -> str:
    """A progress line without Markdown, for scripts."""
    return html.unescape(markdown.replace("**", "").replace("*", "").replace("\\", "").replace("  \n", " · "))
