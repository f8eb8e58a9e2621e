"""The answers the benchmark could write to a question, as a grammar a decoder can be held to.

Medical-Diff-VQA's answers come from templates (``diffvqa_core.data.vocabulary``): a question's form decides the
form of its answer ("yes" / "no", a level word, "{location} area", a list of finding names, or the difference
sentences). ``AnswerGrammar.for_question`` recognises the question's form and returns a grammar of its answers:
a regular expression over the benchmark's words, matched with the ``regex`` module's partial matching (is this
text the beginning of some answer?), plus the checks a regular expression cannot make (a level "change" must
change the level, a finding is named once, never both added and missing: the rules of
``grammar.difference_answer_problems``). Questions of no known form get no grammar (free text).

Matching is case-insensitive and ignores one trailing space (the benchmark's difference sentences end in ". ").
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import regex

from diffvqa_core.data.grammar import parse_difference_answer, split_items
from diffvqa_core.data.vocabulary import (ADDITION_MANY, ADDITION_ONE, FINDINGS, LEVEL_CHANGE_SENTENCE, LEVEL_WORDS,
                                          LOCATION_WORDS, NOTHING_CHANGED, QUESTION_TEMPLATES, REMOVAL_MANY,
                                          REMOVAL_ONE, TYPE_WORDS, VIEWS)


def _alternatives(words) -> str:
    """A group matching any of ``words`` (longest first, so that "mild to moderate" is tried before "mild")."""
    return "(?:" + "|".join(regex.escape(w) for w in sorted(set(words), key=len, reverse=True)) + ")"


_NAME = _alternatives(FINDINGS)
_LEVEL = _alternatives(LEVEL_WORDS)
_NAMES = f"{_NAME}(?:, {_NAME})*"  # the abnormality answer: names joined by ", "
_MANY = f"{_NAME}(?:, {_NAME})*, and {_NAME}"  # the difference lists: "a, and b" / "a, b, and c"


def _sentence(template: str, **slots: str) -> str:
    """A vocabulary sentence template as a pattern, each slot replaced by its pattern, ending in ". "."""
    pattern = regex.escape(template)
    for name, slot in slots.items():
        pattern = pattern.replace(regex.escape("{" + name + "}"), slot)
    return pattern + " "


_LEVEL_SENTENCE = _sentence(LEVEL_CHANGE_SENTENCE, finding=_NAME, before=_LEVEL, after=_LEVEL)
_DIFFERENCE = (
    f"(?:{regex.escape(NOTHING_CHANGED)}"
    f"|(?=.)(?:{_LEVEL_SENTENCE})*"
    f"(?:{_sentence(ADDITION_ONE, finding=_NAME)}|{_sentence(ADDITION_MANY, findings=_MANY)})?"
    f"(?:{_sentence(REMOVAL_ONE, finding=_NAME)}|{_sentence(REMOVAL_MANY, findings=_MANY)})?)"
)
_YES_NO = "(?:yes|no)"
_LOCATION = f"{_alternatives(LOCATION_WORDS)}(?: {_alternatives(LOCATION_WORDS)})*"

# The answer pattern of each question form: (family, index of the form in QUESTION_TEMPLATES[family]).
ANSWER_PATTERNS: dict[tuple[str, int], str] = {
    ("abnormality", 0): _NAMES, ("abnormality", 1): _NAMES, ("abnormality", 2): _YES_NO,
    ("presence", 0): _YES_NO, ("presence", 1): _YES_NO, ("presence", 2): _YES_NO, ("presence", 3): _YES_NO,
    ("view", 0): f"{_alternatives(VIEWS)} view", ("view", 1): _YES_NO, ("view", 2): _YES_NO,
    ("location", 0): f"{_LOCATION} area", ("location", 1): f"{_LOCATION} area",
    ("location", 2): "(?:left|right) side",
    ("level", 0): _LEVEL,
    ("type", 0): _alternatives(TYPE_WORDS),
    ("difference", 0): _DIFFERENCE,
    ("difference", 1): _LEVEL_SENTENCE,  # "what has changed in the {region} area?": one level sentence
}


def _question_pattern(template: str) -> re.Pattern:
    """A question template as a full-match pattern, each {slot} matching any text."""
    parts = re.split(r"\{[a-z_]+\}", template)
    return re.compile(".+".join(re.escape(p) for p in parts), re.IGNORECASE)


_QUESTION_FORMS = [((family, i), _question_pattern(form))
                   for family, forms in QUESTION_TEMPLATES.items() for i, form in enumerate(forms)]


def question_form(question: str) -> tuple[str, int] | None:
    """(family, form index) of a question written in one of the benchmark's forms, else None.

    The more specific form wins when two match ("is there {finding} in the {location} area?" over
    "is there {finding}?").
    """
    text = " ".join(question.strip().split())
    matches = [(form, len(pattern.pattern)) for form, pattern in _QUESTION_FORMS if pattern.fullmatch(text)]
    return max(matches, key=lambda m: m[1])[0] if matches else None


_NAME_SLOT_MARKERS = ("the level of ", "finding of ", "findings of ", ", and ", ", ")
_OPEN_LEVEL = regex.compile(f" from ({_LEVEL}) to ([a-z -]*)$")
_OPEN_LIST = regex.compile(r"(?:additional findings?|missing the findings?) of ((?:(?! than).)*)$")


def _difference_ok(text: str, complete: bool) -> bool:
    """The rules of a (partial) difference answer that its pattern cannot state, judged with look-ahead.

    A finding is named once (never both added and missing, never two level changes), and a level change names
    two different levels. For a partial answer the slot being written must still be completable under these
    rules: "... of edema, ed" is refused when edema is already named, "from mild to mi" is allowed (minimal).
    """
    levels, added, missing = parse_difference_answer(text)  # the finished sentences and lists only
    if any(before == after for _, before, after in levels):
        return False
    named = [name for name, _, _ in levels] + added + missing
    open_list = _OPEN_LIST.search(text)
    if open_list is not None:  # a list still being written: its finished items count
        items = split_items(open_list.group(1))
        named += items if complete else items[:-1]
    if len(named) != len(set(named)):
        return False
    if complete:
        return True
    marker = max(_NAME_SLOT_MARKERS, key=text.rfind)
    if text.rfind(marker) >= 0:
        partial = text[text.rfind(marker) + len(marker):].removeprefix("and ")
        candidates = [name for name in FINDINGS if name.startswith(partial)]
        if candidates and not any(name not in named for name in candidates):
            return False
    level = _OPEN_LEVEL.search(text)
    if level is not None:
        before, partial = level.group(1), level.group(2)
        if not any(word.startswith(partial) and word != before for word in LEVEL_WORDS):
            return False
    return True


@dataclass(frozen=True)
class AnswerGrammar:
    """The answers of one question form (see the module docstring)."""

    family: str
    form: int

    @classmethod
    def for_question(cls, question: str) -> AnswerGrammar | None:
        """The grammar of a question's answers, or None for a question in no known form."""
        form = question_form(question)
        return cls(*form) if form is not None else None

    @functools.cached_property
    def pattern(self) -> regex.Pattern:
        """The compiled answer pattern (trailing space optional)."""
        return regex.compile(f"(?:{ANSWER_PATTERNS[(self.family, self.form)]})", regex.IGNORECASE)

    def _normal(self, text: str) -> str:
        return text.lower()

    def allows_prefix(self, text: str) -> bool:
        """Whether ``text`` is the beginning of an answer this grammar allows (the empty text is)."""
        text = self._normal(text)
        if not text:
            return True
        if self.pattern.fullmatch(text, partial=True) is None:
            return False
        # A sentence that just ended in "." is judged as finished (its space follows).
        return self.family != "difference" or _difference_ok(text + " " if text.endswith(".") else text,
                                                             complete=False)

    def accepts(self, text: str) -> bool:
        """Whether ``text`` is a whole answer this grammar allows (one trailing space or none)."""
        text = self._normal(text).strip()
        if not text:
            return False
        whole = self.pattern.fullmatch(text) is not None or self.pattern.fullmatch(text + " ") is not None
        return whole and (self.family != "difference" or _difference_ok(text + " ", complete=True))
