"""The review app through its public API (gradio_client) on a launched server: analyse, change lambda, review,
export; plus the measured latencies (printed, kept in test-artifacts/app_latency.json)."""

from __future__ import annotations

import json
import statistics
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from app_support import REPO, RunningApp, run_app

QUESTION = "what has changed compared to the reference image?"


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, mhh_pairs_dir: Path) -> Iterator[RunningApp]:
    yield from run_app(tmp_path_factory.mktemp("app"), mhh_pairs_dir)


@pytest.fixture(scope="module")
def client(running: RunningApp):
    from gradio_client import Client

    return Client(running.url, verbose=False)


def _analyze(client, running: RunningApp, lam: float | None = None, pair: int = 0):
    from gradio_client import handle_file

    example = running.examples[pair]
    kwargs = {} if lam is None else {"lam": lam}
    return client.predict(handle_file(str(example.main)), handle_file(str(example.ref)), QUESTION,
                          api_name="/analyze", **kwargs)


def test_public_api_names_the_three_endpoints(client) -> None:
    endpoints = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/analyze", "/record_review", "/export_disagreements", "/reanswer"} <= endpoints


def test_analyze_returns_answer_theta_id_and_overlays(client, running: RunningApp) -> None:
    answer, theta, analysis_id, ref_view, main_view, registered, strip, status, _ = _analyze(client, running)
    assert isinstance(answer, str) and answer.strip()
    assert theta.startswith("rotation") and "scale" in theta and "shift" in theta
    assert int(analysis_id) >= 1
    for image in (ref_view, main_view, strip):
        assert Path(image).read_bytes().startswith(b"\x89PNG")
    assert len(registered) == 2  # before/after slider: registered main, reference
    assert "question type *difference*" in status


def test_lambda_change_reanswers_from_cache_with_a_new_analysis(client, running: RunningApp) -> None:
    first = _analyze(client, running)
    answer, theta, new_id, *_images, status, _ = client.predict(first[2], 0.2, api_name="/reanswer")
    assert int(new_id) > int(first[2])
    assert "lambda 0.20" in status and answer.strip()
    assert theta == first[1]  # registration is cached, not recomputed


def test_analyze_accepts_lambda_and_rejects_one_out_of_range(client, running: RunningApp) -> None:
    from gradio_client.exceptions import AppError

    assert "lambda 0.80" in _analyze(client, running, lam=0.8)[7]
    with pytest.raises(AppError):
        client.predict(*_analyze_args(running), lam=1.5, api_name="/analyze")


def _analyze_args(running: RunningApp):
    from gradio_client import handle_file

    return handle_file(str(running.examples[0].main)), handle_file(str(running.examples[0].ref)), QUESTION


def test_record_review_is_stored_with_overlay_picture(client, running: RunningApp) -> None:
    analysis_id = _analyze(client, running)[2]
    message, review_id = client.predict(analysis_id, "disagree", "nothing has changed.", 2, "=cmd|' /C calc'!A0",
                                        "Dr. API", api_name="/record_review")
    assert "Saved review" in message and "disagree" in message
    (row,) = running.store.query_reviews(review_ids=[int(review_id)])
    assert (row.verdict, row.corrected_answer, row.mask_rating, row.reviewer) == (
        "disagree", "nothing has changed.", 2, "Dr. API")
    assert row.checkpoint_sha256 == "random-init" and row.question_type == "difference"
    assert (running.overlay_dir / f"analysis_{int(analysis_id)}.png").read_bytes().startswith(b"\x89PNG")


def test_bad_review_is_a_clean_error_and_nothing_is_stored(client, running: RunningApp) -> None:
    from gradio_client.exceptions import AppError

    analysis_id = _analyze(client, running)[2]
    before = running.store.count_reviews()
    with pytest.raises(AppError, match="not in the list of choices") as info:
        client.predict(analysis_id, "maybe", "", None, "", "Dr. API", api_name="/record_review")
    assert "Traceback" not in str(info.value)
    with pytest.raises(AppError, match="reviewer must not be empty") as info:
        client.predict(analysis_id, "agree", "", None, "", "   ", api_name="/record_review")
    with pytest.raises(AppError, match="no longer in memory|unknown analysis id"):
        client.predict(10**6, "agree", "", None, "", "Dr. API", api_name="/record_review")
    assert running.store.count_reviews() == before


def test_export_disagreements_zip(client, running: RunningApp) -> None:
    analysis_id = _analyze(client, running)[2]
    _, review_id = client.predict(analysis_id, "partly", "", 4, "@SUM(A1)", "Dr. Export", api_name="/record_review")
    path = client.predict(None, ["disagree", "partly"], "Dr. Export", "", "", "", api_name="/export_disagreements")
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        assert {"README.txt", "cases.csv", "cases.json"} <= names
        assert f"overlays/case{running.store.query_reviews(review_ids=[int(review_id)])[0].case_id}" \
               f"_analysis{int(analysis_id)}.png" in names
        cases = json.loads(archive.read("cases.json"))["cases"]
        assert [c["review_id"] for c in cases] == [int(review_id)]
        assert "'@SUM(A1)" in archive.read("cases.csv").decode("utf-8-sig")


def test_unreadable_upload_is_a_clear_message(client, running: RunningApp, tmp_path: Path) -> None:
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    fake = tmp_path / "scan.png"
    fake.write_text("this is not an image")
    with pytest.raises(AppError) as info:
        client.predict(handle_file(str(fake)), handle_file(str(running.examples[0].ref)), QUESTION,
                       api_name="/analyze")
    assert "Traceback" not in str(info.value) and str(info.value).strip()


def test_latency_of_analyze_and_lambda_update(client, running: RunningApp) -> None:
    """Wall time per API call on the tiny random model (2 shared CPU cores); reported, loosely bounded."""
    analyze_s, reanswer_s = [], []
    for pair in range(3):
        start = time.perf_counter()
        result = _analyze(client, running, pair=pair)
        analyze_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        client.predict(result[2], 0.3, api_name="/reanswer")
        reanswer_s.append(time.perf_counter() - start)
    report = {"analyze_s": [round(x, 3) for x in analyze_s], "reanswer_s": [round(x, 3) for x in reanswer_s],
              "analyze_median_s": round(statistics.median(analyze_s), 3),
              "reanswer_median_s": round(statistics.median(reanswer_s), 3)}
    out = REPO / "test-artifacts"
    out.mkdir(exist_ok=True)
    (out / "app_latency.json").write_text(json.dumps(report, indent=2))
    print("latency", report)
    assert report["analyze_median_s"] < 60 and report["reanswer_median_s"] < 60
