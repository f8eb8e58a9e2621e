"""Findings of the synthetic benchmark: what can be drawn, and how a patient's findings evolve between visits.

Each finding carries the benchmark's attributes (name, location, level, type; BENCHMARK.md vocabularies).
Locations use the patient's side ("left" = patient's left = the viewer's right on a frontal film). A study
holds at most one finding per name, as in Medical-Diff-VQA; lists are kept in the official name order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from diffvqa_core.data.vocabulary import FINDINGS


@dataclass(frozen=True)
class Finding:
    """One finding of one study; empty strings mean the attribute is not stated."""

    name: str
    location: str = ""
    level: str = ""
    type: str = ""

    def to_dict(self) -> dict[str, str]:
        """Plain dict for JSON sidecars."""
        return asdict(self)


@dataclass(frozen=True)
class FindingSpec:
    """What the generator may draw for one finding name.

    Attributes:
        prevalence: relative weight when a new finding is drawn.
        locations: location phrases (empty tuple: the finding has no location, e.g. cardiomegaly).
        levels: level words from mildest to most severe (empty: no level).
        types: type words, one drawn for half of the findings (empty: never typed).
    """

    prevalence: float
    locations: tuple[str, ...]
    levels: tuple[str, ...]
    types: tuple[str, ...] = ()


_LUNG_ZONES = ("left upper lung", "right upper lung", "right middle lung", "left lower lung",
               "right lower lung", "left basilar", "right basilar", "retrocardiac")
_NODULE_ZONES = ("left upper lung", "right upper lung", "right middle lung", "left lower lung",
                 "right lower lung")

CATALOGUE: dict[str, FindingSpec] = {
    "pleural effusion": FindingSpec(0.20, ("left", "right", "bilateral"),
                                    ("minimal", "small", "moderate", "moderate to large"), ("layering",)),
    "atelectasis": FindingSpec(0.15, ("left basilar", "right basilar", "bibasilar", "retrocardiac",
                                      "left lower lung", "right lower lung"),
                               ("minimal", "mild", "moderate"), ("linear", "plate-like")),
    "cardiomegaly": FindingSpec(0.12, (), ("mild", "moderate", "severe")),
    "edema": FindingSpec(0.10, ("bilateral",), ("mild", "mild to moderate", "moderate", "severe"),
                         ("interstitial",)),
    "pneumothorax": FindingSpec(0.07, ("left apical", "right apical", "left apicolateral",
                                       "right apicolateral"), ("minimal", "small", "moderate")),
    "lung opacity": FindingSpec(0.12, _LUNG_ZONES, ("subtle", "mild", "moderate", "severe"),
                                ("patchy", "ground-glass")),
    "pneumonia": FindingSpec(0.05, _LUNG_ZONES, ("mild", "moderate", "severe"), ("patchy", "multifocal")),
    "granuloma": FindingSpec(0.06, _NODULE_ZONES, (), ("calcified",)),
    "calcification": FindingSpec(0.06, _NODULE_ZONES, (), ("dense",)),
    "consolidation": FindingSpec(0.07, _LUNG_ZONES, ("mild", "moderate", "severe"),
                                 ("patchy", "focal", "dense")),
}

# CheXpert label columns of mimic_all.csv set (to 1.0) by each finding (CheXpert's label hierarchy).
CHEXPERT_OF: dict[str, tuple[str, ...]] = {
    "pleural effusion": ("Pleural Effusion",),
    "atelectasis": ("Atelectasis", "Lung Opacity"),
    "cardiomegaly": ("Cardiomegaly", "Enlarged Cardiomediastinum"),
    "edema": ("Edema", "Lung Opacity"),
    "pneumothorax": ("Pneumothorax",),
    "lung opacity": ("Lung Opacity",),
    "pneumonia": ("Pneumonia", "Lung Opacity"),
    "granuloma": ("Lung Lesion",),
    "calcification": ("Lung Lesion",),
    "consolidation": ("Consolidation", "Lung Opacity"),
}

NO_CHANGE_PROBABILITY = 0.18
_ORDER = {name: i for i, name in enumerate(FINDINGS)}


def official_order(names) -> list[str]:
    """Finding names sorted as in the official list (the order answers use)."""
    return sorted(names, key=_ORDER.__getitem__)


def severity(finding: Finding) -> float:
    """Severity in (0, 1] from the finding's rank among its level words (1.0 when it has no level)."""
    levels = CATALOGUE[finding.name].levels
    return 1.0 if not finding.level else (levels.index(finding.level) + 1) / len(levels)


