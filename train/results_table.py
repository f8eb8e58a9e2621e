"""``python -m train results-table``: the results table (README, model card) from ``train evaluate`` outputs.

Each ``--row "LABEL=EVAL_DIR"`` names a directory written by ``python -m train evaluate`` (``metrics.json``,
``settings.json``); the checkpoint's ``config.json`` says which parts the row switched off, so columns that
do not apply read "n/a" (no images: no registration or masks; registration off: no "after"; no saliency
mask: M = 1). Two markdown tables are printed (and written with ``--out``): answer scores on difference
questions and on all questions, then registration corner error and the masks' pointing game / AUROC against
the synthetic change masks. With ``--baseline LABEL`` and ``--full LABEL`` the issue's three targets are
checked and printed with the measured values. With ``--swapped "LABEL=EVAL_DIR"`` (an ``evaluate
--swap-references`` run of that row's checkpoint) a third table says whether the row's answers depend on the
pair: how many difference answers change with a stranger's reference, and the scores with each. Nothing here
computes a score: every number is read; only the changed answers are counted, from the two predictions.csv.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

TEXT_METRICS = (("Bleu_1", "BLEU-1"), ("Bleu_4", "BLEU-4"), ("METEOR", "METEOR"), ("ROUGE_L", "ROUGE-L"),
                ("CIDEr", "CIDEr"))
CHANGE_METRICS = (("f1", "change F1"), ("exact", "exact"))  # metrics.json "difference_changes"
MASKS = (("prior", "U"), ("adaptive", "F"), ("fused", "M"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the command's options."""
    parser.add_argument("--row", action="append", required=True, metavar="LABEL=EVAL_DIR",
                        help="a table row: its label and the --out directory of `train evaluate`, split at the last "
                             "'=' (repeatable)")
    parser.add_argument("--swapped", action="append", default=[], metavar="LABEL=EVAL_DIR",
                        help="the same row evaluated with --swap-references (repeatable; LABEL as in --row)")
    parser.add_argument("--full", help="label of the full model (for the targets)")
    parser.add_argument("--baseline", help="label of the question-only baseline (for the CIDEr target)")
    parser.add_argument("--out", type=Path, help="also write the markdown here")


def _row(spec: str) -> dict[str, Any]:
    label, sep, directory = spec.rpartition("=")  # the last "=": a label may hold one ("M = 1")
    if not sep or not label.strip() or not directory.strip():
        raise ValueError(f"--row takes LABEL=EVAL_DIR, got {spec!r}")
    path = Path(directory.strip())
    for name in ("metrics.json", "settings.json"):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path / name} not found: run `python -m train evaluate --out {path}` first")
    metrics = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
    settings = json.loads((path / "settings.json").read_text(encoding="utf-8"))
    config_file = Path(settings["checkpoint"]) / "config.json"
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    return {"label": label.strip(), "directory": path, "metrics": metrics, "settings": settings, "config": config}


