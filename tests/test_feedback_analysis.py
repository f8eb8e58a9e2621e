"""feedback_db.analysis: agreement tables, difference-answer errors, kappas and mask ratings, by hand.

The store scenario below is small enough to count on paper; every expected number in these tests was.
Reviewers A, B, C; latest reviews only (A's first verdict on analysis 2 is superseded):

    analysis  family      lam  answer                                  reviews (verdict, correction, mask rating)
    1         difference  0.5  edema added                             A agree; B disagree "pleural effusion, and
                                                                       edema added"
    2         difference  0.5  pleural effusion mild -> severe         A (disagree, then) partly "mild -> moderate"
    3         presence    0.9  "yes" (pneumothorax?)                   A agree 5; B agree 4
    3b        presence    0.9  the same answer, C's own analysis       C disagree
    4         view        0.1  "PA"                                    B agree 2
    5         difference  0.5  pneumothorax added                      C disagree "pneumothorax missing"
    6         difference  0.5  granuloma added                         B disagree "nothing has changed."
    7         difference  0.5  atelectasis added                       A disagree (no correction)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from feedback_db import FeedbackStore
from feedback_db.analysis import (
    SUMMARY_COLUMNS,
    agreement_by_finding,
    agreement_by_question_type,
    agreement_by_reviewer,
    cohen_kappa,
    difference_coverage,
    difference_error_items,
    difference_errors,
    error_summary,
    findings_named,
    fleiss_kappa,
    inter_reviewer_agreement,
    mask_rating_by_lambda,
    reviews_frame,
    write_error_summary_csv,
)
from feedback_support import analysis_values

ADDED = "the main image has an additional finding of {} than the reference image."
MISSING = "the main image is missing the finding of {} than the reference image."
PRESENCE = "is there evidence of pneumothorax in this image?"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FeedbackStore]:
    with FeedbackStore(f"sqlite:///{tmp_path / 'feedback.sqlite3'}") as opened:
        _fill(opened)
        yield opened


def _fill(store: FeedbackStore) -> None:
    def analysis(case: int, **values) -> int:
        return store.record_analysis(**analysis_values(main_sha256=f"{case:064x}", ref_sha256=f"{case + 100:064x}",
                                                       **values))

    a1 = analysis(1, answer=ADDED.format("edema"))
    a2 = analysis(2, answer="the level of pleural effusion has changed from mild to severe.")
    presence = dict(question=PRESENCE, question_type="presence", answer="yes", lam=0.9)
    a3, a3b = analysis(3, **presence), analysis(3, **presence)
    a4 = analysis(4, question="which view is this image taken?", question_type="view", answer="PA", lam=0.1)
    a5 = analysis(5, answer=ADDED.format("pneumothorax"))
    a6 = analysis(6, answer=ADDED.format("granuloma"))
    a7 = analysis(7, answer=ADDED.format("atelectasis"))
    review = store.record_review
    review(analysis_id=a1, reviewer="A", verdict="agree")
    review(analysis_id=a1, reviewer="B", verdict="disagree", corrected_answer=(
        "the main image has additional findings of pleural effusion, and edema than the reference image."))
    review(analysis_id=a2, reviewer="A", verdict="disagree")
    review(analysis_id=a2, reviewer="A", verdict="partly",
           corrected_answer="the level of pleural effusion has changed from mild to moderate. ")
    review(analysis_id=a3, reviewer="A", verdict="agree", mask_rating=5)
    review(analysis_id=a3, reviewer="B", verdict="agree", mask_rating=4)
    review(analysis_id=a3b, reviewer="C", verdict="disagree")
    review(analysis_id=a4, reviewer="B", verdict="agree", mask_rating=2)
    review(analysis_id=a5, reviewer="C", verdict="disagree", corrected_answer=MISSING.format("pneumothorax"))
    review(analysis_id=a6, reviewer="B", verdict="disagree", corrected_answer="nothing has changed.")
    review(analysis_id=a7, reviewer="A", verdict="disagree")


def _rows(table: pd.DataFrame, key: str, columns: list[str]) -> dict[str, tuple]:
    return {row[key]: tuple(row[c] for c in columns) for _, row in table.iterrows()}


# ------------------------------------------------------------------------------------------ kappas

def test_cohen_kappa_matches_the_worked_example() -> None:
    # 50 items: both yes 20, A yes / B no 5, A no / B yes 10, both no 15: p_o = 0.7, p_e = 0.5*0.6 + 0.5*0.4 = 0.5.
    first = ["yes"] * 20 + ["yes"] * 5 + ["no"] * 10 + ["no"] * 15
    second = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(first, second) == pytest.approx(0.4)


def test_cohen_kappa_is_one_for_identical_raters_and_undefined_for_one_shared_label() -> None:
    assert cohen_kappa(["a", "b", "a"], ["a", "b", "a"]) == pytest.approx(1.0)
    assert math.isnan(cohen_kappa(["agree"] * 3, ["agree"] * 3))
    with pytest.raises(ValueError, match="same items"):
        cohen_kappa(["a"], ["a", "b"])


def test_fleiss_kappa_matches_fleiss_worked_example() -> None:
    # 10 subjects, 14 raters, 5 categories (the textbook example): P_bar = 0.378, P_e = 0.213, kappa = 0.210.
    counts = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
              [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(counts) == pytest.approx(0.2099, abs=1e-4)


def test_fleiss_kappa_of_two_raters_per_item_is_close_to_scotts_pi() -> None:
    # Two raters: Fleiss' kappa is Scott's pi. 4 items: (a,a) (a,b) (b,b) (b,b): p_o = 3/4, pooled a 3/8, b 5/8.
    counts = np.array([[2, 0], [1, 1], [0, 2], [0, 2]])
    pooled = (3 / 8) ** 2 + (5 / 8) ** 2
    assert fleiss_kappa(counts) == pytest.approx((0.75 - pooled) / (1 - pooled))
    with pytest.raises(ValueError, match="at least two"):
        fleiss_kappa([[1, 0]])


# ------------------------------------------------------------------------------- difference errors

@pytest.mark.parametrize(("answer", "truth", "expected"), [
    (ADDED.format("edema"), ADDED.format("edema"), [("edema", "correct")]),
    (ADDED.format("edema"), "the main image has additional findings of pleural effusion, and edema than the "
     "reference image.", [("pleural effusion", "missed"), ("edema", "correct")]),
    (ADDED.format("granuloma"), "nothing has changed.", [("granuloma", "invented")]),
    ("the level of edema has changed from mild to severe.", "the level of edema has changed from mild to moderate. ",
     [("edema", "wrong_level")]),
    (ADDED.format("pneumothorax"), MISSING.format("pneumothorax"), [("pneumothorax", "wrong_direction")]),
    ("gibberish", ADDED.format("edema"), [("edema", "missed")]),
])
def test_difference_error_items_reads_both_answers_with_the_grammar(answer: str, truth: str, expected: list) -> None:
    assert difference_error_items(answer, truth) == expected


def test_a_correction_outside_the_grammar_gives_no_error_items() -> None:
    assert difference_error_items(ADDED.format("edema"), "more fluid than before") is None


def test_findings_named_takes_the_longest_name_once_in_official_order() -> None:
    text = "edema, and pleural effusion; pleural effusion again, and enlargement of the cardiac silhouette"
    assert findings_named(text) == ["pleural effusion", "enlargement of the cardiac silhouette", "edema"]


# ------------------------------------------------------------------------------------- the store

def test_reviews_frame_keeps_each_reviewers_latest_review(store: FeedbackStore) -> None:
    frame = reviews_frame(store)
    assert len(frame) == 10 and len(reviews_frame(store, latest_only=False)) == 11
    (verdict,) = frame.loc[frame["answer"].str.contains("severe"), "verdict"]
    assert verdict == "partly"


def test_a_store_an_engine_and_a_url_give_the_same_frame(store: FeedbackStore) -> None:
    expected = reviews_frame(store)
    pd.testing.assert_frame_equal(reviews_frame(store.engine), expected)
    pd.testing.assert_frame_equal(reviews_frame(store.url), expected)


def test_agreement_by_question_type_in_benchmark_order(store: FeedbackStore) -> None:
    table = agreement_by_question_type(store)
    assert list(table["question_type"]) == ["presence", "view", "difference"]
    rows = _rows(table, "question_type", ["reviews", "agree", "partly", "disagree", "corrected"])
    assert rows == {"presence": (3, 2, 0, 1, 0), "view": (1, 1, 0, 0, 0), "difference": (6, 1, 1, 4, 4)}
    assert table.set_index("question_type").loc["difference", "agreement_rate"] == pytest.approx(1 / 6)


def test_agreement_by_finding_counts_question_answer_and_correction(store: FeedbackStore) -> None:
    table = agreement_by_finding(store)
    assert list(table["finding"]) == ["pneumothorax", "pleural effusion", "edema", "atelectasis", "granuloma"]
    rows = _rows(table, "finding", ["reviews", "agree", "partly", "disagree"])
    assert rows["pneumothorax"] == (4, 2, 0, 2)  # 3 presence reviews + the difference one
    assert rows["pleural effusion"] == (2, 0, 1, 1)  # named only in B's correction of 1, and in 2
    assert rows["edema"] == (2, 1, 0, 1)


def test_agreement_by_reviewer_with_mask_ratings(store: FeedbackStore) -> None:
    table = agreement_by_reviewer(store)
    rows = _rows(table, "reviewer", ["reviews", "agree", "partly", "disagree", "mask_ratings"])
    assert rows == {"A": (4, 2, 1, 1, 1), "B": (4, 2, 0, 2, 2), "C": (2, 0, 0, 2, 0)}
    means = table.set_index("reviewer")["mean_mask_rating"]
    assert means["A"] == 5 and means["B"] == 3 and math.isnan(means["C"])


def test_difference_errors_per_finding(store: FeedbackStore) -> None:
    table = difference_errors(store)
    assert list(table["finding"]) == ["pleural effusion", "pneumothorax", "granuloma", "edema"]
    rows = _rows(table, "finding", ["reviews", "correct", "missed", "invented", "wrong_level", "wrong_direction"])
    assert rows == {"pleural effusion": (2, 0, 1, 0, 1, 0), "pneumothorax": (1, 0, 0, 0, 0, 1),
                    "granuloma": (1, 0, 0, 1, 0, 0), "edema": (2, 2, 0, 0, 0, 0)}
    assert difference_coverage(store) == {"difference_reviews": 6, "used": 5, "agree_without_correction": 1,
                                          "no_correction": 1, "ungrammatical_correction": 0}


def test_inter_reviewer_agreement_pairs_and_fleiss_over_the_same_answer(store: FeedbackStore) -> None:
    table = inter_reviewer_agreement(store)
    cohen = table[table["measure"] == "cohen"].set_index("reviewers")
    # A | B judged analyses 1 and 3: A (agree, agree), B (disagree, agree): p_o 1/2, p_e (2*1)/4 = 1/2.
    assert cohen.loc["A | B", "items"] == 2 and cohen.loc["A | B", "kappa"] == pytest.approx(0.0)
    assert cohen.loc["A | B", "observed_agreement"] == pytest.approx(0.5)
    assert set(cohen.index) == {"A | B", "A | C", "B | C"}  # C judged 3 through an analysis of its own
    (fleiss,) = table[table["measure"] == "fleiss"].itertuples()
    # One item, verdicts (agree 2, partly 0, disagree 1): P_i = (4 + 1 - 3) / 6 = 1/3, P_e = 4/9 + 1/9.
    assert (fleiss.reviewers, fleiss.items, fleiss.raters_per_item) == ("A | B | C", 1, "3")
    assert fleiss.observed_agreement == pytest.approx(1 / 3)
    assert fleiss.kappa == pytest.approx((1 / 3 - 5 / 9) / (1 - 5 / 9))


def test_mask_ratings_by_lambda_bin(store: FeedbackStore) -> None:
    table = mask_rating_by_lambda(store)
    assert list(table["lambda_bin"]) == ["0.0-0.2", "0.2-0.4", "0.4-0.6", "0.6-0.8", "0.8-1.0"]
    assert list(table["ratings"]) == [1, 0, 0, 0, 2]
    assert table["mean_rating"].iloc[0] == 2 and table["mean_rating"].iloc[4] == 4.5
    assert table["rating_5"].iloc[4] == 1 and math.isnan(table["mean_rating"].iloc[2])


def test_lambda_bin_edges_put_one_in_the_last_bin(store: FeedbackStore) -> None:
    frame = reviews_frame(store).head(3).assign(lam=[0.2, 1.0, 0.0], mask_rating=[3.0, 4.0, 1.0])
    table = mask_rating_by_lambda(frame, bins=2)
    assert list(table["ratings"]) == [2, 1]  # 0.0 and 0.2 in [0, 0.5); 1.0 in [0.5, 1]


def test_error_summary_holds_every_section(store: FeedbackStore) -> None:
    table = error_summary(store)
    assert list(table.columns) == list(SUMMARY_COLUMNS)
    assert list(dict.fromkeys(table["section"])) == ["overall", "question_type", "finding", "reviewer",
                                                     "difference_errors", "inter_reviewer", "mask_vs_lambda"]
    overall = table[table["section"] == "overall"].iloc[0]
    assert (overall["n"], overall["agree"], overall["partly"], overall["disagree"]) == (10, 4, 1, 5)
    assert overall["agreement_rate"] == pytest.approx(0.4) and overall["mean_mask_rating"] == pytest.approx(11 / 3)
    errors = table[table["section"] == "difference_errors"].set_index("group")
    assert list(errors.loc["all findings", ["n", "correct", "missed", "invented", "wrong_level",
                                            "wrong_direction"]]) == [6, 2, 1, 1, 1, 1]
    kappa = table[table["section"] == "inter_reviewer"].set_index("group")["kappa"]
    assert kappa["fleiss: A | B | C"] == pytest.approx(-0.5)


def test_error_summary_of_an_empty_store_is_a_table_of_empty_sections(tmp_path: Path) -> None:
    with FeedbackStore(f"sqlite:///{tmp_path / 'empty.sqlite3'}") as empty:
        table = error_summary(empty)
    assert list(table.columns) == list(SUMMARY_COLUMNS)
    assert set(table["section"]) == {"overall", "mask_vs_lambda"}
    assert table["n"].sum() == 0


def test_csv_reads_back_and_neutralises_formula_names(store: FeedbackStore, tmp_path: Path) -> None:
    store.record_review(analysis_id=1, reviewer="=HYPERLINK(\"x\")", verdict="agree")
    path = write_error_summary_csv(store, tmp_path / "out" / "summary.csv")
    back = pd.read_csv(path)
    assert list(back.columns) == list(SUMMARY_COLUMNS)
    assert len(back) == len(error_summary(store))
    assert "'=HYPERLINK(\"x\")" in set(back["group"])
    assert not list(path.parent.glob(".*partial"))