def draw_finding(name: str, rng: np.random.Generator) -> Finding:
    """A new finding of ``name`` with a location, level and (half of the time) a type from its spec."""
    spec = CATALOGUE[name]
    return Finding(
        name=name,
        location=str(rng.choice(spec.locations)) if spec.locations else "",
        level=str(rng.choice(spec.levels)) if spec.levels else "",
        type=str(rng.choice(spec.types)) if spec.types and rng.random() < 0.5 else "",
    )


def _draw_absent_name(present: dict[str, Finding], rng: np.random.Generator) -> str | None:
    absent = [name for name in CATALOGUE if name not in present]
    if not absent:
        return None
    weights = np.array([CATALOGUE[name].prevalence for name in absent])
    return str(rng.choice(absent, p=weights / weights.sum()))


def first_visit(rng: np.random.Generator) -> dict[str, Finding]:
    """Findings of a patient's first study: none to three, drawn by prevalence."""
    findings: dict[str, Finding] = {}
    for _ in range(int(rng.choice(4, p=[0.25, 0.35, 0.25, 0.15]))):
        name = _draw_absent_name(findings, rng)
        findings[name] = draw_finding(name, rng)
    return findings


def next_visit(previous: dict[str, Finding], rng: np.random.Generator) -> dict[str, Finding]:
    """Findings of the next study: unchanged (``NO_CHANGE_PROBABILITY``) or 1-3 additions, removals or
    level changes, each finding touched at most once. Location and type of a kept finding never change.
    """
    findings = dict(previous)
    if rng.random() < NO_CHANGE_PROBABILITY:
        return findings
    touched: set[str] = set()
    for _ in range(int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))):
        kept = [name for name in findings if name not in touched]
        leveled = [name for name in kept if CATALOGUE[name].levels]
        options = ["add"] + ["remove"] * bool(kept) + ["level"] * bool(leveled)
        weights = np.array([{"add": 0.4, "remove": 0.3, "level": 0.3}[o] for o in options])
        operation = rng.choice(options, p=weights / weights.sum())
        if operation == "add":
            name = _draw_absent_name({**findings, **dict.fromkeys(touched)}, rng)
            if name is not None:
                findings[name] = draw_finding(name, rng)
                touched.add(name)
        elif operation == "remove":
            name = str(rng.choice(kept))
            del findings[name]
            touched.add(name)
        else:
            name = str(rng.choice(leveled))
            levels = CATALOGUE[name].levels
            new_level = rng.choice([lv for lv in levels if lv != findings[name].level])
            findings[name] = replace(findings[name], level=str(new_level))
            touched.add(name)
    return findings


def sides(location: str) -> set[str]:
    """Patient sides a location covers: subset of {"left", "right"}."""
    if location in ("bilateral", "bibasilar"):
        return {"left", "right"}
    if location == "retrocardiac":
        return {"left"}
    return {word for word in location.split() if word in ("left", "right")}


def chexpert_labels(findings: dict[str, Finding]) -> dict[str, float]:
    """CheXpert label columns set to 1.0 by the findings ("No Finding" when there are none)."""
    if not findings:
        return {"No Finding": 1.0}
    return {label: 1.0 for name in findings for label in CHEXPERT_OF[name]}
