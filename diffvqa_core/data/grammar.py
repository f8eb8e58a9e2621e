"""Questions and answers in Medical-Diff-VQA's exact grammar (BENCHMARK.md "Question families").

The difference answer follows the benchmark generator: level-change sentences, then additions, then removals,
each sentence ending in ". " (so a non-empty answer ends with a space), or "nothing has changed." alone.
Lists read "{a}" / "{a}, and {b}" / "{a}, {b}, and {c}". Findings are listed in the official name order (the
benchmark's ``fix_order``). When a level changed in a stated, non-bilateral location, the benchmark asks
"what has changed in the {region} area?" and answers that one sentence; so do we.
"""

from __future__ import annotations

import re

import numpy as np

from diffvqa_core.data.findings import CATALOGUE, Finding, official_order, sides
from diffvqa_core.data.vocabulary import (
    ADDITION_MANY, ADDITION_ONE, LEVEL_CHANGE_SENTENCE, LEVEL_WORDS, NOTHING_CHANGED, QUESTION_TEMPLATES, REMOVAL_MANY,
    REMOVAL_ONE,
)

# How often each family is asked of a pair when it can be (tuned so that a large synthetic set has about
# the benchmark's shares: difference 23%, presence 22%, abnormality 21%, location 12%, level 10%,
# view 8%, type 4%).
ASK_PROBABILITY = {"abnormality": 0.92, "presence": 0.97, "view": 0.6, "location": 0.59, "level": 0.49,
                   "type": 0.3}
# The benchmark keeps only 5% of the view questions about AP films.
AP_VIEW_KEEP = 0.05

_MIRROR = {"left": "right", "right": "left"}
DIFFERENCE_ANSWER = re.compile(
    r"^(?:nothing has changed\."
    r"|(?:the level of [a-z -]+ has changed from [a-z -]+ to [a-z -]+\. )*"
    r"(?:the main image has (?:an additional finding|additional findings) of [a-z ,-]+ than the reference image\. )?"
    r"(?:the main image is missing the findings? of [a-z ,-]+ than the reference image\. )?)$"
)
_LEVEL = re.compile(r"the level of (.+?) has changed from (.+?)\. ")
_ADDED = re.compile(r"the main image has (?:an additional finding|additional findings) of (.+?) than the reference")
_REMOVED = re.compile(r"the main image is missing the findings? of (.+?) than the reference")


def join_items(items: list[str]) -> str:
    """``a`` / ``a, and b`` / ``a, b, and c``: the benchmark's list joining."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + ", and " + items[-1]


def split_items(text: str) -> list[str]:
    """Inverse of :func:`join_items`."""
    return [item.removeprefix("and ") for item in text.split(", ")]


def level_sentence(name: str, before: str, after: str) -> str:
    """One level-change sentence, with its trailing space."""
    return LEVEL_CHANGE_SENTENCE.format(finding=name, before=before, after=after) + " "


def difference_answer(main: dict[str, Finding], ref: dict[str, Finding]) -> str:
    """What changed from the reference study's findings to the main study's, in the benchmark's grammar."""
    answer = "".join(level_sentence(name, ref[name].level, main[name].level)
                     for name in official_order(set(main) & set(ref))
                     if main[name].level and ref[name].level and main[name].level != ref[name].level)
    added = official_order(set(main) - set(ref))
    removed = official_order(set(ref) - set(main))
    if added:
        answer += (ADDITION_ONE.format(finding=added[0]) if len(added) == 1
                   else ADDITION_MANY.format(findings=join_items(added))) + " "
    if removed:
        answer += (REMOVAL_ONE.format(finding=removed[0]) if len(removed) == 1
                   else REMOVAL_MANY.format(findings=join_items(removed))) + " "
    return answer or NOTHING_CHANGED


def _split_levels(text: str) -> tuple[str, str]:
    """``"mild to moderate to severe"`` -> the split into two level words (levels may contain " to ")."""
    parts = text.split(" to ")
    for i in range(1, len(parts)):
        before, after = " to ".join(parts[:i]), " to ".join(parts[i:])
        if before in LEVEL_WORDS and after in LEVEL_WORDS:
            return before, after
    return " to ".join(parts[:-1]), parts[-1]


def parse_difference_answer(answer: str) -> tuple[list[tuple[str, str, str]], list[str], list[str]]:
    """Read a difference answer back into (level changes (name, before, after), additions, removals)."""
    added, removed = _ADDED.search(answer), _REMOVED.search(answer)
    levels = [(name, *_split_levels(change)) for name, change in _LEVEL.findall(answer)]
    return levels, split_items(added.group(1)) if added else [], split_items(removed.group(1)) if removed else []


def difference_answer_problems(answer: str) -> list[str]:
    """Why a (generated) difference answer is not one the benchmark could have written; [] when it could be.

    Checks the sentence grammar, that every finding and level word is the benchmark's, that a level "change"
    changes the level, that no finding is both added and missing, and that no list names a finding twice.
    Generated text may lack the trailing space the benchmark's sentences end with; it is added before the grammar
    is checked.
    """
    text = answer.strip()
    if not text:
        return ["the answer is empty"]
    sentence = text if text == NOTHING_CHANGED else text + " "
    if not DIFFERENCE_ANSWER.match(sentence):
        return ["not a sentence of the benchmark's difference grammar"]
    levels, added, removed = parse_difference_answer(sentence)
    problems = [f"unknown finding '{name}'" for name in dict.fromkeys([n for n, _, _ in levels] + added + removed)
                if name not in CATALOGUE]
    for name, before, after in levels:
        unknown = [word for word in (before, after) if word not in LEVEL_WORDS]
        if unknown:
            problems.append(f"unknown level '{unknown[0]}' for {name}")
        elif before == after:
            problems.append(f"says the level of {name} changed from {before} to {after}")
    problems += [f"says {name} is both new and missing" for name in added if name in removed]
    for items in ([n for n, _, _ in levels], added, removed):
        problems += [f"names {name} twice" for name in dict.fromkeys(items) if items.count(name) > 1]
    return problems


