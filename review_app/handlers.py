"""Gradio event handlers: convert component values to service calls and results back to component values.

Each handler is a thin adapter over :class:`~review_app.service.ReviewService` wrapped in
:func:`~review_app.errors.user_errors`, so a reviewer sees a clear message and never a traceback. User text
that goes back into Markdown/HTML is escaped (:func:`inert`); answers and comments go into textboxes and
table cells, which display text, never markup.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Sequence
from typing import Any

import gradio as gr
import numpy as np

from diffvqa_core.data.grammar import difference_answer_problems
from review_app.errors import user_errors
from review_app.examples import ExamplePair
from review_app.rendering import Display
from review_app.service import AnalysisResult, ReviewService

MASK_CHOICES = [("M fused", "M"), ("U DINO prior", "U"), ("F adaptive", "F"), ("none", "none")]
VERDICT_CHOICES = [("Agree", "agree"), ("Partly", "partly"), ("Disagree", "disagree")]
RATING_CHOICES = [("1 useless", 1), ("2", 2), ("3", 3), ("4", 4), ("5 exact", 5)]
TABLE_COLUMNS = ["review", "reviewed (UTC)", "reviewer", "type", "question", "answer", "correction", "verdict",
                 "mask", "lambda", "comment"]
TABLE_WIDTHS = ["76px", "120px", "120px", "108px", "15%", "16%", "16%", "96px", "64px", "76px", "15%"]
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~<>])")


def inert(text: object) -> str:
    """Text safe to embed in Markdown or HTML: HTML-escaped, Markdown punctuation backslash-escaped."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(str(text), quote=True))


def display_of(mask: str, opacity: float, center: float, width: float) -> Display:
    """The display settings from the four controls (with safe fallbacks for API callers)."""
    return Display(mask=mask if mask in ("M", "U", "F", "none") else "M", opacity=float(opacity or 0.0),
                   center=float(0.5 if center is None else center), width=max(float(width or 1.0), 0.01))


def _image_outputs(result_views: Any) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray], np.ndarray]:
    return (result_views.reference, result_views.main, (result_views.registered, result_views.reference_plain),
            result_views.mask_strip)


