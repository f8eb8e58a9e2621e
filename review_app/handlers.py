"""Gradio event handlers: convert component values to service calls and results back to component values.

Two kinds of handler:

* the **API** handlers (``analyze``, ``reanswer``, ``record_review``, ``list_reviews``, ``export``) are thin
  adapters over :class:`~review_app.service.ReviewService` wrapped in :func:`~review_app.errors.user_errors`:
  a script gets a clear ``gr.Error``, never a traceback;
* the **screen** handlers (``*_on_screen``, ``pick_example``, ``inputs_changed``, ``question_changed``) drive
  the browser UI. They keep one promise: *what is saved is what is shown*. Every change of the inputs
  empties the answer, the masks and the review form and disables Save; only a successful analysis of the
  visible pair enables it, and Save records the analysis whose id is on screen. They never raise: a problem
  is a sentence in the status line beside the inputs (or beside Save), and the other panels stay as they
  were or are cleanly emptied, so no panel shows an error badge for a problem that is not its own.

Screen handlers return tuples in the order of :data:`SCREEN` (+ :data:`REVIEW`); ``app.py`` builds its output
lists from the same names. User text that goes back into Markdown/HTML is escaped (:func:`inert`); answers
and comments go into textboxes and table cells, which display text, never markup.
"""

from __future__ import annotations

import html
import io
import logging
import re
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from diffvqa_core.data.grammar import difference_answer_problems
from review_app.errors import user_errors
from review_app.examples import ExamplePair
from review_app.rendering import Display
from review_app.service import MAIN, REFERENCE, AnalysisResult, ReviewService

log = logging.getLogger("diffvqa.app")
PRELOAD_WAIT_S = 300.0
"""How long a page that opens while the example is still being analysed waits for it (the model may be loading)."""

MASK_CHOICES = [("M fused", "M"), ("U DINO prior", "U"), ("F adaptive", "F"), ("none", "none")]
VERDICT_CHOICES = [("Agree", "agree"), ("Partly", "partly"), ("Disagree", "disagree")]
RATING_CHOICES = [("1 useless", 1), ("2", 2), ("3", 3), ("4", 4), ("5 exact", 5)]
TABLE_COLUMNS = ["review", "case", "reviewed (UTC)", "reviewer", "question", "answer", "correction", "verdict",
                 "mask rating", "λ", "comment", "films (SHA-256: main / prior)"]
TABLE_WIDTHS = ["72px", "64px", "112px", "110px", "15%", "14%", "14%", "84px", "72px", "56px", "15%", "130px"]
SELECTED_STYLE = "background-color: #075985; color: #ffffff; font-weight: 600;"

SCREEN = ("answer", "theta", "analysis_id", "ref_view", "main_view", "registered", "mask_u", "mask_f", "mask_m",
          "subtraction", "status")
"""The analysis on screen, in the order screen handlers return it."""
REVIEW = ("verdict", "rating", "corrected", "comment", "review_target", "review_status", "save")
"""The review form, in the order screen handlers return it after :data:`SCREEN`."""
IMAGES = ("ref_view", "main_view", "registered", "mask_u", "mask_f", "mask_m", "subtraction")
"""The pictures a display change redraws (then the status line)."""
EXAMPLE = ("main_file", "ref_file", "question", "example", "attribution")
"""What picking an example (or preloading one) sets, before :data:`SCREEN` and :data:`REVIEW`."""

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~<>])")
_NOTHING_TO_REVIEW = "Nothing to review yet: analyse the pair on screen first."