def _number(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def answer_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: BLEU-1/4, METEOR, ROUGE-L, CIDEr and the named changes' F1 / exact-set accuracy on difference
    questions; BLEU-1/4, METEOR, ROUGE-L, CIDEr on all questions."""
    names = [short for _, short in TEXT_METRICS]
    columns = ([f"diff {n}" for n in names] + [f"diff {n}" for _, n in CHANGE_METRICS]
               + [f"all {n}" for n in names])
    header = "| model | " + " | ".join(columns) + " |"
    lines = [header, "|---" * (1 + len(columns)) + "|"]
    for row in rows:
        metrics = row["metrics"]
        cells = [_number(metrics.get("difference", {}).get(key)) for key, _ in TEXT_METRICS]
        cells += [_number(metrics.get("difference_changes", {}).get(key)) for key, _ in CHANGE_METRICS]
        cells += [_number(metrics.get("all", {}).get(key)) for key, _ in TEXT_METRICS]
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _difference_predictions(directory: Path) -> dict[str, str]:
    with open(directory / "predictions.csv", encoding="utf-8", newline="") as handle:
        return {r["row_id"]: r["prediction"] for r in csv.DictReader(handle) if r["question_type"] == "difference"}


def swap_table(rows: list[dict[str, Any]], swapped: list[dict[str, Any]]) -> str:
    """Markdown: per row, difference answers that change when each reference film is another patient's, and
    the difference CIDEr and change F1 with the true pair and with the stranger's reference.

    Raises:
        ValueError: when a swapped label names no row, or the two runs answered different questions.
    """
    by_label = {row["label"]: row for row in rows}
    lines = ["| model | difference answers that change | CIDEr, true pair | CIDEr, stranger's reference | "
             "change F1, true pair | change F1, stranger's reference |", "|---" * 6 + "|"]
    for swap in swapped:
        if swap["label"] not in by_label:
            raise ValueError(f"--swapped label {swap['label']!r} names no --row")
        row = by_label[swap["label"]]
        true, other = _difference_predictions(row["directory"]), _difference_predictions(swap["directory"])
        if set(true) != set(other):
            raise ValueError(f"{row['directory']} and {swap['directory']} answered different difference questions")
        changed = sum(true[key] != other[key] for key in true)
        cells = [f"{changed} of {len(true)}"]
        for family, key in (("difference", "CIDEr"), ("difference_changes", "f1")):
            cells += [_number(row["metrics"].get(family, {}).get(key)),
                      _number(swap["metrics"].get(family, {}).get(key))]
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _uses(row: dict[str, Any], switch: str) -> bool:
    return bool(row["config"].get(switch, True))


def localisation_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: corner error before/after registration, pointing game and AUROC of U, F and M."""
    header = ("| model | pairs | corner error before (px) | after (px) | removed | "
              + " | ".join(f"{m} pointing | {m} AUROC" for _, m in MASKS) + " |")
    lines = [header, "|---" * (5 + 2 * len(MASKS)) + "|"]
    for row in rows:
        registration = row["metrics"].get("registration", {})
        mask = row["metrics"].get("mask", {})
        images = _uses(row, "use_images")
        before = registration.get("before_px")
        after = registration.get("after_px") if images and _uses(row, "use_registration") else None
        removed = None if after is None or not before else 1.0 - after / before
        cells = [str(registration.get("pairs", "n/a")), _number(before, 2), _number(after, 2),
                 "n/a" if removed is None else f"{100 * removed:.0f}%"]
        for key, short in MASKS:
            if not images or (short == "M" and not _uses(row, "use_saliency_mask")):
                cells += ["n/a", "n/a"]  # no image read, or M = 1 (not a map)
                continue
            scores = mask.get(key, {})
            cells += [_number(scores.get("pointing_game")), _number(scores.get("auroc"))]
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(rows: list[dict[str, Any]], full: str, baseline: str | None) -> str:
    """The issue's three targets for the full model, each with the measured value and met / MISSED."""
    by_label = {row["label"]: row for row in rows}
    if full not in by_label or (baseline and baseline not in by_label):
        raise ValueError(f"--full/--baseline must name rows; rows are {', '.join(by_label)}")
    model = by_label[full]["metrics"]
    lines = []
    if baseline:
        ours = model["difference"]["CIDEr"]
        base = by_label[baseline]["metrics"]["difference"]["CIDEr"]
        ratio = ours / base if base else float("inf")
        lines.append(f"- difference CIDEr >= 1.5 x question-only: {ours:.3f} / {base:.3f} = {ratio:.2f} x "
                     f"[{'met' if ratio >= 1.5 else 'MISSED'}]")
    registration = model.get("registration", {})
    if registration.get("before_px"):
        removed = 1.0 - registration["after_px"] / registration["before_px"]
        lines.append(f"- registration removes >= half the corner error: {registration['before_px']:.2f} -> "
                     f"{registration['after_px']:.2f} px, {100 * removed:.0f}% removed "
                     f"[{'met' if removed >= 0.5 else 'MISSED'}]")
    fused = model.get("mask", {}).get("fused")
    if fused:
        lines.append(f"- fused-mask pointing game >= 0.6: {fused['pointing_game']:.3f} "
                     f"[{'met' if fused['pointing_game'] >= 0.6 else 'MISSED'}]")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print (and optionally write) the tables."""
    try:
        rows = [_row(spec) for spec in args.row]
        parts = [answer_table(rows), localisation_table(rows)]
        if args.swapped:
            parts.append(swap_table(rows, [_row(spec) for spec in args.swapped]))
        if args.full:
            parts.append(targets(rows, args.full, args.baseline))
    except (FileNotFoundError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    text = "\n\n".join(parts) + "\n"
    print(text, end="")
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    return 0
