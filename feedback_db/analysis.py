"""Error analysis of the review store: what the reviewers' verdicts and corrections say about the model.

Pure functions from the stored reviews to pandas DataFrames, for the app's Error analysis tab, its
``/error_summary`` endpoint and scripts. Every function takes a *source*: a :class:`~feedback_db.FeedbackStore`,
a SQLAlchemy ``Engine`` on a feedback database, a database URL, or the DataFrame :func:`reviews_frame` returns
(so that one read serves several tables).

Rules the tables share:

* Only each reviewer's **latest** review of an analysis counts (a later review supersedes; the store never
  edits one). ``reviews_frame(..., latest_only=False)`` keeps them all.
* A review's **findings** are the official finding names (``diffvqa_core.data.vocabulary.FINDINGS``) that its
  question, the model's answer or the correction names; one review may count for several findings.
* **Difference answers** are read back with the benchmark grammar's own parser
  (:func:`diffvqa_core.data.grammar.parse_difference_answer`, as :func:`diffvqa_core.metrics.change_agreement`
  does). The truth of a review is its correction when one is given; an ``agree`` without a correction confirms
  the model's answer; a ``partly`` / ``disagree`` without a correction, or with one outside the grammar, says
  what is wrong but not what is right, and is left out of the error counts.
* **Inter-reviewer agreement** treats one *item* as one answer to one question on one image pair
  (case, question, answer): several reviewers who opened the same pair in the worklist each get their own
  analysis row, with the same answer. Verdicts are nominal categories (agree, partly, disagree). Cohen's kappa
  per pair of reviewers over the items both judged; Fleiss' kappa over the items three or more judged.
  The kappas are implemented here (a dozen lines each, checked against the worked examples of Cohen 1960 and
  Fleiss 1971 in the tests) rather than taken from scikit-learn / statsmodels, which are not dependencies of
  this project and would add scipy for two formulas.

The package never imports torch; the grammar and vocabulary modules used here do not either.
"""

from __future__ import annotations

import itertools
import os
import re
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from diffvqa_core.data.grammar import difference_answer_problems, parse_difference_answer
from diffvqa_core.data.vocabulary import FINDINGS, NOTHING_CHANGED, QUESTION_TYPES
from feedback_db.validation import VERDICTS

Source = Any  # FeedbackStore | Engine | str (URL) | pd.DataFrame from reviews_frame

REVIEW_COLUMNS: tuple[str, ...] = (
    "review_id", "analysis_id", "case_id", "reviewer", "verdict", "corrected_answer", "mask_rating", "comment",
    "reviewed_at", "question", "question_type", "answer", "lam", "checkpoint_name", "checkpoint_sha256",
    "main_sha256", "ref_sha256",
)
ERROR_KINDS: tuple[str, ...] = ("missed", "invented", "wrong_level", "wrong_direction")
"""How a difference answer can get one finding wrong, in the order the tables show them."""

SUMMARY_COLUMNS: tuple[str, ...] = (
    "section", "group", "n", "agree", "partly", "disagree", "agreement_rate", "correct", *ERROR_KINDS,
    "observed_agreement", "kappa", "mean_mask_rating",
)
SUMMARY_SECTIONS: tuple[str, ...] = (
    "overall", "question_type", "finding", "reviewer", "difference_errors", "inter_reviewer", "mask_vs_lambda",
)

# Longest names first, so "pleural effusion" is never read as a shorter name inside it.
_FINDING_PATTERN = re.compile(
    r"\b(" + "|".join(re.escape(name) for name in sorted(FINDINGS, key=len, reverse=True)) + r")\b")
_ORDER = {name: i for i, name in enumerate(FINDINGS)}


# ------------------------------------------------------------------------------------------ reading

def reviews_frame(source: Source, *, latest_only: bool = True) -> pd.DataFrame:
    """The stored reviews joined with their analyses and cases, one row per review, newest first.

    Args:
        source: a FeedbackStore, an Engine, a database URL, or a frame from this function (returned as is,
            or reduced to the latest reviews when ``latest_only``).
        latest_only: keep only each reviewer's latest review of each analysis.

    Returns:
        Columns ``REVIEW_COLUMNS``: review_id, analysis_id, case_id (int); reviewer, verdict
        (agree | partly | disagree), corrected_answer ("" = none), comment, question, question_type, answer,
        checkpoint_name, checkpoint_sha256, main_sha256, ref_sha256 (str); mask_rating (float, NaN = not rated);
        reviewed_at (UTC timestamp); lam (float, the fusion weight the answer was given with).
    """
    if isinstance(source, pd.DataFrame):
        frame = source
    else:
        frame = pd.DataFrame([_row_values(row) for row in _review_rows(source)], columns=list(REVIEW_COLUMNS))
        frame["mask_rating"] = pd.to_numeric(frame["mask_rating"], errors="coerce").astype(float)
        frame["lam"] = frame["lam"].astype(float)
        frame = frame.sort_values(["reviewed_at", "review_id"], ascending=False, kind="stable")
    if latest_only and len(frame):
        frame = frame.sort_values(["reviewed_at", "review_id"], ascending=False, kind="stable")
        frame = frame.drop_duplicates(["analysis_id", "reviewer"], keep="first")
    return frame.reset_index(drop=True)


