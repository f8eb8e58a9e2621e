"""kill -9 in the middle of work.

The app: ``python app.py --auth ... --db sqlite:///...`` is SIGKILLed while four logged-in reviewers save
reviews through its API. Afterwards the database passes ``PRAGMA integrity_check`` and
``foreign_key_check``, holds every review whose save the API confirmed (exactly once, under the login name),
holds nothing that was never sent, and opens again for new reviews.

The trainer: ``python -m train fit`` is SIGKILLed while it rewrites ``OUTPUT/last`` every step (if possible
at the moment a new checkpoint is being staged). ``OUTPUT/last`` is still a complete checkpoint, and
``--resume`` continues from its step, not from 0.
Figures go to test-artifacts/reliability_crash.json.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app_support import free_port
from reliability_support import (ARTIFACTS, REPO, AppProcess, child_env, listening_addresses, save_tiny_checkpoint,
                                 start_app, stop, valid_png, write_pickle)

pytestmark = pytest.mark.slow

REVIEWERS = 4
KILL_AFTER_CONFIRMED = 40
CALL_TIMEOUT_S = 60


def _save_figures(section: str, figures: dict) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "reliability_crash.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[section] = figures
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


# ------------------------------------------------------------------------------------------------ app


@pytest.fixture
def app_with_logins(tmp_path: Path) -> Iterator[tuple[AppProcess, Path, dict[str, str]]]:
    users = {f"crash-r{n}": f"secret-{n}" for n in range(REVIEWERS)}
    auth_file = tmp_path / "users.txt"
    auth_file.write_text("".join(f"{user}:{password}\n" for user, password in users.items()))
    database = tmp_path / "feedback.sqlite3"
    app = start_app(tmp_path, f"sqlite:///{database}", save_tiny_checkpoint(tmp_path / "tiny"), free_port(),
                    auth=auth_file)
    try:
        yield app, database, users
    finally:
        stop(app)


def test_kill_9_while_reviews_are_written_loses_no_confirmed_review(app_with_logins, tmp_path: Path) -> None:
    from gradio_client import Client, handle_file

    app, database, users = app_with_logins
    assert listening_addresses(app.port) == {"127.0.0.1"}  # no --host: loopback only
    image = tmp_path / "film.png"
    image.write_bytes(valid_png())
    clients = {user: Client(app.url, auth=(user, password), verbose=False) for user, password in users.items()}
    analysis_ids = {user: int(client.predict(handle_file(str(image)), handle_file(str(image)),
                                             "what has changed compared to the reference image?",
                                             api_name="/analyze")[2]) for user, client in clients.items()}
    sent: list[str] = []
    confirmed: dict[str, str] = {}  # comment -> login
    failures: list[str] = []
    lock = threading.Lock()
    dead = threading.Event()

    def reviewer(user: str) -> None:
        for i in range(10_000):
            if dead.is_set():
                return
            comment = f"crash {user} #{i}"
            with lock:
                sent.append(comment)
            try:
                job = clients[user].submit(analysis_ids[user], "disagree", f"correction {i}", 3, comment,
                                           "typed name (ignored: the login wins)", api_name="/record_review")
                job.result(timeout=CALL_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - after the kill every call fails; that is the point
                with lock:
                    failures.append(f"{type(exc).__name__}: {str(exc)[:120]}")
                if dead.is_set():
                    return
                continue
            with lock:
                confirmed[comment] = user

    threads = [threading.Thread(target=reviewer, args=(user,), daemon=True) for user in users]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 240
    while len(confirmed) < KILL_AFTER_CONFIRMED and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(confirmed) >= KILL_AFTER_CONFIRMED, f"only {len(confirmed)} reviews confirmed; failures {failures[:3]}"
    os.killpg(app.process.pid, signal.SIGKILL)
    dead.set()
    killed_at = len(confirmed)
    app.process.wait(timeout=30)
    for thread in threads:
        thread.join(timeout=CALL_TIMEOUT_S + 10)
    assert app.process.returncode == -signal.SIGKILL

    with sqlite3.connect(database) as conn:  # opening replays the WAL, as the next app start would
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        foreign = conn.execute("PRAGMA foreign_key_check").fetchall()
        rows = conn.execute("SELECT r.comment, p.name FROM reviews r JOIN reviewers p ON p.id = r.reviewer_id "
                            "WHERE r.comment LIKE 'crash %'").fetchall()
        audited = conn.execute("SELECT count(*) FROM audit_log WHERE action = 'record_review'").fetchone()[0]
    stored = {}
    for comment, name in rows:
        stored.setdefault(comment, []).append(name)
    missing = [c for c in confirmed if c not in stored]
    figures = {"reviewers": REVIEWERS, "sent": len(sent), "confirmed_before_kill": len(confirmed),
               "stored_after_kill": len(rows), "confirmed_missing": len(missing),
               "stored_but_unconfirmed (in flight at the kill)": len(set(stored) - set(confirmed)),
               "integrity_check": integrity, "foreign_key_violations": len(foreign), "audit_rows": audited}
    _save_figures("app_kill_9", figures)
    print("\napp kill -9:", figures)
    assert integrity == "ok" and foreign == []
    assert missing == [], missing[:5]
    assert all(len(names) == 1 for names in stored.values())  # each review once
    assert set(stored) <= set(sent)  # nothing that was never sent
    assert all(stored[c] == [user] for c, user in confirmed.items())  # the login is the reviewer
    assert audited == len(rows)  # every stored review has its audit row: the two were one transaction
    assert killed_at <= len(confirmed) <= killed_at + REVIEWERS

    from feedback_db import FeedbackStore

    with FeedbackStore(f"sqlite:///{database}") as reopened:  # the next start: schema check, new writes work
        analysis_id = next(iter(analysis_ids.values()))
        review_id = reopened.record_review(analysis_id=analysis_id, reviewer="after the crash", verdict="agree")
        assert reopened.query_reviews(review_ids=[review_id])[0].reviewer == "after the crash"


# -------------------------------------------------------------------------------------------- trainer


@pytest.fixture(scope="module")
def synthetic_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from train_support import make_synthetic_set

    return make_synthetic_set(tmp_path_factory.mktemp("synth"))


def _state(last: Path) -> dict:
    return json.loads((last / "train_state.json").read_text())["state"]


def test_kill_9_during_training_then_resume_continues_from_the_last_complete_checkpoint(synthetic_set: Path,
                                                                                      tmp_path: Path) -> None:
    from train_support import small_config, write_yaml

    from diffvqa_core import DiffVQAModel
    from train.atomic import recover_directory

    output = tmp_path / "run"
    # the trainer tests' small model, 9 steps per epoch (batch 2), OUTPUT/last rewritten after every step
    config = small_config(synthetic_set, output, train_batch_size=2, save_every_steps=1, augment=False)
    config_path = write_yaml(config, tmp_path / "crash.yaml")
    command = [sys.executable, "-m", "train", "fit", "--config", str(config_path), "--data-root", str(synthetic_set),
               "--output", str(output)]
    log = (tmp_path / "fit.log").open("wb")
    process = subprocess.Popen(command, cwd=REPO, env=child_env(), stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    last, partial = output / "last", output / ".last.partial"
    deadline = time.monotonic() + 300
    staged_at_kill = False
    try:
        while time.monotonic() < deadline and process.poll() is None:
            step = _state(last)["global_step"] if (last / "train_state.json").is_file() else 0
            if step >= 3 and partial.exists():  # kill while the next checkpoint is being staged
                staged_at_kill = True
                break
            if step >= 5:
                break
            time.sleep(0.005)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        log.close()
    output_text = (tmp_path / "fit.log").read_text(errors="replace")
    assert process.returncode == -signal.SIGKILL, f"the trainer ended on its own ({process.returncode}):\n" \
                                                  f"{output_text[-2000:]}"

    recover_directory(last)
    killed_step = _state(last)["global_step"]
    assert 3 <= killed_step < 9
    DiffVQAModel.from_pretrained(last)  # complete: config, safetensors and tokenizer load strictly
    assert {"optimizer.safetensors", "optimizer.json", "scheduler.json", "train_state.json"} <= \
        {p.name for p in last.iterdir()}

    marker = tmp_path / "pickle-ran"  # pickles dropped into the checkpoint are never opened by --resume
    for name in ("optimizer.pt", "pytorch_model.bin", "rng_state.pth"):
        write_pickle(last / name, marker)
    resumed = subprocess.run(command + ["--resume", "--max-steps", str(killed_step + 2)], cwd=REPO, env=child_env(),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    state = _state(last)
    steps = [r["step"] for r in map(json.loads, (output / "metrics.jsonl").read_text().splitlines())
             if r["kind"] == "train"]
    figures = {"killed_at_step": killed_step, "killed_while_staging_next_checkpoint": staged_at_kill,
               "resumed_to_step": state["global_step"], "train_steps_logged_after_resume": steps[-2:]}
    _save_figures("trainer_kill_9", figures)
    print("\ntrainer kill -9:", figures)
    assert state["global_step"] == killed_step + 2 and state["batch_in_epoch"] == killed_step + 2
    assert steps[-2:] == [killed_step + 1, killed_step + 2]  # continues, does not start again at 1
    assert not marker.exists()
    DiffVQAModel.from_pretrained(last)
