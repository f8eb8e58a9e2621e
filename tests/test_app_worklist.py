"""The worklist (issue 17, part 1): a benchmark folder's cases in order, Previous / Next, progress per reviewer
derived from the feedback store (so a restart resumes), the ground truth hidden until the verdict is saved, and
the ``/next_case`` API. Handlers are driven directly (no browser); the browser test covers the screen."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app_support import REPO, single_thread_tiny_pipeline

QUESTION = "what has changed compared to the reference image?"


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-pair synthetic benchmark (12 difference rows: 9 train, 3 val) at 128 px."""
    root = tmp_path_factory.mktemp("worklist-bench")
    subprocess.run([sys.executable, "-m", "train", "synth", "--out", str(root), "--pairs", "12", "--seed", "5",
                    "--size", "128", "--workers", "1"], check=True, capture_output=True, cwd=REPO)
    return root


@pytest.fixture(scope="module")
def pipeline() -> Iterator[Any]:
    yield from single_thread_tiny_pipeline()


@pytest.fixture
def app_parts(tmp_path: Path, bench: Path, pipeline: Any):
    """A worklist of 4 difference cases over a fresh store; ``make()`` reopens it as after a restart."""
    from feedback_db import FeedbackStore, OverlayCache
    from review_app.handlers import Handlers
    from review_app.service import ReviewService
    from review_app.worklist import Worklist, WorklistHandlers

    url = f"sqlite:///{tmp_path / 'feedback.sqlite3'}"
    opened = []

    def make() -> WorklistHandlers:
        store = FeedbackStore(url)
        opened.append(store)
        service = ReviewService(pipeline, store, OverlayCache(tmp_path / "overlays"))
        return WorklistHandlers(Handlers(service, []), Worklist.from_folder(bench, "all", "difference", limit=4))

    yield make
    for store in opened:
        store.close()


def _named(outputs: tuple[Any, ...]) -> dict[str, Any]:
    from review_app.handlers import EXAMPLE, REVIEW, SCREEN
    from review_app.worklist import WORKLIST_SCREEN

    names = (*WORKLIST_SCREEN, *EXAMPLE, *SCREEN, *REVIEW)
    assert len(outputs) == len(names)
    return dict(zip(names, outputs))


def _value(update: Any) -> Any:
    return update.get("value") if isinstance(update, dict) else update


def _review(wl, shown: dict[str, Any], reviewer: str, verdict: str = "disagree") -> int:
    status, review_id = wl.h.save_on_screen(shown["analysis_id"], verdict, "", 3, "", reviewer)
    assert review_id is not None, status
    return review_id


def test_worklist_reads_one_split_and_family_as_the_evaluation_does(bench: Path) -> None:
    from diffvqa_core.imaging import sha256_of
    from review_app.worklist import Worklist

    worklist = Worklist.from_folder(bench, "val", "difference")
    assert len(worklist) == 3
    for case in worklist.cases:
        assert case.question_type == "difference" and case.truth
        assert case.main.is_file() and case.ref.is_file() and case.main != case.ref
        assert case.main_sha256 == sha256_of(case.main)
    assert len(Worklist.from_folder(bench, "all", "all", limit=5)) == 5


def test_an_empty_selection_says_what_the_folder_holds(bench: Path, tmp_path: Path) -> None:
    from review_app.worklist import Worklist

    with pytest.raises(ValueError, match="no difference questions in split test.*splits there: train, val"):
        Worklist.from_folder(bench, "test")
    with pytest.raises(ValueError, match="not a benchmark folder"):
        Worklist.from_folder(tmp_path)


def test_next_loads_and_analyses_the_first_case_with_case_k_of_n(app_parts) -> None:
    wl = app_parts()
    shown = _named(wl.next_on_screen(-1, "Dr. A", 0.5))
    case = wl.worklist[0]
    assert shown["position"] == 0
    assert "Case 1 of 4" in shown["progress"] and "0 of 4" in shown["progress"]
    assert (shown["main_file"], shown["ref_file"], shown["question"]) == (str(case.main), str(case.ref), case.question)
    assert shown["analysis_id"] is not None and "Analysed as analysis" in shown["status"]
    assert shown["save"]["interactive"] is True


def test_ground_truth_stays_hidden_until_the_verdict_is_saved(app_parts) -> None:
    wl = app_parts()
    shown = _named(wl.next_on_screen(-1, "Dr. A", 0.5))
    truth = wl.worklist[0].truth
    assert _value(shown["truth"]) == ""
    assert truth not in shown["attribution"] and truth not in shown["progress"]
    review_id = _review(wl, shown, "Dr. A")
    revealed, progress = wl.reveal_truth(0, review_id, "Dr. A")
    assert _value(revealed) == truth
    assert "1 of 4" in progress and "you have reviewed this case" in progress


def test_a_review_of_another_pair_reveals_nothing(app_parts) -> None:
    wl = app_parts()
    _named(wl.next_on_screen(-1, "Dr. A", 0.5))
    other = wl.worklist[1]  # the reviewer put other films on screen by hand and saved
    result = wl.h.service.analyze(other.main, other.ref, other.question, 0.5)
    review_id = wl.h.service.record_review(result.analysis_id, reviewer="Dr. A", verdict="agree")
    unchanged = {"__type__": "update"}
    assert wl.reveal_truth(0, review_id, "Dr. A") == (unchanged, unchanged)


