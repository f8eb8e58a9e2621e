"""The export zip of reviewed cases: overlay PNGs, cases.csv, cases.json and a README of the columns.

Free text in cases.csv is neutralised for spreadsheets: a cell that starts with ``= + - @``, a tab or a
carriage return gets a leading apostrophe, so that a comment such as ``=HYPERLINK(...)`` is shown as text
and never evaluated (OWASP "CSV injection"). cases.json keeps the exact text.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from feedback_db.store import OverlaySource, ReviewRow

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")

# (column, description, value of a row); the README is generated from this table.
COLUMNS: Sequence[tuple[str, str, Callable[[ReviewRow], Any]]] = (
    ("review_id", "id of the review in the feedback database", lambda r: r.review_id),
    ("analysis_id", "id of the model's analysis that was reviewed", lambda r: r.analysis_id),
    ("case_id", "id of the image pair", lambda r: r.case_id),
    ("main_sha256", "SHA-256 of the main (current) image file; no pixels or identifiers are exported",
     lambda r: r.main_sha256),
    ("ref_sha256", "SHA-256 of the reference (prior) image file", lambda r: r.ref_sha256),
    ("question_type", "question family (abnormality, presence, view, location, level, type, difference, other)",
     lambda r: r.question_type),
    ("question", "the question asked", lambda r: r.question),
    ("answer", "the model's answer", lambda r: r.answer),
    ("verdict", "reviewer's verdict: agree, partly or disagree", lambda r: r.verdict),
    ("corrected_answer", "the answer the reviewer would give (empty = none given)", lambda r: r.corrected_answer),
    ("mask_rating", "how well the fused mask M marks the change: 1 (useless) to 5 (exact); empty = not rated",
     lambda r: r.mask_rating),
    ("comment", "reviewer's comment", lambda r: r.comment),
    ("lambda", "fusion weight: M = lambda * U (DINO prior) + (1 - lambda) * F (adaptive mask)", lambda r: r.lam),
    ("theta", "2x3 affine registration of the main image onto the reference, JSON [[a, b, tx], [c, d, ty]] "
              "in normalised coordinates", lambda r: r.theta),
    ("theta_description", "theta in words (rotation, scale, shift)", lambda r: r.theta_description),
    ("mask_summary", "per mask (U prior, F adaptive, M fused): mean, max and argmax [row, col], JSON",
     lambda r: r.mask_summary),
    ("model_name", "model architecture / preset", lambda r: r.model_name),
    ("checkpoint_name", "checkpoint that produced the answer", lambda r: r.checkpoint_name),
    ("checkpoint_sha256", "SHA-256 of that checkpoint's weights", lambda r: r.checkpoint_sha256),
    ("reviewer", "reviewer's name (the login name when the app runs with auth)", lambda r: r.reviewer),
    ("reviewed_at", "time of the review, ISO 8601, UTC", lambda r: r.reviewed_at.isoformat()),
    ("analyzed_at", "time of the analysis, ISO 8601, UTC", lambda r: r.analyzed_at.isoformat()),
)


def neutralise_cell(value: Any) -> Any:
    """Make a text cell inert in spreadsheets: prefix ``'`` when it starts with a formula trigger.

    Numbers are returned unchanged (a negative number is a number, not a formula).
    """
    if isinstance(value, str) and value.startswith(FORMULA_TRIGGERS):
        return "'" + value
    return value


def write_export_zip(rows: Iterable[ReviewRow], out_zip: Path, overlays: OverlaySource,
                     *, exported_by: str = "") -> Path:
    """Write ``rows`` and their overlays as a zip at ``out_zip`` (atomically) and return its path.

    Args:
        rows: the reviews to export.
        out_zip: destination file; its folder is created.
        overlays: PNG bytes per analysis id (mapping or callable returning bytes or None), or None.
        exported_by: where the data came from (database URL without password), for the README.
    """
    rows = list(rows)
    lookup = _overlay_lookup(overlays)
    records: list[dict[str, Any]] = []
    pngs: dict[str, bytes] = {}
    for row in rows:
        record = {name: get(row) for name, _, get in COLUMNS}
        png = lookup(row.analysis_id)
        name = f"overlays/case{row.case_id}_analysis{row.analysis_id}.png" if png else ""
        if png:
            pngs[name] = png
        record["overlay_file"] = name
        records.append(record)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    out_zip = Path(out_zip)
    out_zip.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_zip.parent, prefix=".export-", suffix=".zip")
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("README.txt", _readme(len(records), len(pngs), now, exported_by))
            archive.writestr("cases.csv", _csv(records))
            archive.writestr("cases.json", json.dumps({"exported_at": now, "count": len(records), "cases": records},
                                                      ensure_ascii=False, indent=2))
            for name, png in pngs.items():
                archive.writestr(name, png, compress_type=zipfile.ZIP_STORED)
        os.replace(tmp, out_zip)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out_zip


def _overlay_lookup(overlays: OverlaySource) -> Callable[[int], bytes | None]:
    if overlays is None:
        return lambda _id: None
    if isinstance(overlays, Mapping):
        return overlays.get
    return overlays


def _csv(records: list[dict[str, Any]]) -> bytes:
    buffer = io.StringIO(newline="")
    names = [name for name, _, _ in COLUMNS] + ["overlay_file"]
    writer = csv.writer(buffer, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
    writer.writerow(names)
    for record in records:
        cells = []
        for name in names:
            value = record[name]
            if isinstance(value, (list, dict)):
                value = json.dumps(value, ensure_ascii=False)
            cells.append("" if value is None else neutralise_cell(value))
        writer.writerow(cells)
    return buffer.getvalue().encode("utf-8-sig")  # BOM: spreadsheet programs then read UTF-8 correctly


def _readme(count: int, with_png: int, now: str, exported_by: str) -> str:
    lines = [
        "DiffVQA review export",
        "=====================",
        f"Exported {now} (UTC) from {exported_by or 'the feedback database'}: {count} reviewed case(s), "
        f"{with_png} with an overlay picture.",
        "",
        "Files",
        "  cases.csv   one row per review (UTF-8 with BOM). Text cells that begin with = + - @, a tab or a",
        "              carriage return are prefixed with an apostrophe so spreadsheets show them as text.",
        "  cases.json  the same rows with exact text and typed values ({\"cases\": [...]}).",
        "  overlays/   per analysis, the side-by-side picture the reviewer saw when saving: reference (left) and",
        "              main (right) visit with the fused mask M as a colour overlay. Missing when the review was",
        "              saved on another machine.",
        "",
        "Columns",
    ]
    for name, description, _ in COLUMNS:
        lines.append(f"  {name:<18} {description}")
    lines.append(f"  {'overlay_file':<18} path of the overlay PNG inside this zip (empty = none available)")
    lines += ["", "Research use only: answers come from a DiffVQA checkpoint and are not a diagnosis.", ""]
    return "\n".join(lines)
