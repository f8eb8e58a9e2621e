"""``python -m train results-table``: the results tables (model card, docs/results.md) from ``train evaluate`` outputs.

Each ``--row "LABEL=EVAL_DIR[,EVAL_DIR...]"`` names one or more directories written by ``python -m train
evaluate`` (``metrics.json``, ``settings.json``): several directories are the same row trained with other seeds,
shown as mean ± standard deviation over them. The checkpoint's ``config.json`` says which parts the row switched
off, so columns that do not apply read "n/a" (no images: no registration or masks; registration off: no
"after"; no saliency mask: M = 1). Printed (and written with ``--out``):

1. answer scores (BLEU-1/4, METEOR, ROUGE-L, CIDEr) on difference questions and on all questions;
2. what the difference answers say: change F1, exact answers, exact answers on changed pairs (levels included),
   "nothing has changed." precision and recall, the share of well-formed answers in the worst family, and the
   difference CIDEr as a multiple of the constant most-frequent-answer baseline;
3. registration corner error and the masks' pointing game / AUROC against the synthetic change masks;
4. with ``--swapped "LABEL=EVAL_DIR[,...]"`` (``evaluate --swap-references`` runs of that row): whether the answers
   depend on the pair;
5. with ``--full LABEL``: the targets of the demo model (issue 15), each with the measured value, met or MISSED.

Nothing here computes a score: every number is read; only the changed answers are counted, from predictions.csv.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

TEXT_METRICS = (("Bleu_1", "BLEU-1"), ("Bleu_4", "BLEU-4"), ("METEOR", "METEOR"), ("ROUGE_L", "ROUGE-L"),
                ("CIDEr", "CIDEr"))
CHANGE_METRICS = (("f1", "change F1"), ("exact", "exact"), ("exact_changed", "exact on changed pairs"),
                  ("nothing_precision", "'nothing has changed.' precision"), ("nothing_recall", "recall"))
MASKS = (("prior", "U"), ("adaptive", "F"), ("fused", "M"))
Getter = Callable[[dict[str, Any]], float | None]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the command's options."""
    parser.add_argument("--row", action="append", required=True, metavar="LABEL=EVAL_DIR[,EVAL_DIR]",
                        help="a table row: its label and the --out directory of `train evaluate` (several, comma-"
                             "separated: the same row under other seeds), split at the last '=' (repeatable)")
    parser.add_argument("--swapped", action="append", default=[], metavar="LABEL=EVAL_DIR[,EVAL_DIR]",
                        help="the same row evaluated with --swap-references (repeatable; LABEL as in --row)")
    parser.add_argument("--full", help="label of the full model (for the targets)")
    parser.add_argument("--out", type=Path, help="also write the markdown here")


def _run(path: Path) -> dict[str, Any]:
    for name in ("metrics.json", "settings.json"):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path / name} not found: run `python -m train evaluate --out {path}` first")
    metrics = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
    settings = json.loads((path / "settings.json").read_text(encoding="utf-8"))
    config_file = Path(settings["checkpoint"]) / "config.json"
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    return {"directory": path, "metrics": metrics, "settings": settings, "config": config}


def _row(spec: str) -> dict[str, Any]:
    label, sep, directories = spec.rpartition("=")  # the last "=": a label may hold one ("M = 1")
    paths = [d.strip() for d in directories.split(",") if d.strip()]
    if not sep or not label.strip() or not paths:
        raise ValueError(f"--row takes LABEL=EVAL_DIR[,EVAL_DIR], got {spec!r}")
    runs = [_run(Path(p)) for p in paths]
    return {"label": label.strip(), "runs": runs, "config": runs[0]["config"]}