def inert(text: object) -> str:
    """Text safe to embed in Markdown or HTML: HTML-escaped, Markdown punctuation backslash-escaped."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(str(text), quote=False))


def display_of(mask: str, opacity: float, center: float, width: float) -> Display:
    """The display settings from the four controls (with safe fallbacks for API callers)."""
    return Display(mask=mask if mask in ("M", "U", "F", "none") else "M", opacity=float(opacity or 0.0),
                   center=float(0.5 if center is None else center), width=max(float(width or 1.0), 0.01))


def _image_outputs(result_views: Any) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray], np.ndarray]:
    return (result_views.reference, result_views.main, (result_views.registered, result_views.reference_plain),
            result_views.mask_strip)


def _screen_images(views: Any) -> tuple[Any, ...]:
    """ref_view, main_view, registered slider, mask_u, mask_f, mask_m, subtraction from rendered views."""
    tiles = views.mask_tiles
    return (views.reference, views.main, (views.registered, views.reference_plain), tiles.get("U"), tiles.get("F"),
            tiles.get("M"), views.subtraction)


def _message(exc: BaseException) -> str:
    """The person-readable text of a ``gr.Error`` or ``ValueError``."""
    return str(getattr(exc, "message", None) or exc).strip() or type(exc).__name__


def _warning(text: str) -> str:
    return f"⚠ {inert(text)}"


class Handlers:
    """The app's event handlers, bound to one service and one list of examples."""

    def __init__(self, service: ReviewService, examples: Sequence[ExamplePair], preload_memo: Any = None) -> None:
        self.service = service
        self.preload_memo = preload_memo
        """A ``review_app.preload_memo.PreloadMemo`` for the example pages open on (None: always analysed)."""
        self.examples = {pair.name: pair for pair in examples}
        self._preloaded: tuple[Any, ...] | None = None
        self._preloading: threading.Thread | None = None

    # -- banner ------------------------------------------------------------------------------------------
    @property
    def checkpoint_known(self) -> bool:
        """Whether the banner's facts are known now (a ``ModelProcess`` reads them from the checkpoint's files;
        when it cannot, they come with the loaded model)."""
        return bool(getattr(self.service.pipeline, "knows_checkpoint", True))

    @staticmethod
    def loading_banner_html() -> str:
        """The banner while the model loads (replaced by :meth:`banner_html` once it is in)."""
        return '<div class="demo">Loading the model ...</div>'

    def banner_html(self) -> str:
        """The checkpoint banner (HTML, all dynamic text escaped)."""
        pipe = self.service.pipeline
        digest = str(pipe.checkpoint_sha256)
        name = f"<b>{html.escape(str(pipe.checkpoint_name))}</b>"
        if not self.service.is_random:
            name += f" <code>sha256 {html.escape(digest[:12])}</code>"
        name += f" · {html.escape(self.service.model_name)}"
        if self.service.is_random:
            return (f'<div class="random">Checkpoint {name}: <b>random weights, answers are meaningless.</b> '
                    "No trained checkpoint was found; train one or pass <code>--checkpoint DIR</code>.</div>")
        if getattr(pipe, "is_demo", False):
            return (f'<div class="demo">Checkpoint {name}: the bundled <b>demo model, trained on synthetic data, '
                    "not for clinical use</b>.</div>")
        return f'<div class="trained">Checkpoint {name}. Research use only; not a diagnosis.</div>'

    # -- building blocks of the screen -------------------------------------------------------------------
    def _previews(self, main: str | None, ref: str | None, display: Display) -> tuple[Any, Any, list[str]]:
        """Plain windowed views of the chosen films and what is wrong with them (one sentence each)."""
        views, problems = [], []
        for path, what in ((ref, REFERENCE), (main, MAIN)):
            try:
                views.append(self.service.preview(path, display))
            except ValueError as exc:
                views.append(None)
                problems.append(f"{what}: {_message(exc).removeprefix('This file: ')}")
                continue
            note = self.service.film_note(path, what)
            if note:
                problems.append(note)
        return views[0], views[1], problems

    def _cleared(self, main: str | None, ref: str | None, display: Display, status: str = "") -> tuple[Any, ...]:
        """:data:`SCREEN` with no analysis: the chosen films as plain previews, everything else empty."""
        ref_view, main_view, problems = self._previews(main, ref, display)
        if not status:
            if problems:
                status = " ".join(_warning(p) for p in problems)
            elif main and ref:
                status = "Press **Analyse** (Alt+A) for an answer about this pair."
            else:
                status = "Choose both films: the **main** (current) and the **reference** (prior) visit."
        return ("", "", None, ref_view, main_view, None, None, None, None, None, status)

    @staticmethod
    def _blank_review(target: str = _NOTHING_TO_REVIEW, enabled: bool = False, review_status: str = "") -> tuple:
        """:data:`REVIEW` emptied: no verdict, rating, correction or comment; Save enabled only for an analysis."""
        return (None, None, "", "", target, review_status, gr.update(interactive=enabled))

    def _screen_of(self, result: AnalysisResult, seconds: float, verb: str,
                   pictures: Sequence[Any] | None = None) -> tuple[Any, ...]:
        """:data:`SCREEN` showing an analysis (``pictures``: its :data:`IMAGES` already drawn)."""
        answer = result.answer.strip() or "(the model returned an empty answer)"
        images = tuple(pictures) if pictures is not None else _screen_images(result.views)
        return (answer, result.theta_words, result.analysis_id, *images, self._status_of(result, seconds, verb))

    @staticmethod
    def _status_of(result: AnalysisResult, seconds: float, verb: str) -> str:
        status = (f"{verb} as analysis \\#{result.analysis_id} · question type *{inert(result.question_type)}* · "
                  f"lambda {result.lam:.2f} · {seconds:.2f} s")
        if result.answered_by == "change heads":
            status += " · answer read from the change encoder's findings, not written by the decoder"
        if result.question_type == "difference":
            problems = difference_answer_problems(result.answer)
            if problems:
                status += " · **not a well-formed answer:** " + inert("; ".join(problems))
        for flag in result.flags:
            status += "  \n" + _warning(f"Flagged: {flag} Read the answer with care.")
        return status

    @staticmethod
    def _target(result: AnalysisResult, main: str | None = None, ref: str | None = None) -> str:
        films = f" of *{inert(Path(main).name)}* against *{inert(Path(ref).name)}*" if main and ref else ""
        return (f"Your review will be saved for **analysis \\#{result.analysis_id}**{films} "
                f"(λ {result.lam:.2f}).")

    def _attribution(self, name: str | None, question: str | None) -> str:
        """Source line of a picked example, and its ground truth while the question is the example's own."""
        pair = self.examples.get(name or "")
        if pair is None:
            return ""
        text = f"Source: {inert(pair.attribution)}"
        if pair.truth and " ".join((question or "").split()) == " ".join(pair.question.split()):
            text += f"  \nGround truth: *{inert(pair.truth)}*"
        return text

    # -- inputs (screen) ---------------------------------------------------------------------------------
    def pick_example(self, name: str | None, question: str, mask: str, opacity: float, center: float,
                     width: float) -> tuple[Any, ...]:
        """A picked example: its films and question in the inputs, its source line, an empty screen and form.

        Returns :data:`EXAMPLE` + :data:`SCREEN` + :data:`REVIEW`; nothing changes when no example is picked.
        """
        pair = self.examples.get(name or "")
        if pair is None:
            return tuple(gr.update() for _ in (*EXAMPLE, *SCREEN, *REVIEW))
        question = pair.question or question
        display = display_of(mask, opacity, center, width)
        return (str(pair.main), str(pair.ref), question, pair.name, self._attribution(pair.name, question),
                *self._cleared(str(pair.main), str(pair.ref), display), *self._blank_review())

    def inputs_changed(self, main: str | None, ref: str | None, mask: str, opacity: float, center: float,
                       width: float) -> tuple[Any, ...]:
        """A film uploaded or removed by hand: no example any more, an empty screen and form.

        Returns ``example``, ``attribution``, then :data:`SCREEN` + :data:`REVIEW`.
        """
        display = display_of(mask, opacity, center, width)
        return (None, "", *self._cleared(main, ref, display), *self._blank_review())

    def question_changed(self, example: str | None, question: str | None, main: str | None, ref: str | None,
                         mask: str, opacity: float, center: float, width: float) -> tuple[Any, ...]:
        """Another question: the answer on screen no longer applies. Returns ``attribution`` + SCREEN + REVIEW."""
        display = display_of(mask, opacity, center, width)
        return (self._attribution(example, question), *self._cleared(main, ref, display), *self._blank_review())

    # -- analysis (screen) -------------------------------------------------------------------------------
    def analyze_on_screen(self, main: str | None, ref: str | None, question: str, lam: float | None,
                          mask: str = "M", opacity: float = 0.5, center: float = 0.5,
                          width: float = 1.0) -> tuple[Any, ...]:
        """Analyse the visible pair. Success: the analysis on screen, an empty form bound to it, Save enabled.
        Failure: the reason in the status line, the screen emptied, Save disabled. SCREEN + REVIEW."""
        display = display_of(mask, opacity, center, width)
        start = time.perf_counter()
        try:
            result = self._analyze(main, ref, question, lam, display)
        except (gr.Error, ValueError) as exc:
            return (*self._cleared(main, ref, display, _warning(_message(exc))), *self._blank_review())
        return (*self._screen_of(result, time.perf_counter() - start, "Analysed"),
                *self._blank_review(self._target(result, main, ref), enabled=True))

    @user_errors
    def _analyze(self, main: str | None, ref: str | None, question: str, lam: float | None,
                 display: Display, pin: bool = False, render: bool = True) -> AnalysisResult:
        return self.service.analyze(main, ref, question or "", lam, display, pin=pin,
                                    memo=self.preload_memo if pin else None, render=render)

    def reanswer_on_screen(self, analysis_id: float | None, lam: float, verdict: str | None, rating: int | None,
                           review_status: str, mask: str = "M", opacity: float = 0.5, center: float = 0.5,
                           width: float = 1.0) -> tuple[Any, ...]:
        """A new lambda: a new answer (a new analysis) from cached features. SCREEN + REVIEW.

        The reviewer's unsaved correction and comment are kept; a verdict or mask rating given to the old
        answer is cleared (it judged another answer and another M), and the form says so. A "saved"
        confirmation stays visible. On failure only the status line changes.
        """
        keep = tuple(gr.update() for _ in (*SCREEN, *REVIEW))
        if analysis_id is None or lam is None:
            return keep
        current = self.service.lam_of(analysis_id)
        if current is not None and abs(current - float(lam)) < 1e-9:
            return keep  # released where it was: the same answer
        display = display_of(mask, opacity, center, width)
        start = time.perf_counter()
        try:
            result = self._reanswer(analysis_id, lam, display)
        except (gr.Error, ValueError) as exc:
            return (*keep[:len(SCREEN) - 1], _warning(_message(exc)), *keep[len(SCREEN):])
        notes = []
        if review_status and "Saved review" in review_status:
            notes.append(review_status.split("  \n")[0])
        if verdict or rating:
            notes.append(f"New answer at λ {result.lam:.2f}: choose your verdict and mask rating again "
                         "(your correction and comment are kept).")
        return (*self._screen_of(result, time.perf_counter() - start, "Re-answered"),
                None, None, gr.update(), gr.update(), self._target(result), "  \n".join(notes),
                gr.update(interactive=True))

    @user_errors
    def _reanswer(self, analysis_id: float, lam: float, display: Display) -> AnalysisResult:
        return self.service.reanswer(int(analysis_id), lam, display)

    def redraw_on_screen(self, analysis_id: float | None, main: str | None, ref: str | None, lam: float,
                         mask: str, opacity: float, center: float, width: float) -> tuple[Any, ...]:
        """Redraw after a display change (mask, opacity, window, lambda's re-fusion): :data:`IMAGES` + status.

        Without an analysis the films' previews follow the window; on failure only the status line changes.
        """
        display = display_of(mask, opacity, center, width)
        if analysis_id is None:
            ref_view, main_view, _ = self._previews(main, ref, display)
            return (ref_view, main_view, *(gr.update() for _ in IMAGES[2:]), gr.update())
        try:
            views = self._render(analysis_id, lam, display)
        except (gr.Error, ValueError) as exc:
            return (*(gr.update() for _ in IMAGES), _warning(_message(exc)))
        return (*_screen_images(views), gr.update())

    @user_errors
    def _render(self, analysis_id: float, lam: float, display: Display) -> Any:
        return self.service.render(int(analysis_id), lam, display)

    # -- the example shown on opening --------------------------------------------------------------------
    def preload(self, pair: ExamplePair, question: str, lam: float = 0.5) -> tuple[Any, ...]:
        """Analyse ``pair`` once (pinned in memory) for every page that opens: :data:`EXAMPLE` + SCREEN + REVIEW.

        Raises:
            gr.Error: the pair cannot be analysed.
        """
        display = Display()
        question = pair.question or question
        start = time.perf_counter()
        folder = Path(tempfile.mkdtemp(prefix="diffvqa-preload-"))  # encoded once, not on every page load
        memo = self.preload_memo
        picture_key = memo.picture_key(pair.main, pair.ref, question, lam) if memo is not None else None
        kept = memo.get_pictures(picture_key, folder) if memo is not None else None
        result = self._analyze(str(pair.main), str(pair.ref), question, lam, display, pin=True,
                               render=kept is None)
        analysed = time.perf_counter()
        how = "ready"
        if kept is None:
            how, drawn = "drawn", dict(zip(IMAGES, _screen_images(result.views)))
            kept = {name: _as_png_files(value, folder, name) for name, value in drawn.items()}
            if memo is not None:
                memo.put_pictures(picture_key, kept)
        screen = self._screen_of(result, analysed - start, "Analysed", [kept[name] for name in IMAGES])
        log.info("the example to open on: analysed in %.2f s, its pictures %s in %.2f s", analysed - start,
                 how, time.perf_counter() - analysed)
        self._preloaded = (str(pair.main), str(pair.ref), question, pair.name, self._attribution(pair.name, question),
                           *screen, *self._blank_review(self._target(result, str(pair.main), str(pair.ref)),
                                                        enabled=True))
        return self._preloaded

    def start_preload(self, pair: ExamplePair, question: str, lam: float = 0.5) -> None:
        """:meth:`preload` in a background thread (the model may still be loading); pages wait for it on open.
        A pair that cannot be analysed is logged, and pages open empty."""
        def run() -> None:
            try:
                memo = self.preload_memo
                if memo is None or not self.service.memoized(pair.main, pair.ref, pair.question or question, lam,
                                                             memo):
                    getattr(self.service.pipeline, "wait_ready", lambda: None)()  # the status times the analysis
                self.preload(pair, question, lam)
            except Exception as exc:  # noqa: BLE001 - the app serves on; the console says why the screen is empty
                log.warning("the example to open on (%s) could not be analysed: %s", pair.name,
                            getattr(exc, "message", None) or exc)

        self._preloading = threading.Thread(target=run, name="preload", daemon=True)
        self._preloading.start()

    def preloaded(self) -> tuple[Any, ...]:
        """What :meth:`preload` computed (the same analysis for every page; a fresh form each time)."""
        if self._preloading is not None:
            self._preloading.join(PRELOAD_WAIT_S)
        if self._preloaded is None:
            return tuple(gr.update() for _ in (*EXAMPLE, *SCREEN, *REVIEW))
        return self._preloaded

    # -- API: analysis -----------------------------------------------------------------------------------
    @user_errors
    def analyze(self, main: str | None, ref: str | None, question: str, lam: float | None, mask: str = "M",
                opacity: float = 0.5, center: float = 0.5, width: float = 1.0) -> tuple[Any, ...]:
        """Analyse the pair; returns answer, theta, analysis id, the four images and a status line."""
        start = time.perf_counter()
        result = self.service.analyze(main, ref, question or "", lam, display_of(mask, opacity, center, width))
        return self._result_outputs(result, time.perf_counter() - start, "Analysed")

    @user_errors
    def reanswer(self, analysis_id: float | None, lam: float, mask: str = "M", opacity: float = 0.5,
                 center: float = 0.5, width: float = 1.0) -> tuple[Any, ...]:
        """Answer again at the new lambda from cached features (a new analysis id)."""
        start = time.perf_counter()
        result = self.service.reanswer(analysis_id, lam, display_of(mask, opacity, center, width))
        return self._result_outputs(result, time.perf_counter() - start, "Re-answered")

    def _result_outputs(self, result: AnalysisResult, seconds: float, verb: str) -> tuple[Any, ...]:
        answer = result.answer.strip() or "(the model returned an empty answer)"
        return (answer, result.theta_words, result.analysis_id, *_image_outputs(result.views),
                self._status_of(result, seconds, verb), "")

    # -- reviews -----------------------------------------------------------------------------------------
    def reviewer_on_load(self, remembered: str | None, request: gr.Request) -> Any:
        """The login name (locked) when auth is on, else the name this browser remembered."""
        name = getattr(request, "username", None)
        if name:
            return gr.update(value=name, interactive=False)
        return gr.update(value=remembered) if remembered else gr.update()

    @staticmethod
    def remember_reviewer(name: str | None) -> str:
        """The reviewer's name for the browser's storage (trimmed, at most 100 characters)."""
        return " ".join(str(name or "").split())[:100]

    def save_on_screen(self, analysis_id: float | None, verdict: str | None, corrected_answer: str,
                       mask_rating: int | None, comment: str, reviewer: str, lam: float = 0.5, mask: str = "M",
                       opacity: float = 0.5, center: float = 0.5, width: float = 1.0,
                       request: gr.Request | None = None) -> tuple[str, int | None]:
        """Save the review of the analysis on screen; a problem is a sentence beside Save (nothing stored)."""
        if analysis_id is None:
            return _warning(_NOTHING_TO_REVIEW), None
        try:
            return self.record_review(analysis_id, verdict, corrected_answer, mask_rating, comment, reviewer, lam,
                                      mask, opacity, center, width, request=request)
        except (gr.Error, ValueError) as exc:
            return _warning(_message(exc)), None

    @user_errors
    def record_review(self, analysis_id: float | None, verdict: str | None, corrected_answer: str,
                      mask_rating: int | None, comment: str, reviewer: str, lam: float = 0.5, mask: str = "M",
                      opacity: float = 0.5, center: float = 0.5, width: float = 1.0,
                      request: gr.Request | None = None) -> tuple[str, int]:
        """Save the review; returns the on-screen confirmation and the review id."""
        login = getattr(request, "username", None) if request is not None else None
        if not verdict:
            raise gr.Error("Choose a verdict (Alt+1 agree, Alt+2 partly, Alt+3 disagree) before saving.",
                           print_exception=False)
        review_id = self.service.record_review(
            analysis_id, reviewer=login or reviewer, verdict=verdict, corrected_answer=corrected_answer or "",
            mask_rating=mask_rating, comment=comment or "", display=display_of(mask, opacity, center, width),
            lam=lam,
        )
        stamp = time.strftime("%H:%M:%S UTC", time.gmtime())
        return (f"✔ Saved review \\#{review_id} of analysis \\#{int(analysis_id or 0)}: **{inert(verdict)}**"
                f" by {inert(login or reviewer)} at {stamp}.", review_id)

    # -- disagreements -----------------------------------------------------------------------------------
    @user_errors
    def list_reviews(self, question_type: str | None, verdicts: list[str] | None, reviewer: str | None,
                     since: str | None, until: str | None) -> tuple[list[list[Any]], str]:
        """Rows of the disagreements table (:data:`TABLE_COLUMNS`) and a count line."""
        rows = self.service.find_reviews(question_type=question_type, verdicts=verdicts or (), reviewer=reviewer,
                                         since=since, until=until)
        table = [[r.review_id, r.case_id, r.reviewed_at.strftime("%Y-%m-%d %H:%M"), r.reviewer,
                  f"{r.question_type}: {r.question}", r.answer, r.corrected_answer, r.verdict,
                  "" if r.mask_rating is None else r.mask_rating, f"{r.lam:.2f}", r.comment,
                  f"{r.main_sha256[:10]} / {r.ref_sha256[:10]}"] for r in rows]
        return table, f"{len(table)} review(s) match. Click rows to select them for export (highlighted)."

    def list_reviews_on_screen(self, question_type: str | None, verdicts: list[str] | None, reviewer: str | None,
                               since: str | None, until: str | None, selected: str | None) -> tuple[Any, str]:
        """The table with the selection highlighted and a count line; a bad filter is a sentence in the count
        line (the table stays as it was)."""
        try:
            rows, count = self.list_reviews(question_type, verdicts, reviewer, since, until)
        except (gr.Error, ValueError) as exc:
            return gr.update(), _warning(_message(exc))
        return self.highlight(rows, selected), count

    @staticmethod
    def highlight(table: Any, selected: str | None) -> Any:
        """The table with the rows selected for export highlighted (a pandas Styler)."""
        import pandas as pd

        frame = table if isinstance(table, pd.DataFrame) else pd.DataFrame(table or [], columns=TABLE_COLUMNS)
        try:
            ids = set(parse_ids(selected))
        except gr.Error:
            ids = set()

        def style(row: pd.Series) -> list[str]:
            chosen = _as_int(row.iloc[0]) in ids
            return [SELECTED_STYLE if chosen else "" for _ in row]

        return frame.style.apply(style, axis=1)

    def toggle_selected(self, selected: str, table: Any, event: gr.SelectData) -> tuple[Any, Any, Any, str]:
        """A clicked row: its review id added to (or removed from) the export selection, the rows re-highlighted,
        and the review's picture and facts shown below. Returns selected, table, picture, details."""
        try:
            row = event.index[0] if isinstance(event.index, (list, tuple)) else int(event.index)
            review_id = int(table.iloc[row, 0]) if hasattr(table, "iloc") else int(table[row][0])
        except (TypeError, ValueError, IndexError, KeyError):
            return selected, gr.update(), gr.update(), gr.update()
        try:
            ids = parse_ids(selected)
        except gr.Error:
            ids = []
        ids = [i for i in ids if i != review_id] if review_id in ids else [*ids, review_id]
        chosen = ", ".join(str(i) for i in ids)
        picture, details = self._review_details(review_id)
        return chosen, self.highlight(table, chosen), picture, details

    def _review_details(self, review_id: int) -> tuple[Any, str]:
        rows = self.service.store.query_reviews(review_ids=[review_id])
        if not rows:
            return None, _warning(f"Review #{review_id} is not in the database.")
        r = rows[0]
        png = self.service.overlays.get(r.analysis_id)
        picture = _png_array(png) if png else None
        details = (f"**Review \\#{r.review_id}** of analysis \\#{r.analysis_id}, case \\#{r.case_id} · "
                   f"{inert(r.verdict)} by {inert(r.reviewer)}  \n"
                   f"Main film SHA-256 `{r.main_sha256}`  \nPrior film SHA-256 `{r.ref_sha256}`"
                   + ("" if png else "  \n(no picture kept for this analysis)"))
        return picture, details

    @user_errors
    def export(self, question_type: str | None, verdicts: list[str] | None, reviewer: str | None,
               since: str | None, until: str | None, selected: str = "") -> str:
        """Export the selected reviews (or, with none selected, every review matching the filters) as a zip."""
        ids = parse_ids(selected)
        if not ids:
            ids = [r.review_id for r in self.service.find_reviews(question_type=question_type,
                                                                  verdicts=verdicts or (), reviewer=reviewer,
                                                                  since=since, until=until)]
        path = self.service.export(ids)
        gr.Info(f"Exported {len(ids)} review(s).")
        return str(path)


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _as_png_files(value: Any, folder: Path, name: str) -> Any:
    """An image (or a pair of images) as PNG file paths in ``folder``; anything else unchanged."""
    from PIL import Image

    if isinstance(value, tuple) and all(isinstance(v, np.ndarray) for v in value):
        return tuple(_as_png_files(v, folder, f"{name}-{i}") for i, v in enumerate(value))
    if isinstance(value, np.ndarray):
        path = folder / f"{name}.png"
        Image.fromarray(value).save(path, format="PNG", compress_level=1)  # 4x faster than the default 6
        return str(path)
    return value


def _png_array(png: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"))


def parse_ids(text: str | None) -> list[int]:
    """Review ids from ``"3, 7 12"``; anything that is not a whole number is an error."""
    tokens = [t for t in re.split(r"[\s,;]+", text or "") if t]
    try:
        return list(dict.fromkeys(int(t.lstrip("#")) for t in tokens))
    except ValueError:
        raise gr.Error("Review ids must be whole numbers separated by commas, e.g. 3, 7, 12.",
                       print_exception=False) from None

