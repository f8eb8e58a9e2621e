"""Take the README's picture of the review app: the bundled demo model on a generated synthetic pair.

    python -m review_app.screenshot docs/images/review-app.png [--width 1440] [--height 1120] [--full-page]

Everything is made on the spot and thrown away afterwards: a synthetic pair (``python -m train synth``, no
patient data), a temporary feedback database, and the app on a free loopback port. The page is opened in a
headless Chromium (``/usr/bin/chromium`` or ``--chromium PATH``, driven by Playwright, both test dependencies)
exactly as ``python app.py`` opens it: on the example analysed. No third-party or real film is ever shown.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("diffvqa.screenshot")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def take(out: Path, *, width: int = 1440, height: int = 1120, full_page: bool = False, chromium: str = CHROMIUM,
         checkpoint: str | None = None) -> Path:
    """Launch the app on a synthetic pair, open it in Chromium and save a PNG of the page to ``out``.

    Args:
        out: where the PNG goes (its folder is created).
        width: browser window width in CSS pixels.
        height: browser window height (the picture's height unless ``full_page``).
        full_page: the whole scrolling page rather than the window.
        chromium: the Chromium executable.
        checkpoint: a checkpoint folder (default: the bundled demo).

    Returns:
        ``out``.
    """
    from playwright.sync_api import expect, sync_playwright

    import app
    from feedback_db import FeedbackStore, OverlayCache
    from review_app.examples import ensure_synthetic_examples
    from review_app.launch import serve
    from review_app.model_process import load_pipeline

    with tempfile.TemporaryDirectory(prefix="diffvqa-screenshot-") as tmp:
        folder = Path(tmp)
        examples = ensure_synthetic_examples(folder / "examples")
        if not examples:
            raise RuntimeError("no synthetic example could be generated (python -m train synth failed)")
        with FeedbackStore(f"sqlite:///{folder / 'feedback.sqlite3'}") as store:
            demo = app.build_demo(load_pipeline(checkpoint), store, examples=examples,
                                  overlays=OverlayCache(folder / "overlays"), preload=examples[0])
            port = _free_port()
            serve(demo, port=port, examples=examples, prevent_thread_lock=True, quiet=True)
            try:
                with sync_playwright() as playwright:
                    browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
                    page = browser.new_page(viewport={"width": width, "height": height}, device_scale_factor=1)
                    page.goto(f"http://127.0.0.1:{port}/", wait_until="networkidle")
                    expect(page.locator("#analysis-status")).to_contain_text("Analysed", timeout=120_000)
                    for element in ("#main-view img", "#ref-view img", "#mask-u img", "#mask-m img"):
                        expect(page.locator(element)).to_be_visible(timeout=60_000)
                    time.sleep(1.0)  # let the images finish drawing
                    out.parent.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(out), full_page=full_page)
                    browser.close()
            finally:
                demo.close()
    return out


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options and take the picture."""
    parser = argparse.ArgumentParser(prog="python -m review_app.screenshot", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="PNG to write, e.g. docs/images/review-app.png")
    parser.add_argument("--width", type=int, default=1440)
    parser.add_argument("--height", type=int, default=1120)
    parser.add_argument("--full-page", action="store_true", help="the whole page, not just the window")
    parser.add_argument("--chromium", default=CHROMIUM, help=f"Chromium executable (default {CHROMIUM})")
    parser.add_argument("--checkpoint", metavar="DIR", help="checkpoint folder (default: the bundled demo)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not Path(args.chromium).exists():
        print(f"error: no Chromium at {args.chromium} (apt-get install chromium, or --chromium PATH)", file=sys.stderr)
        return 2
    path = take(args.out, width=args.width, height=args.height, full_page=args.full_page, chromium=args.chromium,
                checkpoint=args.checkpoint)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
