"""Export zips: members, overlay pictures, CSV formula neutralisation, JSON fields, README."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from feedback_db import FeedbackStore, OverlayCache
from feedback_db.export import COLUMNS, neutralise_cell
from feedback_support import DB_KINDS, analysis_values, database_url

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32  # signature is all the cache and the zip look at


@pytest.fixture(params=DB_KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FeedbackStore]:
    for url in database_url(request.param, tmp_path):
        with FeedbackStore(url) as opened:
            yield opened


def _review(store: FeedbackStore, **review: object) -> tuple[int, int]:
    analysis_id = store.record_analysis(**analysis_values())
    values = {"reviewer": "ann", "verdict": "disagree", **review}
    return analysis_id, store.record_review(analysis_id=analysis_id, **values)  # type: ignore[arg-type]


def _read(zip_path: Path) -> tuple[list[str], list[dict[str, str]], dict]:
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
        rows = list(csv.DictReader(io.StringIO(archive.read("cases.csv").decode("utf-8-sig"))))
        data = json.loads(archive.read("cases.json"))
    return names, rows, data


def test_export_zip_holds_overlays_csv_json_and_readme(store: FeedbackStore, tmp_path: Path) -> None:
    first, review_1 = _review(store)
    second, review_2 = _review(store)
    out = store.export_cases([review_1, review_2], tmp_path / "out" / "export.zip", overlays={first: PNG})
    names, rows, data = _read(out)
    assert set(names) == {"README.txt", "cases.csv", "cases.json", f"overlays/case1_analysis{first}.png"}
    assert len(rows) == len(data["cases"]) == data["count"] == 2
    by_analysis = {int(r["analysis_id"]): r["overlay_file"] for r in rows}
    assert by_analysis == {first: f"overlays/case1_analysis{first}.png", second: ""}
    with zipfile.ZipFile(out) as archive:
        assert archive.read(f"overlays/case1_analysis{first}.png") == PNG


def test_export_reads_overlays_from_a_callable_such_as_the_cache(store: FeedbackStore, tmp_path: Path) -> None:
    analysis_id, review_id = _review(store)
    cache = OverlayCache(tmp_path / "cache")
    cache.put(analysis_id, PNG)
    names, _, _ = _read(store.export_cases([review_id], tmp_path / "e.zip", overlays=cache.get))
    assert any(name.startswith("overlays/") for name in names)


@pytest.mark.parametrize("text", ["=HYPERLINK(\"http://x\",\"y\")", "+1+1", "-2+3", "@SUM(A1)", "=cmd|' /C calc'!A0"])
def test_csv_cells_starting_with_formula_triggers_are_neutralised(store: FeedbackStore, tmp_path: Path,
                                                                  text: str) -> None:
    _, review_id = _review(store, comment=text, corrected_answer=text, reviewer=text)
    _, rows, data = _read(store.export_cases([review_id], tmp_path / "e.zip"))
    for column in ("comment", "corrected_answer", "reviewer"):
        assert rows[0][column] == "'" + text
        assert data["cases"][0][column] == text  # JSON keeps the exact text


@pytest.mark.parametrize("value", ["\tx", "\rx", "=x", "+x", "-x", "@x"])
def test_neutralise_cell_prefixes_every_trigger(value: str) -> None:
    assert neutralise_cell(value) == "'" + value


def test_numbers_and_plain_text_are_left_alone() -> None:
    assert neutralise_cell(-0.5) == -0.5
    assert neutralise_cell("nothing has changed.") == "nothing has changed."


def test_json_has_answer_correction_lambda_theta_model_checkpoint_reviewer_time(store: FeedbackStore,
                                                                               tmp_path: Path) -> None:
    _, review_id = _review(store, corrected_answer="nothing has changed.", mask_rating=2, comment="c")
    _, rows, data = _read(store.export_cases([review_id], tmp_path / "e.zip"))
    case = data["cases"][0]
    expected = analysis_values()
    assert case["answer"] == expected["answer"]
    assert case["corrected_answer"] == "nothing has changed."
    assert case["lambda"] == pytest.approx(0.5)
    assert case["theta"] == expected["theta"]
    assert case["model_name"] == "diffvqa-tiny"
    assert case["checkpoint_sha256"] == "c" * 64
    assert case["reviewer"] == "ann" and case["verdict"] == "disagree" and case["mask_rating"] == 2
    assert case["reviewed_at"].endswith("+00:00")
    assert json.loads(rows[0]["theta"]) == expected["theta"]


def test_readme_describes_every_column(store: FeedbackStore, tmp_path: Path) -> None:
    _, review_id = _review(store)
    out = store.export_cases([review_id], tmp_path / "e.zip")
    with zipfile.ZipFile(out) as archive:
        readme = archive.read("README.txt").decode()
        header = archive.read("cases.csv").decode("utf-8-sig").splitlines()[0].split(",")
    for column in header:
        assert f"  {column} " in readme, column
    assert [name for name, _, _ in COLUMNS] + ["overlay_file"] == header


def test_export_of_nothing_is_a_valid_empty_zip(store: FeedbackStore, tmp_path: Path) -> None:
    names, rows, data = _read(store.export_cases([], tmp_path / "e.zip"))
    assert rows == [] and data["cases"] == [] and "README.txt" in names


def test_overlay_cache_refuses_non_png_and_is_keyed_per_database(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="PNG"):
        OverlayCache(tmp_path).put(1, b"GIF89a")
    one = OverlayCache.for_database("sqlite:///a.sqlite3")
    other = OverlayCache.for_database("sqlite:///b.sqlite3")
    assert one.root != other.root
    assert OverlayCache.for_database("postgresql://u:secret@h/db").root == \
        OverlayCache.for_database("postgresql://u:other@h/db").root  # the password is not part of the key
