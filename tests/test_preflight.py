"""Preflight: ``fit`` and ``evaluate`` stop in seconds, before any work, when the scorer cannot run (issue 16, part 4).

Validation and ``evaluate`` score with pycocoevalcap's PTBTokenizer and METEOR, both Java programs, and
PTBTokenizer writes temporary files into its own package folder.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from train import preflight
from train.__main__ import main as train_main
from train.preflight import ScorerUnavailableError, check_scorer

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def no_java(tmp_path, monkeypatch) -> None:
    """PATH without java (an empty folder only)."""
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def test_the_scorer_runs_on_this_machine():
    started = time.perf_counter()
    check_scorer()
    assert time.perf_counter() - started < 30  # about 1 s on an idle machine: one JVM, one line


def test_fit_without_java_stops_before_its_first_step_saying_what_to_install(no_java, tmp_path, capsys):
    output = tmp_path / "run"
    code = train_main(["fit", "--config", str(REPO_ROOT / "train" / "configs" / "tiny.yaml"),
                       "--data-root", str(tmp_path), "--output", str(output)])
    assert code == 2
    err = capsys.readouterr().err  # the scorer is checked first: not "mimic_pair_questions.csv not found"
    assert "`java` is not on PATH" in err and "apt-get install openjdk-17-jre-headless" in err
    assert "Traceback" not in err
    assert not output.exists()  # nothing built, nothing written


def test_evaluate_without_java_stops_before_loading_the_model(no_java, tmp_path, capsys):
    code = train_main(["evaluate", "--checkpoint", "demo", "--data-root", str(tmp_path), "--device", "cpu",
                       "--out", str(tmp_path / "out")])
    assert code == 2
    assert "`java` is not on PATH" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_unwritable_pycocoevalcap_folder_is_named(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")  # a file where the folder should be: no user can create files "inside" it
    real_tokenizer, real_meteor = preflight._package_dirs()
    monkeypatch.setattr(preflight, "_package_dirs", lambda: (blocker / "tokenizer", real_meteor))
    with pytest.raises(ScorerUnavailableError, match="cannot write") as error:
        check_scorer()
    assert str(blocker / "tokenizer") in str(error.value) and "virtual" in str(error.value)
    assert real_tokenizer.is_dir()