class Handlers:
    """The app's event handlers, bound to one service and one list of examples."""

    def __init__(self, service: ReviewService, examples: Sequence[ExamplePair]) -> None:
        self.service = service
        self.examples = {pair.name: pair for pair in examples}

    # -- banner ------------------------------------------------------------------------------------------
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

    # -- inputs ------------------------------------------------------------------------------------------
    @user_errors
    def pick_example(self, name: str | None, question: str, mask: str, opacity: float, center: float,
                     width: float) -> tuple[Any, ...]:
        """Load an example pair into the two file inputs and show its attribution."""
        pair = self.examples.get(name or "")
        if pair is None:
            return gr.update(), gr.update(), gr.update(), "", gr.update(), gr.update()
        display = display_of(mask, opacity, center, width)
        return (str(pair.main), str(pair.ref), pair.question or question,
                f"Source: {inert(pair.attribution)}"
                + (f"  \nGround truth: *{inert(pair.truth)}*" if pair.truth else ""),
                self.service.preview(pair.ref, display), self.service.preview(pair.main, display))

    @user_errors
    def preview(self, path: str | None, mask: str, opacity: float, center: float, width: float) -> Any:
        """Show a chosen film before analysis; an unreadable one gives a warning (Analyse will say more)."""
        try:
            return self.service.preview(path, display_of(mask, opacity, center, width))
        except ValueError as exc:
            gr.Warning(str(exc)[:300].replace("<", "‹").replace(">", "›"))
            return None

    # -- analysis ----------------------------------------------------------------------------------------
    @user_errors
    def analyze(self, main: str | None, ref: str | None, question: str, lam: float | None, mask: str = "M",
                opacity: float = 0.5, center: float = 0.5, width: float = 1.0) -> tuple[Any, ...]:
        """Analyse the pair; returns answer, theta, analysis id, the four images and a status line."""
        start = time.perf_counter()
        result = self.service.analyze(main, ref, question or "", lam, display_of(mask, opacity, center, width))
        return self._result_outputs(result, time.perf_counter() - start, "Analysed")

    @user_errors
    def refuse(self, analysis_id: float | None, lam: float, mask: str, opacity: float, center: float,
               width: float) -> tuple[Any, ...]:
        """Re-fuse M at the new lambda and redraw the overlays (no network pass)."""
        if analysis_id is None:
            return gr.update(), gr.update(), gr.update(), gr.update()
        return _image_outputs(self.service.render(analysis_id, lam, display_of(mask, opacity, center, width)))

    @user_errors
    def reanswer(self, analysis_id: float | None, lam: float, mask: str = "M", opacity: float = 0.5,
                 center: float = 0.5, width: float = 1.0) -> tuple[Any, ...]:
        """Answer again at the new lambda from cached features (a new analysis id)."""
        start = time.perf_counter()
        result = self.service.reanswer(analysis_id, lam, display_of(mask, opacity, center, width))
        return self._result_outputs(result, time.perf_counter() - start, "Re-answered")

    @user_errors
    def redraw(self, analysis_id: float | None, lam: float, mask: str, opacity: float, center: float,
               width: float) -> tuple[Any, ...]:
        """Redraw after a display change (mask, opacity, window/level)."""
        return self.refuse(analysis_id, lam, mask, opacity, center, width)

    def _result_outputs(self, result: AnalysisResult, seconds: float, verb: str) -> tuple[Any, ...]:
        status = (f"{verb} as analysis \\#{result.analysis_id} · question type *{inert(result.question_type)}* · "
                  f"lambda {result.lam:.2f} · {seconds:.2f} s")
        if result.question_type == "difference":
            problems = difference_answer_problems(result.answer)
            if problems:
                status += " · **not a well-formed answer:** " + inert("; ".join(problems))
        answer = result.answer.strip() or "(the model returned an empty answer)"
        return (answer, result.theta_words, result.analysis_id, *_image_outputs(result.views), status, "")

    # -- reviews -----------------------------------------------------------------------------------------
    @staticmethod
    def blank_review() -> tuple[None, None, str, str]:
        """A new case starts with an empty review form (verdict, rating, correction, comment)."""
        return None, None, "", ""

    def reviewer_from_login(self, request: gr.Request) -> Any:
        """Prefill (and lock) the reviewer field with the login name when auth is on."""
        name = getattr(request, "username", None)
        return gr.update(value=name, interactive=False) if name else gr.update()

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
        gr.Info(f"Review #{review_id} saved.")
        stamp = time.strftime("%H:%M:%S UTC", time.gmtime())
        return (f"✔ Saved review \\#{review_id} of analysis \\#{int(analysis_id or 0)}: **{inert(verdict)}**"
                f" by {inert(login or reviewer)} at {stamp}.", review_id)

    # -- disagreements -----------------------------------------------------------------------------------
    @user_errors
    def list_reviews(self, question_type: str | None, verdicts: list[str] | None, reviewer: str | None,
                     since: str | None, until: str | None) -> tuple[list[list[Any]], str]:
        """Rows of the disagreements table and a count line."""
        rows = self.service.find_reviews(question_type=question_type, verdicts=verdicts or (), reviewer=reviewer,
                                         since=since, until=until)
        table = [[r.review_id, r.reviewed_at.strftime("%Y-%m-%d %H:%M"), r.reviewer, r.question_type, r.question,
                  r.answer, r.corrected_answer, r.verdict, "" if r.mask_rating is None else r.mask_rating,
                  round(r.lam, 2), r.comment] for r in rows]
        return table, f"{len(table)} review(s) match."

    @staticmethod
    def toggle_selected(selected: str, table: Any, event: gr.SelectData) -> str:
        """Clicking a table row adds its review id to (or removes it from) the export selection."""
        try:
            row = event.index[0] if isinstance(event.index, (list, tuple)) else int(event.index)
            review_id = int(table.iloc[row, 0]) if hasattr(table, "iloc") else int(table[row][0])
        except (TypeError, ValueError, IndexError, KeyError):
            return selected
        ids = parse_ids(selected)
        ids = [i for i in ids if i != review_id] if review_id in ids else [*ids, review_id]
        return ", ".join(str(i) for i in ids)

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


def parse_ids(text: str | None) -> list[int]:
    """Review ids from ``"3, 7 12"``; anything that is not a whole number is an error."""
    tokens = [t for t in re.split(r"[\s,;]+", text or "") if t]
    try:
        return list(dict.fromkeys(int(t.lstrip("#")) for t in tokens))
    except ValueError:
        raise gr.Error("Review ids must be whole numbers separated by commas, e.g. 3, 7, 12.",
                       print_exception=False) from None