def _review_rows(source: Source) -> list[Any]:
    from feedback_db.store import FeedbackStore, _review_query, _row

    if isinstance(source, FeedbackStore):
        return source.query_reviews()
    if isinstance(source, Engine):
        with Session(source) as session:
            return [_row(*columns) for columns in session.execute(_review_query()).all()]
    if isinstance(source, str):
        with FeedbackStore(source) as store:
            return store.query_reviews()
    raise TypeError(f"cannot read reviews from {type(source).__name__}: pass a FeedbackStore, Engine, URL "
                    "or the frame of reviews_frame()")


def _row_values(row: Any) -> dict[str, Any]:
    return {column: getattr(row, column) for column in REVIEW_COLUMNS}


def findings_named(text: str) -> list[str]:
    """The official finding names a text mentions, each once, in the benchmark's name order."""
    found = set(_FINDING_PATTERN.findall((text or "").lower()))
    return sorted(found, key=_ORDER.__getitem__)


# --------------------------------------------------------------------------------------- agreement

def _verdict_counts(frame: pd.DataFrame, by: str) -> pd.DataFrame:
    """Verdict counts and shares per value of ``by`` (the column keeps that name)."""
    columns = [by, "reviews", *VERDICTS, "agreement_rate", "partly_rate", "disagreement_rate", "corrected"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    counts = pd.crosstab(frame[by], frame["verdict"]).reindex(columns=list(VERDICTS), fill_value=0)
    out = counts.reset_index()
    out.columns.name = None
    out["reviews"] = counts.sum(axis=1).to_numpy()
    out["agreement_rate"] = out["agree"] / out["reviews"]
    out["partly_rate"] = out["partly"] / out["reviews"]
    out["disagreement_rate"] = out["disagree"] / out["reviews"]
    corrected = frame.assign(_c=frame["corrected_answer"].fillna("").str.strip() != "").groupby(by)["_c"].sum()
    out["corrected"] = out[by].map(corrected).fillna(0).astype(int)
    return out[columns]


def agreement_by_question_type(source: Source) -> pd.DataFrame:
    """How often reviewers agree with the model, per question family.

    Returns:
        One row per family (the benchmark's seven in their order, then any other, e.g. "other"), columns
        question_type, reviews (int: latest reviews), agree, partly, disagree (int),
        agreement_rate, partly_rate, disagreement_rate (float: that verdict's share of the reviews), corrected
        (int: reviews with a corrected answer).
    """
    out = _verdict_counts(reviews_frame(source), "question_type")
    rank = {name: i for i, name in enumerate(QUESTION_TYPES)}
    return out.sort_values("question_type", key=lambda s: s.map(lambda x: (rank.get(x, len(rank)), x)),
                           kind="stable").reset_index(drop=True)


def agreement_by_finding(source: Source) -> pd.DataFrame:
    """How often reviewers agree with the model, per finding the question, answer or correction names.

    A review naming several findings counts once for each; a review naming none (e.g. a view question) is in
    no row.

    Returns:
        One row per finding named at least once, most reviewed first, columns finding, reviews (int: latest
        reviews), agree, partly, disagree (int), agreement_rate, partly_rate, disagreement_rate (float: that
        verdict's share of the reviews), corrected (int: reviews with a corrected answer).
    """
    frame = reviews_frame(source)
    if frame.empty:
        return _verdict_counts(frame.assign(finding=[]), "finding")
    named = [findings_named(" ".join((q, a, c))) for q, a, c in
             zip(frame["question"], frame["answer"], frame["corrected_answer"].fillna(""))]
    exploded = frame.assign(finding=named).explode("finding").dropna(subset=["finding"])
    out = _verdict_counts(exploded, "finding")
    out["_order"] = out["finding"].map(_ORDER)
    return out.sort_values(["reviews", "_order"], ascending=[False, True]).drop(columns="_order").reset_index(drop=True)


def agreement_by_reviewer(source: Source) -> pd.DataFrame:
    """How often each reviewer agrees with the model, and how many mask ratings they gave.

    Returns:
        One row per reviewer, by name, columns reviewer, reviews (int: latest reviews), agree, partly,
        disagree (int), agreement_rate, partly_rate, disagreement_rate (float: that verdict's share of the
        reviews), corrected (int: reviews with a corrected answer), mask_ratings (int), mean_mask_rating (float,
        NaN when none).
    """
    frame = reviews_frame(source)
    out = _verdict_counts(frame, "reviewer")
    ratings = frame.groupby("reviewer")["mask_rating"] if len(frame) else None
    out["mask_ratings"] = out["reviewer"].map(ratings.count()).fillna(0).astype(int) if ratings is not None else []
    out["mean_mask_rating"] = out["reviewer"].map(ratings.mean()).astype(float) if ratings is not None else []
    return out.sort_values("reviewer").reset_index(drop=True)


# ------------------------------------------------------------------------------- difference answers

def _parse(answer: str) -> dict[str, tuple[str, ...]] | None:
    """finding -> ("added",) | ("missing",) | ("level", before, after); None when outside the grammar."""
    text = (answer or "").strip().lower()
    if difference_answer_problems(text):
        return None
    sentence = text if text == NOTHING_CHANGED else text + " "
    levels, added, missing = parse_difference_answer(sentence)
    stated: dict[str, tuple[str, ...]] = {name: ("level", before, after) for name, before, after in levels}
    stated.update({name: ("added",) for name in added})
    stated.update({name: ("missing",) for name in missing})
    return stated


def difference_error_items(answer: str, truth: str) -> list[tuple[str, str]] | None:
    """Compare one difference answer with the true one, finding by finding.

    Args:
        answer: the model's difference answer.
        truth: the answer it should have given (a reviewer's correction).

    Returns:
        (finding, outcome) per finding either names, in name order; outcome is ``correct`` (same change, same
        level words), ``missed`` (only the truth names it), ``invented`` (only the answer names it),
        ``wrong_level`` (both say its level changed, with other level words) or ``wrong_direction`` (both name
        it, as different changes: added vs missing vs level). None when ``truth`` is not a sentence of the
        benchmark's difference grammar; an ungrammatical ``answer`` is read as stating nothing (everything the
        truth names is missed).
    """
    expected = _parse(truth)
    if expected is None:
        return None
    stated = _parse(answer) or {}
    items = []
    for name in sorted(set(expected) | set(stated), key=lambda n: (_ORDER.get(n, len(_ORDER)), n)):
        want, got = expected.get(name), stated.get(name)
        if got is None:
            outcome = "missed"
        elif want is None:
            outcome = "invented"
        elif want == got:
            outcome = "correct"
        elif want[0] == got[0] == "level":
            outcome = "wrong_level"
        else:
            outcome = "wrong_direction"
        items.append((name, outcome))
    return items


def _difference_truth(row: pd.Series) -> str | None:
    correction = str(row["corrected_answer"] or "").strip()
    if correction:
        return correction
    return str(row["answer"]) if row["verdict"] == "agree" else None


def difference_errors(source: Source) -> pd.DataFrame:
    """What the model's difference answers got wrong, per finding, against the reviewers' corrections.

    Counts only difference questions whose truth is known (see the module docstring); each review contributes
    one outcome per finding that its answer or its truth names.

    Returns:
        One row per finding, most errors first, columns finding, reviews (int: reviews naming it), correct,
        missed, invented, wrong_level, wrong_direction (int), error_rate (float: errors / reviews). An empty
        frame with these columns when no difference review has a usable truth.
    """
    columns = ["finding", "reviews", "correct", *ERROR_KINDS, "error_rate"]
    frame = reviews_frame(source)
    frame = frame[frame["question_type"] == "difference"] if len(frame) else frame
    counts: dict[str, Counter[str]] = {}
    for _, row in frame.iterrows():
        truth = _difference_truth(row)
        items = difference_error_items(str(row["answer"]), truth) if truth is not None else None
        for name, outcome in items or []:
            counts.setdefault(name, Counter())[outcome] += 1
    if not counts:
        return pd.DataFrame(columns=columns)
    out = pd.DataFrame([{"finding": name, **{k: c[k] for k in ("correct", *ERROR_KINDS)}}
                        for name, c in counts.items()])
    out["reviews"] = out[["correct", *ERROR_KINDS]].sum(axis=1)
    out["error_rate"] = out[list(ERROR_KINDS)].sum(axis=1) / out["reviews"]
    out["_errors"] = out[list(ERROR_KINDS)].sum(axis=1)
    out["_order"] = out["finding"].map(lambda n: _ORDER.get(n, len(_ORDER)))
    out = out.sort_values(["_errors", "_order"], ascending=[False, True])
    return out[columns].reset_index(drop=True)


def difference_coverage(source: Source) -> dict[str, int]:
    """How many difference reviews the error counts could use, and why the others were left out.

    Returns:
        {"difference_reviews", "used", "agree_without_correction" (used: the answer is confirmed),
        "no_correction" (partly / disagree with no corrected answer), "ungrammatical_correction"}.
    """
    frame = reviews_frame(source)
    frame = frame[frame["question_type"] == "difference"] if len(frame) else frame
    out = {"difference_reviews": len(frame), "used": 0, "agree_without_correction": 0, "no_correction": 0,
           "ungrammatical_correction": 0}
    for _, row in frame.iterrows():
        truth = _difference_truth(row)
        if truth is None:
            out["no_correction"] += 1
        elif _parse(truth) is None:
            out["ungrammatical_correction"] += 1
        else:
            out["used"] += 1
            out["agree_without_correction"] += not str(row["corrected_answer"] or "").strip()
    return out


# ------------------------------------------------------------------------------ inter-reviewer kappa

def cohen_kappa(first: Sequence[str], second: Sequence[str]) -> float:
    """Cohen's kappa of two raters' nominal labels on the same items (Cohen 1960).

    kappa = (p_o - p_e) / (1 - p_e), p_o the share of items labelled alike, p_e the share expected by chance
    from each rater's own label frequencies.

    Returns:
        kappa in [-1, 1]; NaN when there are no items or chance agreement is already 1 (both raters used one
        and the same label throughout: kappa is undefined).
    """
    if len(first) != len(second):
        raise ValueError(f"the raters labelled {len(first)} and {len(second)} items; kappa needs the same items")
    n = len(first)
    if n == 0:
        return float("nan")
    observed = sum(a == b for a, b in zip(first, second)) / n
    left, right = Counter(first), Counter(second)
    expected = sum(left[label] * right[label] for label in left) / (n * n)
    return float("nan") if expected == 1 else (observed - expected) / (1 - expected)


def fleiss_kappa(counts: np.ndarray | Sequence[Sequence[int]]) -> float:
    """Fleiss' kappa of many raters on nominal categories (Fleiss 1971).

    Args:
        counts: (N items, k categories): how many raters put item i in category j. Every item needs at least two
            ratings; items may have different numbers of raters (then P_i uses each item's own n_i, the usual
            generalisation; with a constant n it is exactly Fleiss' statistic).

    Returns:
        kappa = (P_bar - P_e) / (1 - P_e); NaN when there are no items or P_e is 1.
    """
    table = np.asarray(counts, dtype=float)  # (N, k)
    if table.size == 0:
        return float("nan")
    raters = table.sum(axis=1)  # (N,)
    if (raters < 2).any():
        raise ValueError("every item needs at least two ratings for Fleiss' kappa")
    agreement = ((table * table).sum(axis=1) - raters) / (raters * (raters - 1))  # P_i, (N,)
    shares = table.sum(axis=0) / raters.sum()  # p_j, (k,)
    expected = float((shares * shares).sum())
    return float("nan") if expected == 1 else (float(agreement.mean()) - expected) / (1 - expected)


def _items(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (item, reviewer): the reviewer's latest verdict on that answer to that question and pair."""
    keyed = frame.assign(item=list(zip(frame["case_id"], frame["question"], frame["answer"])))
    keyed = keyed.sort_values(["reviewed_at", "review_id"], ascending=False, kind="stable")
    return keyed.drop_duplicates(["item", "reviewer"], keep="first")[["item", "reviewer", "verdict"]]


def inter_reviewer_agreement(source: Source) -> pd.DataFrame:
    """How much reviewers agree with each other on the same answers (verdicts as nominal categories).

    Returns:
        Columns measure ("cohen" per pair of reviewers who judged at least one common item, "fleiss" over the
        items three or more reviewers judged), reviewers (names joined by " | "), items (int), raters_per_item
        (str: "2", "3" or a range "3-5"), observed_agreement (float: share of agreeing pairs of verdicts),
        kappa (float; NaN where undefined, e.g. every verdict the same). Empty when no item was judged twice.
    """
    columns = ["measure", "reviewers", "items", "raters_per_item", "observed_agreement", "kappa"]
    frame = reviews_frame(source)
    if frame.empty:
        return pd.DataFrame(columns=columns)
    items = _items(frame)
    verdicts = items.pivot(index="item", columns="reviewer", values="verdict")  # (items, reviewers)
    rows = []
    for a, b in itertools.combinations(sorted(verdicts.columns), 2):
        both = verdicts[[a, b]].dropna()
        if len(both):
            first, second = both[a].tolist(), both[b].tolist()
            rows.append({"measure": "cohen", "reviewers": f"{a} | {b}", "items": len(both), "raters_per_item": "2",
                         "observed_agreement": float(np.mean([x == y for x, y in zip(first, second)])),
                         "kappa": cohen_kappa(first, second)})
    per_item = verdicts.notna().sum(axis=1)
    many = verdicts[per_item >= 3]
    if len(many):
        table = np.stack([[(row == verdict).sum() for verdict in VERDICTS] for _, row in many.iterrows()])  # (N, 3)
        n = table.sum(axis=1)
        pairs_alike = ((table * (table - 1)).sum(axis=1) / (n * (n - 1))).mean()
        who = sorted(many.columns[many.notna().any(axis=0)])
        rows.append({"measure": "fleiss", "reviewers": " | ".join(who), "items": len(many),
                     "raters_per_item": str(n.min()) if n.min() == n.max() else f"{n.min()}-{n.max()}",
                     "observed_agreement": float(pairs_alike), "kappa": fleiss_kappa(table)})
    return pd.DataFrame(rows, columns=columns)


# -------------------------------------------------------------------------------- masks and lambda

def mask_rating_by_lambda(source: Source, bins: int = 5) -> pd.DataFrame:
    """Mask ratings (1 useless - 5 exact) against the fusion weight lambda the masks were made with.

    Args:
        source: see the module docstring.
        bins: equal-width lambda bins over [0, 1] (the last one closed at 1).

    Returns:
        One row per bin, low lambda first, every bin present (ratings 0 when empty), columns lambda_bin (str,
        e.g. "0.2-0.4"), lambda_low, lambda_high (float), ratings (int: rated reviews), mean_rating (float, NaN
        when none), rating_1 .. rating_5 (int counts).
    """
    if bins < 1:
        raise ValueError("bins must be at least 1")
    edges = np.linspace(0.0, 1.0, bins + 1)
    frame = reviews_frame(source)
    rated = frame.dropna(subset=["mask_rating"]) if len(frame) else frame
    index = (np.clip(np.searchsorted(edges, rated["lam"].to_numpy(float), side="right") - 1, 0, bins - 1)
             if len(rated) else np.array([], dtype=int))
    rows = []
    for b in range(bins):
        ratings = rated["mask_rating"].to_numpy(float)[index == b] if len(rated) else np.array([])
        row: dict[str, Any] = {"lambda_bin": f"{edges[b]:.1f}-{edges[b + 1]:.1f}" if bins <= 10
                               else f"{edges[b]:.2f}-{edges[b + 1]:.2f}",
                               "lambda_low": float(edges[b]), "lambda_high": float(edges[b + 1]),
                               "ratings": int(len(ratings)),
                               "mean_rating": float(ratings.mean()) if len(ratings) else float("nan")}
        row.update({f"rating_{r}": int((ratings == r).sum()) for r in range(1, 6)})
        rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------- the summary

def error_summary(source: Source, *, lambda_bins: int = 5) -> pd.DataFrame:
    """Every table above in one long frame: what the app's ``/error_summary`` endpoint returns.

    Args:
        source: a FeedbackStore, Engine, URL or :func:`reviews_frame` frame.
        lambda_bins: bins of :func:`mask_rating_by_lambda`.

    Returns:
        Columns ``SUMMARY_COLUMNS``; a column that does not apply to a section is NaN. ``section`` says which
        table a row comes from, in this order:

        * ``overall`` (group "all reviews"), ``question_type``, ``finding``, ``reviewer``: n = reviews, agree /
          partly / disagree counts, agreement_rate; mean_mask_rating on overall and reviewer rows.
        * ``difference_errors``: group = finding, n = difference reviews naming it, correct, missed, invented,
          wrong_level, wrong_direction; plus a first row group "all findings" with the totals.
        * ``inter_reviewer``: group = "cohen: A | B" or "fleiss: A | B | C", n = items, observed_agreement, kappa.
        * ``mask_vs_lambda``: group = lambda bin ("0.4-0.6"), n = ratings, mean_mask_rating.
    """
    frame = reviews_frame(source)
    parts: list[pd.DataFrame] = []

    def verdict_rows(section: str, table: pd.DataFrame, by: str) -> pd.DataFrame:
        out = pd.DataFrame({"section": section, "group": table[by].astype(str), "n": table["reviews"],
                            **{k: table[k] for k in (*VERDICTS, "agreement_rate")}})
        if "mean_mask_rating" in table:
            out["mean_mask_rating"] = table["mean_mask_rating"]
        return out

    overall = _verdict_counts(frame.assign(_all="all reviews"), "_all")
    if overall.empty:  # an empty store still says so in its first row
        overall = pd.DataFrame([{"_all": "all reviews", "reviews": 0, **dict.fromkeys(VERDICTS, 0),
                                 "agreement_rate": float("nan")}])
    overall["mean_mask_rating"] = frame["mask_rating"].mean() if len(frame) else float("nan")
    parts.append(verdict_rows("overall", overall, "_all"))
    parts.append(verdict_rows("question_type", agreement_by_question_type(frame), "question_type"))
    parts.append(verdict_rows("finding", agreement_by_finding(frame), "finding"))
    parts.append(verdict_rows("reviewer", agreement_by_reviewer(frame), "reviewer"))

    errors = difference_errors(frame)
    if len(errors):
        total = errors[["reviews", "correct", *ERROR_KINDS]].sum().to_dict()
        errors = pd.concat([pd.DataFrame([{"finding": "all findings", **total}]), errors], ignore_index=True)
        parts.append(pd.DataFrame({"section": "difference_errors", "group": errors["finding"], "n": errors["reviews"],
                                   **{k: errors[k] for k in ("correct", *ERROR_KINDS)}}))
    kappas = inter_reviewer_agreement(frame)
    if len(kappas):
        parts.append(pd.DataFrame({"section": "inter_reviewer", "group": kappas["measure"] + ": " + kappas["reviewers"],
                                   "n": kappas["items"], "observed_agreement": kappas["observed_agreement"],
                                   "kappa": kappas["kappa"]}))
    masks = mask_rating_by_lambda(frame, bins=lambda_bins)
    parts.append(pd.DataFrame({"section": "mask_vs_lambda", "group": masks["lambda_bin"], "n": masks["ratings"],
                               "mean_mask_rating": masks["mean_rating"]}))
    parts = [part for part in parts if len(part)]
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    out = out.reindex(columns=list(SUMMARY_COLUMNS))
    for column in ("n", *VERDICTS, "correct", *ERROR_KINDS):
        out[column] = out[column].astype("Int64")
    for column in ("agreement_rate", "observed_agreement", "kappa", "mean_mask_rating"):
        out[column] = out[column].astype(float)
    return out


def write_error_summary_csv(source: Source, path: str | Path, *, lambda_bins: int = 5) -> Path:
    """Write :func:`error_summary` as CSV (UTF-8, header row, empty cells for NaN), replacing ``path`` atomically.

    Group names (reviewer names are free text) are neutralised for spreadsheets as in the export zip
    (:func:`feedback_db.export.neutralise_cell`): a name such as ``=HYPERLINK(...)`` is shown, never evaluated.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from feedback_db.export import neutralise_cell

    table = error_summary(source, lambda_bins=lambda_bins)
    table["group"] = table["group"].map(neutralise_cell)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            table.to_csv(stream, index=False, float_format="%.4g")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def summary_frames(source: Source, *, lambda_bins: int = 5) -> dict[str, pd.DataFrame]:
    """Each table under its own name, from one read of the store (for a tab that draws one chart per table).

    Returns:
        {"question_type", "finding", "reviewer", "difference_errors", "inter_reviewer", "mask_vs_lambda"} ->
        the frames of the functions above, plus "reviews" -> :func:`reviews_frame`.
    """
    frame = reviews_frame(source)
    return {
        "reviews": frame,
        "question_type": agreement_by_question_type(frame),
        "finding": agreement_by_finding(frame),
        "reviewer": agreement_by_reviewer(frame),
        "difference_errors": difference_errors(frame),
        "inter_reviewer": inter_reviewer_agreement(frame),
        "mask_vs_lambda": mask_rating_by_lambda(frame, bins=lambda_bins),
    }
