"""With --auth, the login is required and becomes the reviewer of every saved review."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app_support import RunningApp, run_app
from review_app.auth import hash_password, load_auth


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, mhh_pairs_dir: Path) -> Iterator[RunningApp]:
    tmp = tmp_path_factory.mktemp("auth-app")
    users = tmp / "users.txt"
    users.write_text(f"dr.ann:{hash_password('correct horse', iterations=1000)}\n")
    yield from run_app(tmp, mhh_pairs_dir, n_examples=1, auth=load_auth(users))


def test_api_without_login_is_refused(running: RunningApp) -> None:
    from gradio_client import Client

    with pytest.raises(Exception):  # noqa: B017 - gradio_client raises different types across versions
        Client(running.url, verbose=False).predict(1, "agree", "", None, "", "x", api_name="/record_review")


def test_reviewer_is_the_login_name_whatever_the_form_says(running: RunningApp) -> None:
    from gradio_client import Client, handle_file

    client = Client(running.url, auth=("dr.ann", "correct horse"), verbose=False)
    pair = running.examples[0]
    analysis_id = client.predict(handle_file(str(pair.main)), handle_file(str(pair.ref)),
                                 "what has changed compared to the reference image?", api_name="/analyze")[2]
    _, review_id = client.predict(analysis_id, "agree", "", None, "", "someone else", api_name="/record_review")
    (row,) = running.store.query_reviews(review_ids=[int(review_id)])
    assert row.reviewer == "dr.ann"
