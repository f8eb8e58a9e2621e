"""Launching the app safely: loopback by default, no share link, bounded uploads, limited file access."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import gradio as gr

from review_app.examples import ExamplePair

log = logging.getLogger("diffvqa.app")
ASSETS = Path(__file__).resolve().parents[1] / "assets"
MAX_UPLOAD = "50mb"
APP_CSS = """
/* Issue 17: the subtraction panel keeps a mask panel's width when it wraps under U, F, M on narrower screens. */
#subtraction-panel { max-width: calc((100% - 24px) / 3); }
#subtraction-scale { margin-top: 2px; }
#worklist-progress p { margin: 2px 0; font-size: 14px; }
#truth textarea { font-size: 16px !important; }
"""
"""Styles of the features added after assets/review.css (appended to it)."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def example_folders(examples: Iterable[ExamplePair]) -> list[str]:
    """The folders the app may serve files from: those holding example images, nothing else."""
    return sorted({str(path.parent) for pair in examples for path in (pair.main, pair.ref)})


def launch_settings() -> dict[str, Any]:
    """CSS, JS (keyboard shortcuts, dark reading-room theme) and theme for ``Blocks.launch``."""
    return {
        "css": (ASSETS / "review.css").read_text(encoding="utf-8") + APP_CSS,
        "js": (ASSETS / "review.js").read_text(encoding="utf-8"),
        "theme": gr.themes.Base(primary_hue="sky", neutral_hue="slate"),
    }


def serve(demo: gr.Blocks, *, host: str = "127.0.0.1", port: int | None = 7860,
          auth: Callable[[str, str], bool] | None = None, examples: Iterable[ExamplePair] = (),
          folders: Iterable[str] = (), prevent_thread_lock: bool = False,
          quiet: bool = False) -> tuple[Any, str, str]:
    """Queue and launch ``demo`` with the app's safety settings; returns Gradio's (app, local url, share url).

    The app may serve files from the examples' folders and from ``folders`` (a worklist's benchmark folder).

    Warns on the console when the app is reachable from other machines without a login.
    """
    if not is_loopback(host) and auth is None:
        message = (f"WARNING: the review app listens on {host}, reachable from other machines, WITHOUT a login. "
                   "Anyone who can reach it can read the images and write reviews; use --auth FILE.")
        log.warning(message)
        print(message, flush=True)
    demo.queue(default_concurrency_limit=4)
    return demo.launch(
        server_name=host, server_port=port, share=False, auth=auth,
        auth_message="DiffVQA review: sign in with your reviewer account." if auth else None,
        show_error=True, max_file_size=MAX_UPLOAD, allowed_paths=sorted({*example_folders(examples), *folders}),
        footer_links=["api"], prevent_thread_lock=prevent_thread_lock, quiet=quiet, ssr_mode=False,
        enable_monitoring=False, pwa=False, mcp_server=False, **launch_settings(),
    )
