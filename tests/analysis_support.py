"""A review store filled with a few hundred plausible reviews, for the Error analysis tab's tests and screenshots.

Cases are synthetic visits (``diffvqa_core.data.findings``) with their true difference answers in the benchmark
grammar. The simulated model gets about half of them right and otherwise misses a change, invents a finding or
names a wrong level; four reviewers judge them, several on the same answers (for the kappas), mostly true to
the answer and with their own leniency, and give the true answer as the correction most times they do not
agree. A fifth of the questions are presence questions. Mask ratings peak at a middle lambda.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from diffvqa_core.data.findings import CATALOGUE, draw_finding, first_visit, next_visit
from diffvqa_core.data.grammar import difference_answer

DIFFERENCE = "what has changed compared to the reference image?"
REVIEWERS = ("Dr. Adams", "Dr. Baker", "Dr. Chen", "Dr. Diaz")
LENIENCY = {"Dr. Adams": 0.05, "Dr. Baker": 0.15, "Dr. Chen": 0.0, "Dr. Diaz": 0.25}
"""Chance that a reviewer calls a wrong answer 'partly' instead of 'disagree' (and a right one 'partly')."""


def _model_visit(main: dict, ref: dict, rng: np.random.Generator) -> dict:
    """The findings the simulated model reads on the main film: the truth, or it with one mistake."""
    seen = dict(main)
    mistake = rng.choice(["none", "missed", "invented", "level"], p=[0.45, 0.25, 0.15, 0.15])
    changed = [name for name in set(main) | set(ref) if main.get(name) != ref.get(name)]
    if mistake == "missed" and changed:
        name = str(rng.choice(sorted(changed)))
        if name in ref:
            seen[name] = ref[name]
        else:
            del seen[name]
    elif mistake == "invented":
        absent = sorted(name for name in CATALOGUE if name not in main and name not in ref)
        name = str(rng.choice(absent))
        seen[name] = draw_finding(name, rng)
    elif mistake == "level":
        leveled = sorted(name for name in seen if CATALOGUE[name].levels and name in ref)
        if leveled:
            name = str(rng.choice(leveled))
            levels = [lv for lv in CATALOGUE[name].levels if lv not in (seen[name].level, ref[name].level)]
            if levels:
                seen[name] = replace(seen[name], level=str(rng.choice(levels)))
    return seen


def fill_reviews(store, cases: int = 160, seed: int = 0, checkpoint: str = "demo") -> int:
    """Record ``cases`` analyses and their reviews (about 1.7 per analysis) in ``store``; returns the reviews."""
    rng = np.random.default_rng(seed)
    reviews = 0
    for case in range(cases):
        ref = first_visit(rng)
        main = next_visit(ref, rng)
        lam = float(rng.choice([0.1, 0.3, 0.5, 0.7, 0.9]))
        if rng.random() < 0.2:
            name = str(rng.choice(sorted(CATALOGUE)))
            question, family = f"is there {name}?", "presence"
            truth = "yes" if name in main else "no"
            answer = truth if rng.random() < 0.7 else ("no" if truth == "yes" else "yes")
        else:
            question, family = DIFFERENCE, "difference"
            truth = difference_answer(main, ref).strip()
            answer = difference_answer(_model_visit(main, ref, rng), ref).strip()
        analysis_id = store.record_analysis(
            main_sha256=f"{2 * case + 1:064x}", ref_sha256=f"{2 * case + 2:064x}", question=question,
            question_type=family, answer=answer, lam=lam, theta=[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
            checkpoint_name=checkpoint, checkpoint_sha256=(checkpoint.encode().hex() * 64)[:64],
            model_name="diffvqa-tiny")
        count = int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
        for reviewer in rng.choice(REVIEWERS, size=count, replace=False):
            right = answer == truth
            if rng.random() < 0.08:  # a second look that goes the other way
                right = not right
            if right:
                verdict = "partly" if rng.random() < LENIENCY[reviewer] / 2 else "agree"
            else:
                verdict = "partly" if rng.random() < 0.2 + LENIENCY[reviewer] else "disagree"
            correction = truth if verdict != "agree" and family == "difference" and rng.random() < 0.8 else ""
            quality = 4.2 - 5.0 * (lam - 0.55) ** 2 + rng.normal(0, 0.8)
            rating = int(np.clip(round(quality), 1, 5)) if rng.random() < 0.8 else None
            store.record_review(analysis_id=analysis_id, reviewer=str(reviewer), verdict=verdict,
                                corrected_answer=correction, mask_rating=rating)
            reviews += 1
    return reviews