def difference_question(main: dict[str, Finding], ref: dict[str, Finding]) -> tuple[str, str]:
    """The pair's difference question and answer (the regional form when a located level changed)."""
    for name in official_order(set(main) & set(ref)):
        before, after = ref[name], main[name]
        if before.level != after.level and after.location and after.location != "bilateral":
            region = after.location + " lung" if after.location in _MIRROR else after.location
            question = QUESTION_TEMPLATES["difference"][1].format(region=region)
            return question, level_sentence(name, before.level, after.level)
    return QUESTION_TEMPLATES["difference"][0], difference_answer(main, ref)


def _abnormality(findings: dict[str, Finding], rng: np.random.Generator) -> tuple[str, str]:
    forms = QUESTION_TEMPLATES["abnormality"]
    if not findings or rng.random() < 0.2:
        return forms[2], "yes" if findings else "no"
    lateral = [f for f in findings.values() if sides(f.location)]
    if lateral and rng.random() < 0.25:
        side = str(rng.choice(sorted(sides(lateral[int(rng.integers(len(lateral)))].location))))
        names = official_order(n for n, f in findings.items() if side in sides(f.location))
        return forms[1].format(post_location=f"{side} lung"), ", ".join(names)
    return forms[0], ", ".join(official_order(findings))


def _presence(findings: dict[str, Finding], rng: np.random.Generator) -> tuple[str, str]:
    forms = QUESTION_TEMPLATES["presence"]
    located = [f for f in findings.values() if f.location]
    if located and rng.random() < 0.3:
        finding = located[int(rng.integers(len(located)))]
        if finding.location == "bilateral" or rng.random() < 0.2:
            return forms[3].format(finding=finding.name), "yes" if finding.location == "bilateral" else "no"
        words = finding.location.split()
        yes = rng.random() < 0.5 or not _MIRROR.keys() & set(words)
        if not yes:
            words = [_MIRROR.get(word, word) for word in words]
        location = " ".join(words) + (" lung" if len(words) == 1 and words[0] in _MIRROR else "")
        return forms[2].format(finding=finding.name, location=location), "yes" if yes else "no"
    form = forms[int(rng.integers(2))]
    if findings and rng.random() < 0.5:
        return form.format(finding=str(rng.choice(official_order(findings)))), "yes"
    absent = [name for name in CATALOGUE if name not in findings]
    return form.format(finding=str(rng.choice(absent))), "no"


def _view(view: str, rng: np.random.Generator) -> tuple[str, str] | None:
    if view == "AP" and rng.random() > AP_VIEW_KEEP:
        return None
    forms = QUESTION_TEMPLATES["view"]
    if rng.random() < 0.5:
        return forms[0], f"{view} view"
    asked = str(rng.choice(["PA", "AP"]))
    return forms[1 if asked == "PA" else 2], "yes" if asked == view else "no"


def _location(findings: dict[str, Finding], rng: np.random.Generator) -> tuple[str, str] | None:
    forms = QUESTION_TEMPLATES["location"]
    located = [f for f in findings.values() if f.location]
    if not located:
        return None
    finding = located[int(rng.integers(len(located)))]
    side_words = _MIRROR.keys() & set(finding.location.split())
    if side_words and rng.random() < 1 / 3:
        return forms[2].format(finding=finding.name), f"{side_words.pop()} side"
    return forms[int(rng.integers(2))].format(finding=finding.name), f"{finding.location} area"


def _attribute(findings: dict[str, Finding], attribute: str, rng: np.random.Generator) -> tuple[str, str] | None:
    stated = [f for f in findings.values() if getattr(f, attribute)]
    if not stated:
        return None
    finding = stated[int(rng.integers(len(stated)))]
    return QUESTION_TEMPLATES[attribute][0].format(finding=finding.name), getattr(finding, attribute)


def pair_questions(main: dict[str, Finding], ref: dict[str, Finding], view: str,
                   rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """Questions of one (main, reference) pair: at most one per family, the difference one always.

    Args:
        main: findings of the main (later) study, by name.
        ref: findings of the reference (earlier) study, by name.
        view: "PA" or "AP" (of the main study).
        rng: random generator.

    Returns:
        (question_type, question, answer) rows in the benchmark's family order.
    """
    makers = {
        "abnormality": lambda: _abnormality(main, rng),
        "presence": lambda: _presence(main, rng),
        "view": lambda: _view(view, rng),
        "location": lambda: _location(main, rng),
        "level": lambda: _attribute(main, "level", rng),
        "type": lambda: _attribute(main, "type", rng),
    }
    rows = []
    for family, make in makers.items():
        if rng.random() < ASK_PROBABILITY[family]:
            made = make()
            if made is not None:
                rows.append((family, *made))
    rows.append(("difference", *difference_question(main, ref)))
    return rows
