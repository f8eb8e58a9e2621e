"""The Error analysis tab: what the reviewers' verdicts and corrections say about the model.

Everything it shows comes from :mod:`feedback_db.analysis` (pure functions over the review store), read once
per refresh: agreement by question family, by finding and by reviewer; for difference answers, what the model
missed, invented or got at the wrong level per finding (its answer and the correction read with the benchmark
grammar's parser); how much reviewers agree with each other (Cohen's and Fleiss' kappa); mask ratings against
lambda. A headline says the few numbers a lead radiologist asks first; the charts (:mod:`review_app.analysis_charts`)
the rest; the CSV holds every number (``feedback_db.analysis.error_summary``), and so does the named API endpoint
``/error_summary``.

:func:`analysis_tab` lays the tab out and wires it inside the app's Blocks, so ``app.py`` gains one call.
"""

from __future__ import annotations

import math
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from feedback_db import FeedbackStore
from feedback_db import analysis as fa
from review_app import analysis_charts as charts
from review_app.errors import user_errors
from review_app.handlers import inert

ALL_CHECKPOINTS = ""
KAPPA_COLUMNS = ["measure", "reviewers", "answers", "raters", "alike", "κ", "reading"]
KAPPA_WIDTHS = ["72px", "38%", "72px", "62px", "60px", "56px", "22%"]
TOP_FINDINGS = 14
EMPTY_HEADLINE = ("No reviews yet. Review answers on the **Review** tab (or work through a worklist: "
                  "`python app.py --worklist DIR`); this page then shows what the reviewers say about the model.")


class ErrorAnalysis:
    """The tab's handlers over one feedback store.

    Args:
        store: the feedback database.
        csv_dir: where CSV downloads are written (default: a new temporary folder).
    """

    def __init__(self, store: FeedbackStore, csv_dir: str | Path | None = None) -> None:
        self.store = store
        self._csv_dir = Path(csv_dir) if csv_dir else None

    # -- data --------------------------------------------------------------------------------------------------
    def reviews(self, checkpoint: str | None = None) -> pd.DataFrame:
        """Each reviewer's latest review of each analysis, of one checkpoint (its SHA-256) or all."""
        frame = fa.reviews_frame(self.store)
        if checkpoint and len(frame):
            frame = frame[frame["checkpoint_sha256"] == checkpoint].reset_index(drop=True)
        return frame

    def checkpoint_choices(self, frame: pd.DataFrame) -> list[tuple[str, str]]:
        """("all checkpoints", "") then one (name · sha, sha) per checkpoint reviewed, most reviewed first."""
        choices = [("all checkpoints", ALL_CHECKPOINTS)]
        if len(frame):
            counts = frame.groupby(["checkpoint_sha256", "checkpoint_name"]).size().sort_values(ascending=False)
            choices += [(f"{name} · {sha[:12]} ({n} reviews)", sha) for (sha, name), n in counts.items()]
        return choices

    @user_errors
    def error_summary(self, checkpoint: str | None = None) -> pd.DataFrame:
        """API ``/error_summary``: every section of ``feedback_db.analysis.error_summary`` as one table.

        Args:
            checkpoint: SHA-256 of a checkpoint to analyse alone; empty for all reviews.

        Returns:
            Columns section, group, n, agree, partly, disagree, agreement_rate, correct, missed, invented,
            wrong_level, wrong_direction, observed_agreement, kappa, mean_mask_rating (empty where a column
            does not apply to a section).
        """
        return _for_json(fa.error_summary(self.reviews(checkpoint)))

    # -- the screen --------------------------------------------------------------------------------------------
    def refresh_on_screen(self, checkpoint: str | None = None) -> tuple[Any, ...]:
        """Everything on the tab from one read of the store.

        Returns:
            checkpoint picker, headline, the five charts (family, errors, finding, reviewer, masks), the kappa
            table, the full summary table and the CSV file.
        """
        everything = fa.reviews_frame(self.store)
        choices = self.checkpoint_choices(everything)
        if checkpoint not in {value for _, value in choices}:
            checkpoint = ALL_CHECKPOINTS
        frame = everything if not checkpoint else everything[everything["checkpoint_sha256"] == checkpoint]
        frames = fa.summary_frames(frame.reset_index(drop=True))
        summary = fa.error_summary(frames["reviews"])
        figures = (
            charts.verdict_chart(frames["question_type"], "question_type", "Agreement by question family"),
            charts.errors_chart(frames["difference_errors"]),
            charts.verdict_chart(frames["finding"], "finding", "Agreement by finding", top=TOP_FINDINGS),
            charts.verdict_chart(frames["reviewer"], "reviewer", "Agreement by reviewer"),
            charts.mask_lambda_chart(frames["mask_vs_lambda"]),
        )
        kappas = pd.DataFrame(charts.kappa_rows(frames["inter_reviewer"]), columns=KAPPA_COLUMNS)
        return (gr.update(choices=choices, value=checkpoint), headline(frames), *figures, kappas,
                _for_json(summary), self._csv(frames["reviews"]))

    def _csv(self, frame: pd.DataFrame) -> str:
        folder = self._csv_dir or Path(tempfile.mkdtemp(prefix="diffvqa-analysis-"))
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        return str(fa.write_error_summary_csv(frame, folder / f"diffvqa-error-summary-{stamp}.csv"))