def test_next_skips_reviewed_cases_and_a_restart_resumes_there_per_reviewer(app_parts) -> None:
    wl = app_parts()
    first = _named(wl.next_on_screen(-1, "Dr. A", 0.5))
    _review(wl, first, "Dr. A")
    second = _named(wl.next_on_screen(first["position"], "Dr. A", 0.5))
    assert second["position"] == 1
    _review(wl, second, "Dr. A")

    restarted = app_parts()  # a new app process on the same database
    assert _named(restarted.resume_on_load("Dr. A", 0.5)[1:])["position"] == 2
    assert _named(restarted.resume_on_load("Dr. B", 0.5)[1:])["position"] == 0  # B has their own progress
    assert "2 of 4" in restarted.progress_text(2, "Dr. A") and "0 of 4" in restarted.progress_text(0, "Dr. B")


def test_next_wraps_to_skipped_cases_and_says_when_all_are_done(app_parts) -> None:
    wl = app_parts()
    shown = _named(wl.next_on_screen(-1, "Dr. A", 0.5))
    for _ in range(3):  # review cases 1, 2, 3 ...
        shown = _named(wl.next_on_screen(shown["position"], "Dr. A", 0.5))
        _review(wl, shown, "Dr. A")
    assert shown["position"] == 3
    back = _named(wl.next_on_screen(3, "Dr. A", 0.5))  # ... then Next comes back to case 1, skipped
    assert back["position"] == 0
    _review(wl, back, "Dr. A")
    done = _named(wl.next_on_screen(0, "Dr. A", 0.5))
    assert "All 4 cases" in done["progress"] and "4 of 4" in done["progress"]
    assert all(_value(done[name]) is None for name in ("position", "analysis_id", "main_file"))  # nothing changed


def test_previous_goes_back_and_shows_the_truth_of_a_case_already_reviewed(app_parts) -> None:
    wl = app_parts()
    first = _named(wl.next_on_screen(-1, "Dr. A", 0.5))
    _review(wl, first, "Dr. A")
    _named(wl.next_on_screen(0, "Dr. A", 0.5))
    back = _named(wl.previous_on_screen(1, "Dr. A", 0.5))
    assert back["position"] == 0 and _value(back["truth"]) == wl.worklist[0].truth
    assert "first case" in _named(wl.previous_on_screen(0, "Dr. A", 0.5))["progress"]


def test_without_a_reviewer_name_next_asks_for_it(app_parts) -> None:
    wl = app_parts()
    shown = _named(wl.next_on_screen(-1, "  ", 0.5))
    assert "Type your name" in shown["progress"] and _value(shown["analysis_id"]) is None


def test_next_case_api_returns_the_reviewers_next_case_without_its_truth(tmp_path: Path, bench: Path,
                                                                        pipeline: Any) -> None:
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    import app
    from app_support import free_port
    from feedback_db import FeedbackStore, OverlayCache
    from review_app.launch import serve
    from review_app.worklist import Worklist

    worklist = Worklist.from_folder(bench, "all", "difference", limit=3)
    store = FeedbackStore(f"sqlite:///{tmp_path / 'feedback.sqlite3'}")
    demo = app.build_demo(pipeline, store, examples=[], overlays=OverlayCache(tmp_path / "overlays"),
                          worklist=worklist)
    port = free_port()
    serve(demo, port=port, folders=worklist.folders, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        assert "/next_case" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
        number, progress, question, answer, theta, analysis_id, status = client.predict(
            "Dr. Script", api_name="/next_case")
        assert number == 1 and "Case 1 of 3" in progress and question == worklist[0].question
        assert answer.strip() and theta.startswith("rotation") and "Analysed" in status
        client.predict(analysis_id, "agree", "", 4, "", "Dr. Script", api_name="/record_review")
        assert client.predict("Dr. Script", api_name="/next_case")[0] == 2
        assert client.predict("Dr. Script", 2, api_name="/next_case")[0] == 3  # after case 2
        assert client.predict("Dr. Other", api_name="/next_case")[0] == 1
        with pytest.raises(AppError, match="reviewer's name"):
            client.predict("", api_name="/next_case")
    finally:
        demo.close()
        store.close()


def test_cli_refuses_a_folder_that_is_no_benchmark(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import app

    args = app.parse_args(["--worklist", "x", "--split", "val", "--question-type", "all", "--limit", "7"])
    assert (args.worklist, args.split, args.question_type, args.limit) == ("x", "val", "all", 7)
    assert app.main(["--worklist", str(tmp_path), "--no-synthetic-examples", "--db",
                     f"sqlite:///{tmp_path / 'f.sqlite3'}"]) == 2
    assert "not a benchmark folder" in capsys.readouterr().err


def test_a_row_repeated_in_the_benchmark_is_reviewed_with_its_twin() -> None:
    from dataclasses import replace
    from types import SimpleNamespace

    from review_app.worklist import Worklist, WorklistCase

    case = WorklistCase(0, Path("m.jpg"), Path("r.jpg"), "Is there edema?", "presence", "no", "0", "1", "2", "3",
                        "a" * 64, "b" * 64)
    worklist = Worklist([case, replace(case, position=1, row_id="9"), replace(case, position=2, question="Q2?")], ".")
    review = SimpleNamespace(main_sha256="a" * 64, ref_sha256="b" * 64, question="  is there  EDEMA? ")
    store = SimpleNamespace(query_reviews=lambda reviewer: [review])
    assert worklist.reviewed_by(store, "Dr. A") == {0, 1}  # whitespace and case do not make another question
    assert worklist.next_unreviewed(store, "Dr. A") == 2
