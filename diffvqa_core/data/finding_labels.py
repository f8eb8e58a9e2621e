"""Per-finding labels of a (main, reference) pair, for the change encoder's supervised heads (not in the paper).

The synthetic benchmark knows every finding of both visits (``ground_truth/*.json``); this module turns them
into integer targets, one row per finding name of the synthetic catalogue (``LABELLED_FINDINGS``), and two
pair-level targets. ``IGNORE`` marks a target that does not apply (the level of an absent finding).

Columns of a finding row (``FINDING_COLUMNS``):

- ``present_ref``, ``present_main``: 0/1.
- ``level_ref``, ``level_main``: index into ``LEVEL_WORDS`` where the finding is present and has a level.
- ``location``: index into ``LOCATIONS`` (the main visit's, else the reference's location), where stated.
- ``type``: index into ``TYPES`` of the main visit's type, ``TYPES[0]`` ("") when untyped; absent: ignored.
- ``change``: index into ``CHANGES``: unchanged, added, missing, or level changed.

Pair row (``PAIR_COLUMNS``): ``any_change`` (0/1) and ``view`` (index into ``VIEWS``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from diffvqa_core.data.findings import CATALOGUE, Finding
from diffvqa_core.data.vocabulary import LEVEL_WORDS, TYPE_WORDS, VIEWS

IGNORE = -1
LABELLED_FINDINGS: tuple[str, ...] = tuple(CATALOGUE)
LOCATIONS: tuple[str, ...] = tuple(dict.fromkeys(loc for spec in CATALOGUE.values() for loc in spec.locations))
TYPES: tuple[str, ...] = ("",) + TYPE_WORDS
CHANGES: tuple[str, ...] = ("unchanged", "added", "missing", "level")
FINDING_COLUMNS: tuple[str, ...] = ("present_ref", "present_main", "level_ref", "level_main", "location", "type",
                                    "change")
PAIR_COLUMNS: tuple[str, ...] = ("any_change", "view")
# Classes per column (1 = a binary target read as one logit).
HEAD_SIZES: dict[str, int] = {"present_ref": 1, "present_main": 1, "level_ref": len(LEVEL_WORDS),
                              "level_main": len(LEVEL_WORDS), "location": len(LOCATIONS), "type": len(TYPES),
                              "change": len(CHANGES), "any_change": 1, "view": len(VIEWS)}


def as_findings(items: Iterable[Mapping[str, str]] | Mapping[str, Finding]) -> dict[str, Finding]:
    """Findings by name from a sidecar's list of dicts (or a dict of Findings, returned as is)."""
    if isinstance(items, Mapping):
        return dict(items)
    return {item["name"]: Finding(**item) for item in items}


def finding_change(main: dict[str, Finding], ref: dict[str, Finding], name: str) -> str:
    """What happened to one finding between the visits: one of ``CHANGES``."""
    if name in main and name not in ref:
        return "added"
    if name in ref and name not in main:
        return "missing"
    if name in main and main[name].level and ref[name].level and main[name].level != ref[name].level:
        return "level"
    return "unchanged"


def encode_pair(main, ref, view: str) -> tuple[np.ndarray, np.ndarray]:
    """Targets of one pair.

    Args:
        main: the main visit's findings (sidecar list of dicts, or Findings by name).
        ref: the reference visit's findings.
        view: "PA" or "AP".

    Returns:
        (finding rows (K, 7) int64 in ``FINDING_COLUMNS`` order, pair row (2,) int64), K = len(LABELLED_FINDINGS).
    """
    main, ref = as_findings(main), as_findings(ref)
    rows = np.full((len(LABELLED_FINDINGS), len(FINDING_COLUMNS)), IGNORE, dtype=np.int64)
    changed = False
    for k, name in enumerate(LABELLED_FINDINGS):
        now, before = main.get(name), ref.get(name)
        rows[k, 0], rows[k, 1] = before is not None, now is not None
        if before is not None and before.level:
            rows[k, 2] = LEVEL_WORDS.index(before.level)
        if now is not None and now.level:
            rows[k, 3] = LEVEL_WORDS.index(now.level)
        stated = now or before
        if stated is not None and stated.location:
            rows[k, 4] = LOCATIONS.index(stated.location)
        if now is not None:
            rows[k, 5] = TYPES.index(now.type)
        change = finding_change(main, ref, name)
        rows[k, 6] = CHANGES.index(change)
        changed |= change != "unchanged"
    return rows, np.array([int(changed), VIEWS.index(view)], dtype=np.int64)


# A pair read backwards (the reference as the main visit): these columns trade places, and so do these changes.
BACKWARDS_COLUMNS = {"present_ref": "present_main", "present_main": "present_ref",
                     "level_ref": "level_main", "level_main": "level_ref"}
BACKWARDS_CHANGES = tuple(CHANGES.index({"added": "missing", "missing": "added"}.get(c, c)) for c in CHANGES)


def reverse_pair(rows: np.ndarray) -> np.ndarray:
    """Finding rows (..., K, 7) of a pair -> the rows of the same pair read backwards (the reference as the main
    visit and the main as the reference): presence and levels trade places, added and missing trade places.

    The type column (the main visit's type) is kept where the finding is in both visits (the generator never
    changes a type) and ignored where the new main visit lacks the finding or its type was never stated.
    """
    column = {name: i for i, name in enumerate(FINDING_COLUMNS)}
    rows = np.asarray(rows)
    out = rows.copy()
    for a, b in BACKWARDS_COLUMNS.items():
        out[..., column[a]] = rows[..., column[b]]
    in_both = (rows[..., column["present_ref"]] == 1) & (rows[..., column["present_main"]] == 1)
    out[..., column["type"]] = np.where(in_both, rows[..., column["type"]], IGNORE)
    change = rows[..., column["change"]]
    out[..., column["change"]] = np.where(change == IGNORE, IGNORE, np.asarray(BACKWARDS_CHANGES)[change])
    return out


def decode_pair(rows: np.ndarray) -> tuple[dict[str, Finding], dict[str, Finding]]:
    """Inverse of :func:`encode_pair` for the finding rows: (main findings, reference findings) by name.

    The ``change`` column is not read: presence and levels say it. Locations and types go to both visits
    (the generator never changes them).
    """
    main: dict[str, Finding] = {}
    ref: dict[str, Finding] = {}
    for name, row in zip(LABELLED_FINDINGS, np.asarray(rows)):
        location = LOCATIONS[row[4]] if row[4] != IGNORE else ""
        kind = TYPES[row[5]] if row[5] != IGNORE else ""
        if row[0] == 1:
            ref[name] = Finding(name, location, LEVEL_WORDS[row[2]] if row[2] != IGNORE else "", kind)
        if row[1] == 1:
            main[name] = Finding(name, location, LEVEL_WORDS[row[3]] if row[3] != IGNORE else "", kind)
    return main, ref
