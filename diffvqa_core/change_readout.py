"""Difference answers read from the change encoder's heads (not in the paper: ``difference_readout: change_heads``).

The change encoder (``diffvqa_core.change``) is trained to say, per finding, whether it was added, went missing or
changed level, with the levels and the location. Its reading can be written straight into the benchmark's
answer grammar, and on fresh synthetic pairs that reading names the changes far better than the answer decoder
does from the same encoder's tokens (MODEL_CARD.md). This module writes those answers for the two difference
question forms:

- "what has changed compared to the reference image?": every finding read as changed (``read_findings``, with the
  change threshold), as level sentences, additions and removals; with a pair gate (``change_gate``), the pair
  head's P(any change) decides whether anything changed, and a pair it calls changed names at least its most
  likely change;
- "what has changed in the {region} area?": the benchmark asks it when a finding located there (never bilateral)
  changed level, and answers that one level sentence; the reading names the finding allowed in that region whose
  level most likely changed there, with the most likely pair of two different levels.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from diffvqa_core.answer_grammar import question_form
from diffvqa_core.change import ChangeOutput, read_findings
from diffvqa_core.data.finding_labels import CHANGES, LABELLED_FINDINGS, LOCATIONS, decode_pair
from diffvqa_core.data.findings import CATALOGUE
from diffvqa_core.data.grammar import difference_answer, level_sentence
from diffvqa_core.data.vocabulary import LEVEL_WORDS, NOTHING_CHANGED, QUESTION_TEMPLATES

WHOLE_IMAGE, REGIONAL = ("difference", 0), ("difference", 1)
_REGION = re.compile(re.escape(QUESTION_TEMPLATES["difference"][1]).replace(re.escape("{region}"), "(.+)"),
                     re.IGNORECASE)
_SIDES = {"left lung": "left", "right lung": "right"}  # the benchmark's region for a one-sided finding


def answers_from_heads(output: ChangeOutput, questions: list[str], unchanged_below: float,
                       any_change_from: float | None = None) -> list[str | None]:
    """The heads' answer to each question of the batch (row i of ``output`` is question i's pair), or None for a
    question that is not one of the two difference forms. ``any_change_from``: the pair gate (``gated_thresholds``)."""
    forms = [question_form(q) for q in questions]
    if WHOLE_IMAGE in forms:
        thresholds = unchanged_below if any_change_from is None else gated_thresholds(output, unchanged_below,
                                                                                      any_change_from)
        whole = difference_answers(output, thresholds)
    else:
        whole = []
    out: list[str | None] = []
    for i, (question, form) in enumerate(zip(questions, forms)):
        if form == WHOLE_IMAGE:
            out.append(whole[i])
        elif form == REGIONAL:
            out.append(regional_answer(output, i, question_region(question)))
        else:
            out.append(None)
    return out


def difference_answers(output: ChangeOutput, unchanged_below: float | torch.Tensor | None = None) -> list[str]:
    """The whole-image difference answer of every pair (``read_findings`` in the benchmark's grammar), stripped."""
    return [difference_answer(*decode_pair(rows)).strip() for rows in read_findings(output, unchanged_below)]


@torch.no_grad()
def gated_thresholds(output: ChangeOutput, unchanged_below: float, any_change_from: float) -> torch.Tensor:
    """Per-pair change thresholds (B,) for ``read_findings`` under the pair gate (not in the paper).

    A pair whose ``any_change`` head gives P(any change) below ``any_change_from`` reads every finding as unchanged
    (threshold 0: "nothing has changed."); a pair at or above it reads its findings with ``unchanged_below``, raised
    for that pair just above its lowest P(unchanged) when no finding would pass, so that its most likely change is
    named rather than "nothing has changed.".
    """
    p_unchanged = torch.softmax(output.finding_logits["change"].float().cpu(), dim=-1)[..., CHANGES.index("unchanged")]
    changed = torch.sigmoid(output.pair_logits["any_change"].float().cpu().reshape(-1)) >= any_change_from
    lowest = p_unchanged.min(dim=1).values
    naming_one = torch.nextafter(lowest, torch.ones_like(lowest))  # the lowest is then below it: read as changed
    thresholds = torch.maximum(torch.full_like(lowest, unchanged_below), naming_one)
    return torch.where(changed, thresholds, torch.zeros_like(lowest))


def question_region(question: str) -> str:
    """The location word a regional difference question asks about ("left lung" -> "left")."""
    match = _REGION.fullmatch(" ".join(question.strip().split()))
    if match is None:
        raise ValueError(f"not a regional difference question: {question!r}")
    region = match.group(1).lower()
    return _SIDES.get(region, region)


@torch.no_grad()
def regional_answer(output: ChangeOutput, index: int, location: str) -> str:
    """The level sentence for pair ``index``: of the findings with levels that may lie at ``location``, the one
    whose P(level changed) x P(at that location) is highest, with its most likely pair of different levels."""
    logits = {c: output.finding_logits[c][index].float().cpu() for c in ("change", "location", "level_ref",
                                                                         "level_main")}
    changed = torch.softmax(logits["change"], dim=-1)[:, CHANGES.index("level")]
    candidates = []
    for k, name in enumerate(LABELLED_FINDINGS):
        spec = CATALOGUE[name]
        if len(spec.levels) >= 2 and location in spec.locations:
            at = torch.softmax(logits["location"][k], dim=-1)[LOCATIONS.index(location)]
            candidates.append((float(changed[k] * at), k, name))
    if not candidates:  # a region no finding with levels may occupy: the most likely located level change
        candidates = [(float(changed[k]), k, name) for k, name in enumerate(LABELLED_FINDINGS)
                      if len(CATALOGUE[name].levels) >= 2 and set(CATALOGUE[name].locations) - {"bilateral"}]
    _, k, name = max(candidates)
    levels = [LEVEL_WORDS.index(word) for word in CATALOGUE[name].levels]
    before_scores, after_scores = logits["level_ref"][k].numpy(), logits["level_main"][k].numpy()
    pairs = [(a, b) for a in levels for b in levels if a != b]
    before, after = pairs[int(np.argmax([before_scores[a] + after_scores[b] for a, b in pairs]))]
    return level_sentence(name, LEVEL_WORDS[before], LEVEL_WORDS[after]).strip()


def labels_from_answer(question: str, answer: str) -> tuple[np.ndarray, np.ndarray]:
    """The change heads' targets that a difference answer states (the inverse of the readout), for training the
    heads on answers without synthetic ground truth, such as a reviewer's corrections.

    Returns (finding rows (K, 7), pair row (2,)) in ``finding_labels``' layout, ``IGNORE`` wherever the answer is
    silent: the whole-image form says what happened to every finding (one it does not name is unchanged; whether
    it is present is not said), the regional form only which finding changed level; any other question, or an
    answer outside the benchmark's grammar, states nothing.
    """
    from diffvqa_core.data.finding_labels import FINDING_COLUMNS, IGNORE, PAIR_COLUMNS
    from diffvqa_core.data.grammar import difference_answer_problems, parse_difference_answer

    rows = np.full((len(LABELLED_FINDINGS), len(FINDING_COLUMNS)), IGNORE, dtype=np.int64)
    pair = np.full(len(PAIR_COLUMNS), IGNORE, dtype=np.int64)
    form = question_form(question)
    if form not in (WHOLE_IMAGE, REGIONAL) or difference_answer_problems(answer):
        return rows, pair
    column = {name: i for i, name in enumerate(FINDING_COLUMNS)}
    text = answer.strip()
    levels, added, missing = parse_difference_answer(text + " ") if text != NOTHING_CHANGED else ([], [], [])
    if form == WHOLE_IMAGE:
        rows[:, column["change"]] = CHANGES.index("unchanged")
    for name, before, after in levels:
        k = LABELLED_FINDINGS.index(name)
        rows[k, [column["present_ref"], column["present_main"]]] = 1
        rows[k, column["level_ref"]] = LEVEL_WORDS.index(before)
        rows[k, column["level_main"]] = LEVEL_WORDS.index(after)
        rows[k, column["change"]] = CHANGES.index("level")
    for names, change, ref_there in ((added, "added", 0), (missing, "missing", 1)):
        for name in names:
            k = LABELLED_FINDINGS.index(name)
            rows[k, column["present_ref"]], rows[k, column["present_main"]] = ref_there, 1 - ref_there
            rows[k, column["change"]] = CHANGES.index(change)
    pair[PAIR_COLUMNS.index("any_change")] = int(bool(levels or added or missing))
    return rows, pair