def headline(frames: dict[str, pd.DataFrame]) -> str:
    """The few numbers a lead radiologist asks first, as Markdown (names escaped)."""
    reviews = frames["reviews"]
    if reviews.empty:
        return EMPTY_HEADLINE
    n = len(reviews)
    shares = reviews["verdict"].value_counts(normalize=True)
    lines = [f"**{n} reviews** of {reviews['analysis_id'].nunique()} answers on {reviews['case_id'].nunique()} "
             f"image pairs by {reviews['reviewer'].nunique()} reviewer(s): agree **{shares.get('agree', 0):.0%}**, "
             f"partly {shares.get('partly', 0):.0%}, disagree {shares.get('disagree', 0):.0%}."]
    coverage = fa.difference_coverage(reviews)
    errors = frames["difference_errors"]
    if coverage["difference_reviews"]:
        line = (f"**Difference answers:** {coverage['used']} of {coverage['difference_reviews']} reviews tell what "
                "the right answer was")
        left_out = [text for count, text in (
            (coverage["no_correction"], "partly / disagree without a correction"),
            (coverage["ungrammatical_correction"], "corrections outside the benchmark's grammar")) if count]
        if left_out:
            counts = (coverage["no_correction"], coverage["ungrammatical_correction"])
            line += " (not: " + ", ".join(f"{n} {text}" for n, text in zip([c for c in counts if c], left_out)) + ")"
        lines.append(line + ".")
    if len(errors):
        worst = []
        for _, row in errors.head(3).iterrows():
            kinds = [(int(row[k]), charts.ERROR_LABELS[k]) for k in fa.ERROR_KINDS if int(row[k])]
            if not kinds:
                continue
            detail = ", ".join(f"{count} {label}" for count, label in sorted(kinds, reverse=True))
            worst.append(f"*{inert(row['finding'])}* ({int(sum(c for c, _ in kinds))} wrong of {int(row['reviews'])}: "
                         f"{detail})")
        if worst:
            lines.append("**Most errors:** " + "; ".join(worst) + ".")
    kappas = frames["inter_reviewer"]
    if len(kappas):
        fleiss = kappas[kappas["measure"] == "fleiss"]
        cohen = kappas[kappas["measure"] == "cohen"]
        parts = []
        if len(fleiss):
            row = fleiss.iloc[0]
            parts.append(f"Fleiss κ {_kappa(row['kappa'])} over {int(row['items'])} answers judged by three or more")
        if len(cohen):
            items = int(cohen["items"].sum())
            weighted = (cohen["kappa"] * cohen["items"]).sum() / max(cohen["items"][cohen["kappa"].notna()].sum(), 1)
            parts.append(f"Cohen κ {_kappa(weighted)} (mean over {len(cohen)} pair(s) of reviewers, {items} shared "
                         "answers, weighted by answers)")
        lines.append("**Reviewers agree with each other:** " + "; ".join(parts) + ".")
    masks = frames["mask_vs_lambda"]
    rated = masks[masks["ratings"] > 0]
    if len(rated) >= 2:
        best, worst = rated.loc[rated["mean_rating"].idxmax()], rated.loc[rated["mean_rating"].idxmin()]
        lines.append(f"**Masks:** rated best at λ {best['lambda_bin']} (mean {best['mean_rating']:.1f} of 5, "
                     f"n={int(best['ratings'])}), worst at λ {worst['lambda_bin']} ({worst['mean_rating']:.1f}, "
                     f"n={int(worst['ratings'])}).")
    return "  \n".join(lines)


