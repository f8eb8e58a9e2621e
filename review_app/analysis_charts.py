"""Charts of the Error analysis tab: matplotlib figures drawn for the app's dark reading-room theme.

Each function takes one table of :mod:`feedback_db.analysis` and returns a ``matplotlib.figure.Figure``
(built without pyplot, so handlers on several threads never share pyplot's global state). Colours are the
Okabe-Ito palette, told apart with the common colour-vision deficiencies; every bar also carries its count.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # matplotlib is imported when the first chart is drawn: ~1 s less at the app's start
    from matplotlib.figure import Figure

BACKGROUND = "#0f172a"
"""Gradio's dark panel colour (slate 900), so a chart sits in the page without a white box."""
TEXT = "#e2e8f0"
MUTED = "#94a3b8"
GRID = "#334155"
VERDICT_COLOURS = {"agree": "#009E73", "partly": "#E69F00", "disagree": "#D55E00"}
ERROR_COLOURS = {"missed": "#56B4E9", "invented": "#CC79A7", "wrong_level": "#F0E442", "wrong_direction": "#E69F00"}
CORRECT_COLOUR = "#475569"
RATING_COLOURS = ("#D55E00", "#E69F00", "#94a3b8", "#56B4E9", "#009E73")
"""Mask ratings 1 (useless) to 5 (exact): warm to cool, grey in the middle."""
ERROR_LABELS = {"missed": "missed", "invented": "invented", "wrong_level": "wrong level",
                "wrong_direction": "wrong direction", "correct": "correct"}
WIDTH = 7.2
"""Figure width in inches (at 100 dpi: 720 px, two charts side by side on a 1440 px screen)."""


def _figure(rows: int, min_height: float = 2.6) -> tuple[Figure, object]:
    from matplotlib.figure import Figure

    height = max(min_height, 0.9 + 0.34 * rows)
    figure = Figure(figsize=(WIDTH, height), dpi=100, facecolor=BACKGROUND, layout="constrained")
    axes = figure.add_subplot()
    axes.set_facecolor(BACKGROUND)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        axes.spines[side].set_color(GRID)
    axes.tick_params(colors=TEXT, labelsize=10)
    axes.xaxis.label.set_color(TEXT)
    axes.yaxis.label.set_color(TEXT)
    return figure, axes


def _title(axes: object, title: str, subtitle: str = "") -> None:
    axes.set_title(title, color=TEXT, fontsize=12, fontweight="bold", loc="left", pad=18 if subtitle else 8)
    if subtitle:
        axes.text(0.0, 1.02, subtitle, transform=axes.transAxes, color=MUTED, fontsize=9, va="bottom")


def _legend(axes: object, columns: int) -> None:
    """The legend in one row under the chart (outside the axes, so it never hides a bar)."""
    legend = axes.figure.legend(loc="outside lower center", ncols=columns, frameon=False, fontsize=9)
    for text in legend.get_texts():
        text.set_color(TEXT)


def empty_figure(title: str, message: str) -> Figure:
    """A chart slot that says why it is empty."""
    figure, axes = _figure(0, min_height=1.6)
    axes.set_axis_off()
    _title(axes, title)
    axes.text(0.5, 0.45, message, transform=axes.transAxes, ha="center", va="center", color=MUTED, fontsize=11,
              wrap=True)
    return figure


def verdict_chart(table: pd.DataFrame, by: str, title: str, top: int | None = None) -> Figure:
    """Agree / partly / disagree as shares of each group's reviews, one horizontal stacked bar per group.

    Args:
        table: an ``agreement_by_*`` table (columns ``by``, reviews, agree, partly, disagree).
        by: the group column (question_type, finding, reviewer).
        title: the chart's title.
        top: only the first ``top`` rows (the tables come most reviewed first where that matters).
    """
    if table.empty:
        return empty_figure(title, "No reviews yet.")
    shown = table.head(top) if top else table
    labels = [str(x) for x in shown[by]][::-1]
    reviews = shown["reviews"].to_numpy(float)[::-1]
    figure, axes = _figure(len(shown))
    left = np.zeros(len(shown))
    for verdict, colour in VERDICT_COLOURS.items():
        share = shown[verdict].to_numpy(float)[::-1] / np.maximum(reviews, 1)
        bars = axes.barh(labels, share, left=left, color=colour, label=verdict, height=0.7)
        for bar, value in zip(bars, share):
            if value >= 0.12:
                axes.text(bar.get_x() + bar.get_width() / 2, bar.get_y() + bar.get_height() / 2, f"{value:.0%}",
                          ha="center", va="center", color="#0b1020", fontsize=9, fontweight="bold")
        left += share
    for y, n in enumerate(reviews):
        axes.text(1.01, y, f"n={int(n)}", va="center", color=MUTED, fontsize=9)
    axes.set_xlim(0, 1.12)
    axes.set_xticks([0, 0.25, 0.5, 0.75, 1.0], ["0%", "25%", "50%", "75%", "100%"])
    axes.xaxis.grid(True, color=GRID, linewidth=0.6)
    axes.set_axisbelow(True)
    more = f" · top {len(shown)} of {len(table)}" if top and len(table) > len(shown) else ""
    _title(axes, title, f"share of each group's reviews (latest per reviewer and analysis){more}")
    _legend(axes, 3)
    return figure


