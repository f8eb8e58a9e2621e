"""Access from the command line down to the server settings: ``python app.py`` binds loopback unless --host is
given, warns when exposed without --auth, and --auth FILE turns the login on (the login becomes the
reviewer: test_app_auth.py in-process, test_reliability_crash.py through ``python app.py --auth``; the real
process's listening address is checked there and in test_reliability_load.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
import pytest

from app_support import LoadedModel, tiny_pipeline

import app  # noqa: E402  (app_support puts the repository root on sys.path)

WARNING = "WITHOUT a login"


@pytest.fixture(scope="module")
def pipeline():
    return tiny_pipeline()


@pytest.fixture
def launched(monkeypatch: pytest.MonkeyPatch, pipeline) -> dict[str, Any]:
    """Run ``app.main`` up to the server start; record what Blocks.launch was asked to do."""
    seen: dict[str, Any] = {}

    def fake_launch(self: gr.Blocks, **kwargs: Any) -> tuple[None, str, None]:
        seen.update(kwargs)
        return None, f"http://{kwargs['server_name']}:{kwargs['server_port']}/", None

    monkeypatch.setattr(gr.Blocks, "launch", fake_launch)
    monkeypatch.setattr(gr.Blocks, "block_thread", lambda self: None)
    seen["model"] = LoadedModel(pipeline)
    return seen


def _main(launched: dict[str, Any], tmp_path: Path, *extra: str) -> int:
    return app.main(["--db", f"sqlite:///{tmp_path / 'f.sqlite3'}", "--no-synthetic-examples", "--port", "7999",
                     *extra], model=launched["model"])


def test_default_is_loopback_without_warning_and_never_a_share_link(launched, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert _main(launched, tmp_path) == 0
    assert launched["server_name"] == "127.0.0.1" and launched["share"] is False and launched["auth"] is None
    assert WARNING not in capsys.readouterr().out


def test_host_option_exposes_the_app_with_a_warning_when_there_is_no_login(launched, tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert _main(launched, tmp_path, "--host", "0.0.0.0") == 0
    assert launched["server_name"] == "0.0.0.0" and launched["auth"] is None
    out = capsys.readouterr().out
    assert WARNING in out and "--auth FILE" in out


def test_auth_file_turns_the_login_on_and_silences_the_warning(launched, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from review_app.auth import hash_password

    users = tmp_path / "users.txt"
    users.write_text(f"dr.ann:{hash_password('correct horse', iterations=1000)}\n")
    assert _main(launched, tmp_path, "--host", "0.0.0.0", "--auth", str(users)) == 0
    check = launched["auth"]
    assert callable(check) and check("dr.ann", "correct horse") and not check("dr.ann", "wrong")
    assert not check("", "") and not check("dr.ann", "")
    assert WARNING not in capsys.readouterr().out


def test_unreadable_auth_file_stops_the_app_with_a_message(launched, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    users = tmp_path / "users.txt"
    users.write_text("just-a-name-without-password\n")
    assert _main(launched, tmp_path, "--auth", str(users)) == 2
    assert "expected 'user:password'" in capsys.readouterr().err and "server_name" not in launched
    assert _main(launched, tmp_path, "--auth", str(tmp_path / "absent.txt")) == 2
    assert "absent.txt" in capsys.readouterr().err and "server_name" not in launched
