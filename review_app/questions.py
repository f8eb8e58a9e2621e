"""The question picker's choices and the family (question type) of a typed question."""

from __future__ import annotations

import re

from diffvqa_core.data.vocabulary import QUESTION_TEMPLATES, QUESTION_TYPES, example_questions

OTHER = "other"


def _pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{[a-z_]+\}", template)
    return re.compile("^" + ".+?".join(re.escape(part) for part in parts) + "$", re.IGNORECASE)


_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    (family, _pattern(form)) for family, forms in QUESTION_TEMPLATES.items() for form in forms
]


def question_type(question: str) -> str:
    """The benchmark family whose grammar the question follows, else ``"other"``.

    Args:
        question: free text as typed or picked.

    Returns:
        One of :data:`QUESTION_TYPES` or ``"other"``.
    """
    text = " ".join(question.strip().split())
    for family, pattern in _PATTERNS:
        if pattern.match(text):
            return family
    return OTHER


def question_choices() -> list[str]:
    """Example questions of every family, difference first (the question this app is about)."""
    examples = example_questions()
    order = ["difference"] + [family for family in QUESTION_TYPES if family != "difference"]
    return [question for family in order for question in examples.get(family, [])]
