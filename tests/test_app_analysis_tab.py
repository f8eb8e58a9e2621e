"""The Error analysis tab (issue 17, part 3): a headline, five charts readable on the dark theme, the
reviewers' kappas, every number in a CSV, and the ``/error_summary`` API, all from ``feedback_db.analysis``."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from analysis_support import fill_reviews
from app_support import single_thread_tiny_pipeline


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A store with about a hundred simulated reviews of two checkpoints."""
    from feedback_db import FeedbackStore

    folder = tmp_path_factory.mktemp("analysis-tab")
    with FeedbackStore(f"sqlite:///{folder / 'feedback.sqlite3'}") as store:
        fill_reviews(store, cases=50, seed=1, checkpoint="demo")
        fill_reviews(store, cases=10, seed=2, checkpoint="other")
        yield store


@pytest.fixture
def page(filled, tmp_path: Path):
    from review_app.analysis_tab import ErrorAnalysis

    return ErrorAnalysis(filled, csv_dir=tmp_path)


def _screen(outputs: tuple[Any, ...]) -> dict[str, Any]:
    names = ("checkpoint", "headline", "family", "errors", "finding", "reviewer", "masks", "kappas", "summary", "csv")
    assert len(outputs) == len(names)
    return dict(zip(names, outputs))


def test_headline_gives_agreement_errors_kappas_and_masks(page) -> None:
    text = _screen(page.refresh_on_screen(""))["headline"]
    assert "reviews** of" in text and "agree **" in text
    assert "**Difference answers:**" in text and "**Most errors:**" in text
    assert "Fleiss κ" in text and "Cohen κ" in text
    assert "**Masks:** rated best at λ" in text


def test_refresh_draws_five_dark_charts_and_a_kappa_table(page) -> None:
    from matplotlib.colors import to_hex
    from matplotlib.figure import Figure

    from review_app.analysis_charts import BACKGROUND

    shown = _screen(page.refresh_on_screen(""))
    for name in ("family", "errors", "finding", "reviewer", "masks"):
        figure = shown[name]
        assert isinstance(figure, Figure)
        assert to_hex(figure.get_facecolor()) == BACKGROUND  # no white box on the dark page
    kappas = shown["kappas"]
    assert set(kappas["measure"]) == {"cohen", "fleiss"}
    assert kappas["reading"].isin(["poor", "slight", "fair", "moderate", "substantial", "almost perfect",
                                   "undefined (one verdict only)"]).all()


def test_the_csv_holds_every_section_of_the_summary(page, filled) -> None:
    from feedback_db.analysis import SUMMARY_COLUMNS, error_summary

    shown = _screen(page.refresh_on_screen(""))
    with open(shown["csv"], newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(SUMMARY_COLUMNS)
    expected = error_summary(filled)
    assert len(rows) == len(expected) == len(shown["summary"])
    assert {row["section"] for row in rows} >= {"overall", "question_type", "finding", "reviewer",
                                                 "difference_errors", "inter_reviewer", "mask_vs_lambda"}


def test_one_checkpoint_alone(page, filled) -> None:
    everything = _screen(page.refresh_on_screen(""))
    choices = dict((value, label) for label, value in everything["checkpoint"]["choices"])
    other = next(sha for sha, label in choices.items() if label.startswith("other"))
    alone = _screen(page.refresh_on_screen(other))
    assert alone["checkpoint"]["value"] == other
    overall = alone["summary"][alone["summary"]["section"] == "overall"].iloc[0]
    total = everything["summary"][everything["summary"]["section"] == "overall"].iloc[0]
    assert 0 < overall["n"] < total["n"]
    assert page.refresh_on_screen("f" * 64)[0]["value"] == ""  # an unknown checkpoint: all of them


def test_an_empty_store_says_how_to_begin(tmp_path: Path) -> None:
    from feedback_db import FeedbackStore
    from review_app.analysis_tab import EMPTY_HEADLINE, ErrorAnalysis

    with FeedbackStore(f"sqlite:///{tmp_path / 'empty.sqlite3'}") as store:
        shown = _screen(ErrorAnalysis(store, tmp_path).refresh_on_screen(""))
    assert shown["headline"] == EMPTY_HEADLINE
    assert shown["kappas"].empty and Path(shown["csv"]).is_file()


@pytest.fixture(scope="module")
def pipeline() -> Iterator[Any]:
    yield from single_thread_tiny_pipeline()


def test_error_summary_api_returns_the_table(filled, pipeline: Any, tmp_path: Path) -> None:
    from gradio_client import Client

    import app
    from app_support import free_port
    from feedback_db import OverlayCache
    from review_app.launch import serve

    demo = app.build_demo(pipeline, filled, examples=[], overlays=OverlayCache(tmp_path / "overlays"))
    port = free_port()
    serve(demo, port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        assert "/error_summary" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
        result = client.predict("", api_name="/error_summary")
        table = pd.DataFrame(result["data"], columns=result["headers"])
        assert table.loc[0, "section"] == "overall" and table.loc[0, "group"] == "all reviews"
        assert {"difference_errors", "inter_reviewer", "mask_vs_lambda"} <= set(table["section"])
    finally:
        demo.close()
