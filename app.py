"""DiffVQA review app: radiologists check the model's answers and masks and record their verdicts.

    python app.py [--checkpoint DIR] [--db URL] [--examples DIR] [--host 127.0.0.1] [--port 7860] [--auth FILE]

This file only lays out the Gradio UI and wires its events; the logic lives in ``review_app`` (handlers,
service, rendering), the model in ``diffvqa_core`` and the database in ``feedback_db``. ``build_demo`` can be
imported (tests, notebooks) without starting a server.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

for _key, _value in (("GRADIO_ANALYTICS_ENABLED", "False"), ("HF_HUB_DISABLE_TELEMETRY", "1"), ("HF_HUB_OFFLINE", "1")):
    os.environ.setdefault(_key, _value)

import gradio as gr  # noqa: E402

from diffvqa_core.data.vocabulary import QUESTION_TYPES  # noqa: E402
from feedback_db import FeedbackStore, OverlayCache  # noqa: E402
from review_app.examples import ExamplePair, load_examples  # noqa: E402
from review_app.handlers import (  # noqa: E402
    MASK_CHOICES,
    RATING_CHOICES,
    TABLE_COLUMNS,
    TABLE_WIDTHS,
    VERDICT_CHOICES,
    Handlers,
)
from review_app.questions import OTHER, question_choices  # noqa: E402
from review_app.service import ReviewService  # noqa: E402

log = logging.getLogger("diffvqa.app")
QUESTION_TYPE_CHOICES = [*QUESTION_TYPES, OTHER]


def build_demo(pipeline: Any, store: FeedbackStore, examples_dir: str | Path | None = None, *,
               examples: Sequence[ExamplePair] | None = None, overlays: OverlayCache | None = None,
               synthetic_examples: bool = True) -> gr.Blocks:
    """Lay out the review app over a pipeline and a feedback store.

    Args:
        pipeline: a ``DiffVQAPipeline``.
        store: the feedback database.
        examples_dir: a folder of pairs with ``manifest.csv`` (or the benchmark layout) for the picker.
        examples: the picker's pairs, if already loaded (then ``examples_dir`` is ignored).
        overlays: where review pictures are kept (default: the per-user cache of the database).
        synthetic_examples: also offer a few generated synthetic pairs.

    Returns:
        The Blocks app, not launched (see ``review_app.launch.serve``).
    """
    if examples is None:
        examples = load_examples(examples_dir, synthetic=synthetic_examples)
    h = Handlers(ReviewService(pipeline, store, overlays), examples)
    with gr.Blocks(title="DiffVQA review", analytics_enabled=False) as demo:
        gr.HTML(h.banner_html(), elem_id="banner")
        with gr.Tab("Review", id="review"):
            with gr.Row(equal_height=False):
                with gr.Column(scale=1, min_width=300):
                    example = gr.Dropdown([p.name for p in examples], value=None, label="Example pair",
                                          elem_id="example", info="or upload PNG / JPEG / DICOM below")
                    attribution = gr.Markdown("", elem_id="attribution")
                    main_file = gr.File(label="Main image (current visit)", type="filepath", elem_id="main-file",
                                        height=90)
                    ref_file = gr.File(label="Reference image (prior visit)", type="filepath", elem_id="ref-file",
                                       height=90)
                    question = gr.Dropdown(question_choices(), value=question_choices()[0], allow_custom_value=True,
                                           label="Question", info="pick one of the seven families or type",
                                           elem_id="question")
                    analyze = gr.Button("Analyse", variant="primary", elem_id="analyze")
                    answer = gr.Textbox(label="Answer", lines=2, interactive=False, elem_id="answer")
                    theta = gr.Textbox(label="Registration (main onto reference)", interactive=False,
                                       elem_id="theta")
                    status = gr.Markdown("", elem_id="analysis-status")
                with gr.Column(scale=3):
                    with gr.Row():
                        ref_view = gr.Image(label="Reference (prior)", format="png", interactive=False, height=440,
                                            elem_id="ref-view", elem_classes="visit", buttons=["fullscreen"])
                        main_view = gr.Image(label="Main (current)", format="png", interactive=False, height=440,
                                             elem_id="main-view", elem_classes="visit", buttons=["fullscreen"])
                    with gr.Row():
                        mask = gr.Radio(MASK_CHOICES, value="M", label="Overlay", elem_id="mask", scale=2)
                        opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Opacity", elem_id="opacity")
                        lam = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Lambda  (M = λU + (1-λ)F)",
                                        elem_id="lambda", info="on release: overlays at once, then a new answer")
                    with gr.Row():
                        center = gr.Slider(0.0, 1.0, value=0.5, step=0.01, label="Window centre", elem_id="center")
                        width = gr.Slider(0.05, 1.0, value=1.0, step=0.01, label="Window width", elem_id="width")
                    with gr.Row():
                        registered = gr.ImageSlider(label="Registered main ⟷ reference (drag)", format="png",
                                                    interactive=False, height=360, elem_id="registered")
                        strip = gr.Image(label="Masks on the registered main image", format="png",
                                         interactive=False, height=360, elem_id="mask-strip")
            with gr.Group(elem_id="review-panel"):
                gr.Markdown("### Your review", elem_id="review-title")
                with gr.Row():
                    analysis_id = gr.Number(label="Analysis #", precision=0, interactive=False,
                                            elem_id="analysis-id", min_width=90, scale=0)
                    verdict = gr.Radio(VERDICT_CHOICES, value=None, label="Verdict", elem_id="verdict", scale=2)
                    rating = gr.Radio(RATING_CHOICES, value=None, label="Mask rating (does M mark the change?)",
                                      elem_id="mask-rating", scale=2)
                    reviewer = gr.Textbox(label="Reviewer", elem_id="reviewer", max_length=100, scale=1)
                with gr.Row():
                    corrected = gr.Textbox(label="Corrected answer", lines=2, max_length=2000, elem_id="corrected")
                    comment = gr.Textbox(label="Comment", lines=2, max_length=4000, elem_id="comment")
                with gr.Row():
                    save = gr.Button("Save review", variant="primary", elem_id="save-review", scale=0, min_width=180)
                    review_status = gr.Markdown("", elem_id="review-status")
                    review_id = gr.Number(visible=False, precision=0, elem_id="review-id")
                gr.Markdown("Shortcuts: **Alt+1** agree · **Alt+2** partly · **Alt+3** disagree · **Alt+S** save · "
                            "**Alt+A** analyse", elem_id="shortcuts")
        with gr.Tab("Disagreements", id="disagreements") as disagreements_tab:
            with gr.Row():
                f_type = gr.Dropdown(QUESTION_TYPE_CHOICES, value=None, label="Question type", elem_id="f-type")
                f_verdict = gr.CheckboxGroup(VERDICT_CHOICES, value=["disagree", "partly"], label="Verdict",
                                             elem_id="f-verdict")
                f_reviewer = gr.Textbox(label="Reviewer", elem_id="f-reviewer")
                f_since = gr.Textbox(label="From (YYYY-MM-DD, UTC)", elem_id="f-since")
                f_until = gr.Textbox(label="To (inclusive)", elem_id="f-until")
            with gr.Row():
                refresh = gr.Button("Refresh", elem_id="refresh", scale=0, min_width=120)
                count = gr.Markdown("", elem_id="count")
            table = gr.Dataframe(headers=TABLE_COLUMNS, value=[], interactive=False, wrap=True,
                                 elem_id="reviews-table", max_height=560, column_widths=TABLE_WIDTHS)
            with gr.Row():
                selected = gr.Textbox(label="Review ids to export (click rows; empty = all shown)",
                                      elem_id="selected")
                export = gr.Button("Export zip", variant="primary", elem_id="export", scale=0, min_width=160)
                export_file = gr.File(label="Export", interactive=False, elem_id="export-file", height=90)

        display = [mask, opacity, center, width]
        images = [ref_view, main_view, registered, strip]
        result = [answer, theta, analysis_id, *images, status, review_status]
        filters = [f_type, f_verdict, f_reviewer, f_since, f_until]

        example.change(h.pick_example, [example, question, *display],
                       [main_file, ref_file, question, attribution, ref_view, main_view], api_visibility="private")
        main_file.upload(h.preview, [main_file, *display], main_view, api_visibility="private")
        ref_file.upload(h.preview, [ref_file, *display], ref_view, api_visibility="private")
        analyze.click(h.analyze, [main_file, ref_file, question, lam, *display], result,
                      api_name="analyze", concurrency_id="model").success(
            h.blank_review, None, [verdict, rating, corrected, comment], api_visibility="private")
        lam.release(h.refuse, [analysis_id, lam, *display], images, api_visibility="private",
                    show_progress="hidden").then(
            h.reanswer, [analysis_id, lam, *display], result, api_name="reanswer", concurrency_id="model")
        gr.on([mask.change, opacity.release, center.release, width.release], h.redraw,
              [analysis_id, lam, *display], images, api_visibility="private", show_progress="hidden")
        save.click(h.record_review, [analysis_id, verdict, corrected, rating, comment, reviewer, lam, *display],
                   [review_status, review_id], api_name="record_review", concurrency_limit=8)
        gr.on([refresh.click, disagreements_tab.select], h.list_reviews, filters, [table, count],
              api_name="list_reviews")
        table.select(h.toggle_selected, [selected, table], selected, api_visibility="private")
        export.click(h.export, [*filters, selected], export_file, api_name="export_disagreements")
        demo.load(h.reviewer_from_login, None, reviewer, api_visibility="private")
    return demo


def load_pipeline(checkpoint: str | None) -> Any:
    """The checkpoint asked for; without one the bundled demo, else a random-weight tiny model (with a banner)."""
    from diffvqa_core import DiffVQAConfig, DiffVQAPipeline

    if checkpoint is not None:
        return DiffVQAPipeline.from_pretrained(checkpoint)
    try:
        return DiffVQAPipeline.from_pretrained(None)
    except FileNotFoundError as exc:
        log.warning("%s; falling back to a random-weight tiny model (answers are meaningless)", exc)
        return DiffVQAPipeline.from_config(DiffVQAConfig.from_preset("tiny"))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options of the app."""
    parser = argparse.ArgumentParser(prog="python app.py", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", metavar="DIR", help="checkpoint folder (default: the bundled demo)")
    parser.add_argument("--db", metavar="URL", help="SQLAlchemy URL of the feedback database "
                        "(default: $DIFFVQA_DB_URL or ~/.local/share/diffvqa/feedback.sqlite3)")
    parser.add_argument("--examples", metavar="DIR", help="folder of pairs with manifest.csv (main_file, ref_file)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--auth", metavar="FILE", help="file of user:password lines; enables login, "
                        "and the login name becomes the reviewer")
    parser.add_argument("--no-synthetic-examples", action="store_true", help="do not generate synthetic pairs")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options, open the model and the database, and serve the app until interrupted."""
    from review_app.auth import load_auth
    from review_app.launch import serve

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        auth = load_auth(args.auth) if args.auth else None
        examples = load_examples(args.examples, synthetic=not args.no_synthetic_examples)
        store = FeedbackStore(args.db)
        pipeline = load_pipeline(args.checkpoint)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"feedback database: {store.display_url}", flush=True)
    demo = build_demo(pipeline, store, examples=examples)
    _, url, _ = serve(demo, host=args.host, port=args.port, auth=auth, examples=examples,
                      prevent_thread_lock=True, quiet=True)
    print(f"DiffVQA review app on {url}  (Ctrl+C to stop)", flush=True)
    demo.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(main())