def errors_chart(table: pd.DataFrame, title: str = "Difference answers: what the model got wrong, per finding",
                 top: int = 12) -> Figure:
    """Per finding: answers that got it right (grey) and each kind of error, as stacked counts.

    Args:
        table: ``difference_errors`` (columns finding, correct, missed, invented, wrong_level, wrong_direction).
    """
    if table.empty:
        return empty_figure(title, "No difference review with a usable truth yet: a correction in the benchmark's "
                                   "grammar, or an agree.")
    shown = table.head(top)
    labels = [str(x) for x in shown["finding"]][::-1]
    figure, axes = _figure(len(shown))
    left = np.zeros(len(shown))
    for kind in ("missed", "invented", "wrong_level", "wrong_direction", "correct"):
        counts = shown[kind].to_numpy(float)[::-1]
        colour = CORRECT_COLOUR if kind == "correct" else ERROR_COLOURS[kind]
        bars = axes.barh(labels, counts, left=left, color=colour, label=ERROR_LABELS[kind], height=0.7)
        for bar, value in zip(bars, counts):
            if value > 0 and bar.get_width() >= 0.06 * max(1.0, float(shown["reviews"].max())):
                axes.text(bar.get_x() + bar.get_width() / 2, bar.get_y() + bar.get_height() / 2, f"{int(value)}",
                          ha="center", va="center", color=TEXT if kind == "correct" else "#0b1020", fontsize=9,
                          fontweight="bold")
        left += counts
    axes.xaxis.grid(True, color=GRID, linewidth=0.6)
    axes.set_axisbelow(True)
    axes.set_xlabel("difference reviews naming the finding")
    more = f" · top {len(shown)} of {len(table)} by errors" if len(table) > len(shown) else ""
    _title(axes, title, f"the model's answer against the correction, read with the benchmark grammar{more}")
    _legend(axes, 5)
    return figure


def mask_lambda_chart(table: pd.DataFrame, title: str = "Mask ratings against λ") -> Figure:
    """Per lambda bin: how the mask ratings (1 useless - 5 exact) spread, as 100% stacked bars, with the mean
    rating above each bar and the number of ratings under it.

    Args:
        table: ``mask_rating_by_lambda`` (columns lambda_bin, ratings, mean_rating, rating_1 .. rating_5).
    """
    if table.empty or int(table["ratings"].sum()) == 0:
        return empty_figure(title, "No mask ratings yet.")
    figure, axes = _figure(8)
    x = np.arange(len(table))
    counts = table["ratings"].to_numpy(int)
    bottom = np.zeros(len(table))
    for rating in range(1, 6):
        share = table[f"rating_{rating}"].to_numpy(float) / np.maximum(counts, 1)
        label = {1: "1 useless", 5: "5 exact"}.get(rating, str(rating))
        axes.bar(x, share, bottom=bottom, color=RATING_COLOURS[rating - 1], width=0.68, label=label)
        bottom += share
    for xi, mean, n in zip(x, table["mean_rating"].to_numpy(float), counts):
        text = "no ratings" if n == 0 or math.isnan(mean) else f"mean {mean:.1f}"
        axes.text(xi, 1.03, text, ha="center", va="bottom", color=TEXT, fontsize=10, fontweight="bold")
    axes.set_ylim(0, 1.12)
    axes.set_yticks([0, 0.25, 0.5, 0.75, 1.0], ["0%", "25%", "50%", "75%", "100%"])
    axes.set_xticks(x, [f"{b}\nn={n}" for b, n in zip(table["lambda_bin"], counts)])
    axes.set_xlabel("λ the mask was fused with (1 = only the DINO prior U, 0 = only the adaptive F)")
    axes.yaxis.grid(True, color=GRID, linewidth=0.6)
    axes.set_axisbelow(True)
    _title(axes, title, "does M mark the change? share of each rating per λ bin, mean rating above")
    _legend(axes, 5)
    return figure


def kappa_rows(table: pd.DataFrame) -> list[list[object]]:
    """The inter-reviewer table for display: measure, reviewers, items, raters per item, observed, kappa, reading."""
    return [[row["measure"], row["reviewers"], int(row["items"]), row["raters_per_item"],
             _percent(row["observed_agreement"]), _number(row["kappa"]), kappa_words(row["kappa"])]
            for _, row in table.iterrows()]


def kappa_words(kappa: float) -> str:
    """Landis and Koch's (1977) words for a kappa."""
    if kappa is None or (isinstance(kappa, float) and math.isnan(kappa)):
        return "undefined (one verdict only)"
    for limit, words in ((0.0, "poor"), (0.2, "slight"), (0.4, "fair"), (0.6, "moderate"), (0.8, "substantial")):
        if kappa <= limit:
            return words
    return "almost perfect"


def _percent(value: float) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.0%}"


def _number(value: float) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"