def _kappa(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "undefined"
    return f"**{value:.2f}** ({charts.kappa_words(value)})"


def _for_json(table: pd.DataFrame) -> pd.DataFrame:
    """Floats rounded to 4 digits, missing values as None (JSON null; the API and the table show them empty)."""
    out = table.copy()
    for column in out.columns:
        if pd.api.types.is_float_dtype(out[column]):
            out[column] = out[column].round(4)
    return out.astype(object).where(out.notna(), None)


def analysis_tab(store: FeedbackStore) -> gr.Tab:
    """Lay out and wire the Error analysis tab inside the current ``gr.Blocks``; also the ``/error_summary`` API.

    The tab reads the store when it is opened and on Refresh.
    """
    page = ErrorAnalysis(store)
    with gr.Tab("Error analysis", id="error-analysis", elem_id="error-analysis") as tab:
        with gr.Row(equal_height=False, elem_id="ea-controls"):
            checkpoint = gr.Dropdown([("all checkpoints", ALL_CHECKPOINTS)], value=ALL_CHECKPOINTS,
                                     label="Checkpoint", elem_id="ea-checkpoint", scale=3,
                                     info="the reviews of one model, or all")
            with gr.Column(scale=1, min_width=200):
                refresh = gr.Button("Refresh", elem_id="ea-refresh", size="sm")
                download = gr.DownloadButton("Download CSV", elem_id="ea-csv", size="sm", variant="primary")
        summary_line = gr.Markdown(EMPTY_HEADLINE, elem_id="ea-headline")
        plots = []
        for left, right in (("family", "errors"), ("finding", "reviewer")):
            with gr.Row(equal_height=False):
                plots += [gr.Plot(elem_id=f"ea-{left}", show_label=False, format="png"),
                          gr.Plot(elem_id=f"ea-{right}", show_label=False, format="png")]
        with gr.Row(equal_height=False):
            plots.append(gr.Plot(elem_id="ea-masks", show_label=False, format="png"))
            with gr.Column():
                gr.Markdown("**Reviewers against each other**: their verdicts on the same answer to the same "
                            "question on the same pair. *alike*: share of pairs of verdicts that match; κ: that "
                            "share corrected for chance (0 = chance, 1 = always alike; Cohen per pair of "
                            "reviewers, Fleiss over answers three or more judged).", elem_id="ea-kappa-title")
                kappas = gr.Dataframe(headers=KAPPA_COLUMNS, value=[], interactive=False, wrap=True,
                                      elem_id="ea-kappa", max_height=360, column_widths=KAPPA_WIDTHS)
        with gr.Accordion("All numbers (what the CSV and /error_summary hold)", open=False, elem_id="ea-all"):
            table = gr.Dataframe(value=pd.DataFrame(columns=list(fa.SUMMARY_COLUMNS)), interactive=False, wrap=True,
                                 elem_id="ea-summary", max_height=480)
        api_summary = gr.Button(visible=False)

    outputs = [checkpoint, summary_line, *plots, kappas, table, download]
    gr.on([tab.select, refresh.click, checkpoint.input], page.refresh_on_screen, [checkpoint], outputs,
          api_visibility="private", concurrency_limit=2)
    api_summary.click(page.error_summary, [checkpoint], table, api_name="error_summary")
    return tab
