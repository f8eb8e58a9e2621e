"""Launch the review app on a free loopback port for the API and browser tests (tiny random-weight model)."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@dataclass
class RunningApp:
    """A launched app and what the tests need to inspect it."""

    url: str
    store: Any
    overlay_dir: Path
    examples: list[Any]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def tiny_pipeline() -> Any:
    """The tiny preset with random weights (fast; the answers mean nothing)."""
    from diffvqa_core import DiffVQAConfig, DiffVQAPipeline

    return DiffVQAPipeline.from_config(DiffVQAConfig.from_preset("tiny"))


def single_thread_tiny_pipeline() -> Iterator[Any]:
    """``tiny_pipeline`` with torch on one thread while it is in use (the two cores are shared), for fixtures."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield tiny_pipeline()
    finally:
        torch.set_num_threads(threads)


def run_app(tmp: Path, examples_dir: Path, n_examples: int = 4, auth: Any = None) -> Iterator[RunningApp]:
    """Build and launch the app on SQLite in ``tmp``; close it afterwards. Torch uses one thread meanwhile
    (the test machines' two cores are shared; two threads per process oversubscribe them)."""
    import torch

    import app
    from feedback_db import FeedbackStore, OverlayCache
    from review_app.examples import read_manifest_folder
    from review_app.launch import serve

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    store = FeedbackStore(f"sqlite:///{tmp / 'feedback.sqlite3'}")
    examples = read_manifest_folder(examples_dir, limit=n_examples)
    demo = app.build_demo(tiny_pipeline(), store, examples=examples, overlays=OverlayCache(tmp / "overlays"))
    port = free_port()
    serve(demo, host="127.0.0.1", port=port, auth=auth, examples=examples, prevent_thread_lock=True, quiet=True)
    try:
        yield RunningApp(f"http://127.0.0.1:{port}/", store, tmp / "overlays", examples)
    finally:
        demo.close()
        store.close()
        torch.set_num_threads(threads)
        time.sleep(0.1)
