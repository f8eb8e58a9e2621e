"""The constant-answer baseline: for each question, the answer most often given to that question text in training.

It looks at no image. A model that does not beat it has learned the answer distribution, not the films:
``python -m train evaluate`` scores it on the same rows with the same protocol and reports the model's
difference CIDEr as a multiple of it. A question text never seen in training gets the most frequent training
answer of its family (and of all rows when the family is new).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from diffvqa_core.data.layout import QUESTIONS_CSV


def most_frequent_answers(rows: Iterable[Mapping[str, str]]) -> tuple[dict[str, str], dict[str, str], str]:
    """(answer by question text, answer by family, overall answer): the most frequent of each (ties: first seen)."""
    by_question: dict[str, Counter] = defaultdict(Counter)
    by_family: dict[str, Counter] = defaultdict(Counter)
    overall: Counter = Counter()
    for row in rows:
        by_question[row["question"]][row["answer"]] += 1
        by_family[row["question_type"]][row["answer"]] += 1
        overall[row["answer"]] += 1
    if not overall:
        raise ValueError("the constant-answer baseline needs training rows")
    top = {name: counts.most_common(1)[0][0] for name, counts in by_question.items()}
    family = {name: counts.most_common(1)[0][0] for name, counts in by_family.items()}
    return top, family, overall.most_common(1)[0][0]


class ConstantAnswers:
    """Answers each question with the most frequent training answer to its text (see the module docstring).

    Args:
        data_root: the benchmark directory whose ``train`` split is counted.
    """

    def __init__(self, data_root: str | Path) -> None:
        questions = pd.read_csv(Path(data_root) / QUESTIONS_CSV, dtype=str, keep_default_na=False)
        train = questions[questions["split"] == "train"]
        self.by_question, self.by_family, self.overall = most_frequent_answers(train.to_dict("records"))

    def __call__(self, question: str, question_type: str) -> str:
        """The baseline's answer to one question."""
        return self.by_question.get(question, self.by_family.get(question_type, self.overall))
