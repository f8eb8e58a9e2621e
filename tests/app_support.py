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


class LoadedModel:
    """An in-process pipeline in the place of ``app.main``'s ``ModelProcess`` (already loaded, nothing to stop)."""

    ready = True

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline
        self.closed = False

    def wait_ready(self, timeout: float | None = None) -> None:
        """Loaded already."""

    def close(self) -> None:
        self.closed = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pipeline, name)


def single_thread_tiny_pipeline() -> Iterator[Any]:
    """``tiny_pipeline`` with torch on one thread while it is in use (the two cores are shared), for fixtures."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield tiny_pipeline()
    finally:
        torch.set_num_threads(threads)


def run_app(tmp: Path, examples_dir: Path, n_examples: int = 4, auth: Any = None, extra_examples: Any = (),
            preload: bool = False) -> Iterator[RunningApp]:
    """Build and launch the app on SQLite in ``tmp``; close it afterwards. Torch uses one thread meanwhile
    (the test machines' two cores are shared; two threads per process oversubscribe them).

    ``extra_examples`` are added to the picker after the first ``n_examples`` pairs of ``examples_dir``;
    ``preload`` opens every page on the first example analysed."""
    import torch

    import app
    from feedback_db import FeedbackStore, OverlayCache
    from review_app.examples import read_manifest_folder
    from review_app.launch import serve

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    store = FeedbackStore(f"sqlite:///{tmp / 'feedback.sqlite3'}")
    examples = [*read_manifest_folder(examples_dir, limit=n_examples), *extra_examples]
    extra = {"preload": examples[0]} if preload else {}
    demo = app.build_demo(tiny_pipeline(), store, examples=examples, overlays=OverlayCache(tmp / "overlays"), **extra)
    port = free_port()
    serve(demo, host="127.0.0.1", port=port, auth=auth, examples=examples, prevent_thread_lock=True, quiet=True)
    try:
        yield RunningApp(f"http://127.0.0.1:{port}/", store, tmp / "overlays", examples)
    finally:
        demo.close()
        store.close()
        torch.set_num_threads(threads)
        time.sleep(0.1)


def synthetic_examples(folder: Path, pairs: int = 1) -> list[Any]:
    """Generated synthetic pairs (with their question and ground truth) in ``folder``; fails if none come."""
    from review_app.examples import ensure_synthetic_examples

    generated = ensure_synthetic_examples(folder, pairs=pairs, seed=7)
    if not generated:
        raise RuntimeError(f"no synthetic example could be generated in {folder} (python -m train synth)")
    return generated


# -- the browser --------------------------------------------------------------------------------------------
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
ARTIFACTS = REPO / "test-artifacts"
ERROR_BADGES = "[data-testid='status-tracker'] span.error"
"""Gradio's red 'Error' badge on a component whose event failed."""


def launch_chromium() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright (skip locally / fail in CI when either is missing)."""
    from feedback_support import missing

    if not CHROMIUM.exists():
        missing(f"no Chromium at {CHROMIUM}", "DIFFVQA_REQUIRE_BROWSER")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed", "DIFFVQA_REQUIRE_BROWSER")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


def open_page(browser: Any, url: str, width: int = 1440, height: int = 900) -> Any:
    """A fresh browser context (own storage) with the app loaded."""
    context = browser.new_context(viewport={"width": width, "height": height}, device_scale_factor=1)
    page = context.new_page()
    page.goto(url, wait_until="networkidle")
    page.locator("#analyze").wait_for()
    return page


def pick_example(page: Any, name: str) -> None:
    """Choose an example in the picker and wait for both films to show."""
    from playwright.sync_api import expect

    page.locator("#example input").click()
    page.get_by_role("option", name=name, exact=True).click()
    page.locator("#main-file button[aria-label='Clear']").wait_for(timeout=60_000)
    page.locator("#ref-file button[aria-label='Clear']").wait_for(timeout=60_000)
    expect(page.locator("#main-view img")).to_be_visible(timeout=30_000)
    settle(page, 0.5)


def analyse(page: Any) -> int:
    """Press Analyse, wait for the answer, return the analysis id on screen.

    Waits first for the events of an upload or a question change to finish: they cancel a pending analysis (an
    answer to the old inputs must not land on the new ones), so on a loaded machine a click sent while one of them
    is still on its way would be cancelled by it (a person sees the spinner stop and presses Analyse again)."""
    from playwright.sync_api import expect

    settle(page, 0.3)
    page.locator("#analyze").click()
    expect(page.locator("#analysis-status")).to_contain_text("Analysed as analysis", timeout=120_000)
    images_loaded(page)
    return int(page.locator("#analysis-id input").input_value())


def images_loaded(page: Any, selectors: str = "#ref-view img, #main-view img, #mask-u img, #mask-f img, #mask-m img",
                  count: int = 5) -> None:
    """Wait until the analysis' pictures are in the page and decoded (the status line arrives first)."""
    page.wait_for_function(
        """([selectors, count]) => { const images = [...document.querySelectorAll(selectors)];
                                     return images.length >= count
                                         && images.every((img) => img.complete && img.naturalWidth > 0); }""",
        arg=[selectors, count], timeout=60_000)


def set_film(page: Any, which: str, path: Path | None) -> None:
    """Replace (or with ``None`` remove) the film in ``#main-file`` / ``#ref-file`` as a person would."""
    box = page.locator(f"#{which}")
    clear = box.locator("button[aria-label='Clear']")
    if clear.count():
        clear.first.click()
        box.locator("input[type=file]").wait_for(state="attached", timeout=30_000)
    if path is not None:
        box.locator("input[type=file]").set_input_files(str(path))
        box.locator("button[aria-label='Clear']").wait_for(timeout=30_000)


def settle(page: Any, seconds: float = 1.0) -> None:
    """Let queued Gradio events finish: wait until no progress indicator shows, then a little more."""
    page.wait_for_timeout(300)
    page.wait_for_function("() => !document.querySelector('.progress-text, .eta-bar')", timeout=120_000)
    page.wait_for_timeout(int(seconds * 1000))


def error_badges(page: Any) -> int:
    """How many components show Gradio's red 'Error' badge."""
    return page.locator(ERROR_BADGES).count()