def _number(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _cell(row: dict[str, Any], get: Getter, digits: int = 3) -> str:
    """One value per seed: the value, or mean ± standard deviation; "n/a" when a run lacks it."""
    values = [get(run["metrics"]) for run in row["runs"]]
    if not values or any(v is None for v in values):
        return "n/a"
    if len(values) == 1:
        return _number(values[0], digits)
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _mean(row: dict[str, Any], get: Getter) -> float | None:
    values = [get(run["metrics"]) for run in row["runs"]]
    return None if not values or any(v is None for v in values) else statistics.mean(values)


def _at(*keys: str) -> Getter:
    def get(metrics: dict[str, Any]) -> float | None:
        value: Any = metrics
        for key in keys:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return value
    return get


def _worst_well_formed(metrics: dict[str, Any]) -> float | None:
    families = {k: v for k, v in metrics.get("well_formed", {}).items() if k != "all"}
    return min(families.values()) if families else None


def _table(header: list[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    out += ["| " + " | ".join(cells) + " |" for cells in lines]
    return "\n".join(out)


def answer_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: BLEU-1/4, METEOR, ROUGE-L, CIDEr on difference questions, then on all questions."""
    names = [short for _, short in TEXT_METRICS]
    header = ["model"] + [f"diff {n}" for n in names] + [f"all {n}" for n in names]
    lines = [[row["label"]] + [_cell(row, _at(family, key)) for family in ("difference", "all")
                               for key, _ in TEXT_METRICS] for row in rows]
    return _table(header, lines)


def difference_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: what the difference answers say (named changes, exact answers, "nothing has changed."), how many
    answers are well formed (worst family), and the difference CIDEr over the constant-answer baseline's."""
    header = (["model"] + [short for _, short in CHANGE_METRICS]
              + ["well-formed (worst family)", "diff CIDEr / constant answer"])
    lines = [[row["label"]] + [_cell(row, _at("difference_changes", key)) for key, _ in CHANGE_METRICS]
             + [_cell(row, _worst_well_formed), _cell(row, _at("difference_cider_vs_constant"), 2)] for row in rows]
    return _table(header, lines)


def _difference_predictions(directory: Path) -> dict[str, str]:
    with open(directory / "predictions.csv", encoding="utf-8", newline="") as handle:
        return {r["row_id"]: r["prediction"] for r in csv.DictReader(handle) if r["question_type"] == "difference"}


def _pairs(rows: list[dict[str, Any]], swapped: list[dict[str, Any]]):
    by_label = {row["label"]: row for row in rows}
    for swap in swapped:
        if swap["label"] not in by_label:
            raise ValueError(f"--swapped label {swap['label']!r} names no --row")
        row = by_label[swap["label"]]
        if len(swap["runs"]) != len(row["runs"]):
            raise ValueError(f"--swapped {swap['label']!r} needs one directory per seed of its row")
        yield row, swap


def swap_table(rows: list[dict[str, Any]], swapped: list[dict[str, Any]]) -> str:
    """Markdown: per row, difference answers that change when each reference film is another patient's, and
    the difference CIDEr and change F1 with the true pair and with the stranger's reference.

    Raises:
        ValueError: when a swapped label names no row, or the two runs answered different questions.
    """
    header = ["model", "difference answers that change", "CIDEr, true pair", "CIDEr, stranger's reference",
              "change F1, true pair", "change F1, stranger's reference"]
    lines = []
    for row, swap in _pairs(rows, swapped):
        counts = []
        for run, other_run in zip(row["runs"], swap["runs"]):
            true, other = _difference_predictions(run["directory"]), _difference_predictions(other_run["directory"])
            if set(true) != set(other):
                raise ValueError(f"{run['directory']} and {other_run['directory']} answered different difference "
                                 "questions")
            counts.append((sum(true[key] != other[key] for key in true), len(true)))
        changed = (f"{counts[0][0]} of {counts[0][1]}" if len(counts) == 1
                   else f"{statistics.mean(c for c, _ in counts):.1f} of {counts[0][1]} (mean)")
        cells = [changed]
        for family, key in (("difference", "CIDEr"), ("difference_changes", "f1")):
            cells += [_cell(row, _at(family, key)), _cell(swap, _at(family, key))]
        lines.append([row["label"]] + cells)
    return _table(header, lines)


def _uses(row: dict[str, Any], switch: str) -> bool:
    return bool(row["config"].get(switch, True))


def localisation_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: corner error before/after registration, pointing game and AUROC of U, F and M."""
    header = (["model", "pairs", "corner error before (px)", "after (px)", "removed"]
              + [f"{m} {what}" for _, m in MASKS for what in ("pointing", "AUROC")])
    lines = []
    for row in rows:
        images = _uses(row, "use_images")
        registered = images and _uses(row, "use_registration")
        before = _mean(row, _at("registration", "before_px"))
        after = _mean(row, _at("registration", "after_px")) if registered else None
        removed = None if after is None or not before else 1.0 - after / before
        cells = [str(row["runs"][0]["metrics"].get("registration", {}).get("pairs", "n/a")),
                 _cell(row, _at("registration", "before_px"), 2),
                 _cell(row, _at("registration", "after_px"), 2) if registered else "n/a",
                 "n/a" if removed is None else f"{100 * removed:.0f}%"]
        for key, short in MASKS:
            if not images or (short == "M" and not _uses(row, "use_saliency_mask")):
                cells += ["n/a", "n/a"]  # no image read, or M = 1 (not a map)
                continue
            cells += [_cell(row, _at("mask", key, "pointing_game")), _cell(row, _at("mask", key, "auroc"))]
        lines.append([row["label"]] + cells)
    return _table(header, lines)


def _check(name: str, value: float | None, wanted: str, ok: Callable[[float], bool], digits: int = 3) -> str:
    if value is None:
        return f"- {name} {wanted}: not measured"
    return f"- {name} {wanted}: {value:.{digits}f} [{'met' if ok(value) else 'MISSED'}]"


def targets(rows: list[dict[str, Any]], full: str, swapped: list[dict[str, Any]]) -> str:
    """The demo model's targets (issue 15) for the ``full`` row, each with its measured value, met / MISSED."""
    by_label = {row["label"]: row for row in rows}
    if full not in by_label:
        raise ValueError(f"--full must name a row; rows are {', '.join(by_label)}")
    row = by_label[full]
    f1 = _mean(row, _at("difference_changes", "f1"))
    before, after = _mean(row, _at("registration", "before_px")), _mean(row, _at("registration", "after_px"))
    lines = [
        _check("difference change F1", f1, ">= 0.60", lambda v: v >= 0.6),
        _check("difference exact on changed pairs", _mean(row, _at("difference_changes", "exact_changed")),
               ">= 0.30", lambda v: v >= 0.3),
        _check("'nothing has changed.' precision", _mean(row, _at("difference_changes", "nothing_precision")),
               ">= 0.9", lambda v: v >= 0.9),
        _check("'nothing has changed.' recall", _mean(row, _at("difference_changes", "nothing_recall")),
               ">= 0.9", lambda v: v >= 0.9),
        _check("well-formed answers, worst family", _mean(row, _worst_well_formed), "= 1.00", lambda v: v >= 1.0),
        _check("difference CIDEr / constant-answer baseline", _mean(row, _at("difference_cider_vs_constant")),
               ">= 1.5 x", lambda v: v >= 1.5, 2),
    ]
    for swap_row, swap in _pairs(rows, swapped):
        if swap_row is row and f1:
            ratio = _mean(swap, _at("difference_changes", "f1")) / f1
            lines.append(_check("change F1 with a stranger's reference / true pair", ratio, "<= 0.5 x",
                                lambda v: v <= 0.5, 2))
    lines += [
        _check("fused mask M pointing game on changed pairs", _mean(row, _at("mask", "fused", "pointing_game")),
               ">= 0.8", lambda v: v >= 0.8),
        _check("fused mask M AUROC", _mean(row, _at("mask", "fused", "auroc")), ">= 0.9", lambda v: v >= 0.9),
        _check("adaptive mask F AUROC", _mean(row, _at("mask", "adaptive", "auroc")), ">= 0.95", lambda v: v >= 0.95),
        _check("corner error after registration / before", after / before if after is not None and before else None,
               "<= 0.30", lambda v: v <= 0.3, 2),
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print (and optionally write) the tables."""
    try:
        rows = [_row(spec) for spec in args.row]
        swapped = [_row(spec) for spec in args.swapped]
        parts = [answer_table(rows), difference_table(rows), localisation_table(rows)]
        if swapped:
            parts.append(swap_table(rows, swapped))
        if args.full:
            parts.append(targets(rows, args.full, swapped))
    except (FileNotFoundError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    text = "\n\n".join(parts) + "\n"
    print(text, end="")
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    return 0
