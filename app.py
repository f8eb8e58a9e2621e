"""DiffVQA review app: radiologists check the model's answers and masks and record their verdicts.

    python app.py [--checkpoint DIR] [--db URL] [--examples DIR] [--host 127.0.0.1] [--port 7860] [--auth FILE]
                  [--no-preload] [--device auto|cpu|cuda] [--precision auto|bf16|fp32]
                  [--worklist DIR [--split test] [--question-type difference] [--limit N]]

This file only lays out the Gradio UI and wires its events; the logic lives in ``review_app`` (handlers,
service, rendering), the model in ``diffvqa_core`` and the database in ``feedback_db``. ``build_demo`` can be
imported (tests, notebooks) without starting a server.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

STARTED = time.perf_counter()
if __name__ == "__main__" and not {"-h", "--help"} & set(sys.argv[1:]):
    # the model loads in its own process while this one imports Gradio (start-up time)
    print("Starting the DiffVQA review app: loading the model in its own process, importing Gradio ...", flush=True)
    from review_app.model_process import ModelProcess

    EARLY_MODEL: ModelProcess | None = ModelProcess.from_argv(sys.argv[1:])
else:
    EARLY_MODEL = None
for _key, _value in (("GRADIO_ANALYTICS_ENABLED", "False"), ("HF_HUB_DISABLE_TELEMETRY", "1"), ("HF_HUB_OFFLINE", "1")):
    os.environ.setdefault(_key, _value)

from review_app.fast_gradio_import import skip_gradio_stub_writing  # noqa: E402

skip_gradio_stub_writing()  # Gradio rewrites its type stubs on every import: half of its import time
import gradio as gr  # noqa: E402

from diffvqa_core.data.vocabulary import QUESTION_TYPES  # noqa: E402
from feedback_db import FeedbackStore, OverlayCache, data_dir  # noqa: E402
from review_app.analysis_tab import analysis_tab  # noqa: E402
from review_app.examples import SYNTH_ATTRIBUTION, ExamplePair, load_examples  # noqa: E402
from review_app.handlers import (  # noqa: E402
    EXAMPLE,
    IMAGES,
    MASK_CHOICES,
    RATING_CHOICES,
    REVIEW,
    SCREEN,
    TABLE_COLUMNS,
    TABLE_WIDTHS,
    VERDICT_CHOICES,
    Handlers,
)
from review_app.questions import OTHER, question_choices  # noqa: E402
from review_app.rendering import colour_bar_html  # noqa: E402
from review_app.service import ReviewService  # noqa: E402
from review_app.subtraction import SUBTRACTION_NOTE, subtraction_bar_html  # noqa: E402
from review_app.worklist import NEXT_JS, TRUTH_HIDDEN, WORKLIST_SCREEN, Worklist, WorklistHandlers  # noqa: E402

log = logging.getLogger("diffvqa.app")
QUESTION_TYPE_CHOICES = [*QUESTION_TYPES, OTHER]
BROWSER_STATE_SECRET = "diffvqa-review-app"
"""Key of the browser storage that remembers the reviewer's name: fixed, so the name survives an app restart
(it guards nothing secret; the name is not a credential)."""


MASK_NOTES = {
    "U": "**U · DINO prior**: where a frozen DINO model attends in either film (the union of the two maps); "
         "it learned nothing from this task.",
    "F": "**F · adaptive**: the mask DiffVQA learned from both films (in the bundled demo: where the registered "
         "pair changed).",
    "M": "**M · fused** = λU + (1−λ)F: the weights the image encoder reads both films through.",
}
REVIEW_SAVED_JS = "(id) => { if (id !== null && id !== undefined) { window.diffvqaReview?.saved(); } }"
"""Tells assets/review.js that the review form is saved (no warning on leaving the page)."""
LAMBDA_INFO = ("M = λU + (1−λ)F. 1 = only the prior U, 0 = only the adaptive F. Enter or release applies it: "
               "the overlays at once, then a new answer.")


def build_demo(pipeline: Any, store: FeedbackStore, examples_dir: str | Path | None = None, *,
               examples: Sequence[ExamplePair] | None = None, overlays: OverlayCache | None = None,
               synthetic_examples: bool = True, preload: ExamplePair | None = None,
               worklist: Worklist | None = None, preload_memo: Any = None) -> gr.Blocks:
    """Lay out the review app over a pipeline and a feedback store.

    Args:
        pipeline: a ``DiffVQAPipeline``, or a ``review_app.model_process.ModelProcess`` (the model in its own
            process; ``python app.py`` uses one).
        store: the feedback database.
        examples_dir: a folder of pairs with ``manifest.csv`` (or the benchmark layout) for the picker.
        examples: the picker's pairs, if already loaded (then ``examples_dir`` is ignored).
        overlays: where review pictures are kept (default: the per-user cache of the database).
        synthetic_examples: also offer a few generated synthetic pairs.
        preload: a pair analysed at once (in the background) and shown on every page as it opens (None: pages
            open empty); a page that opens before it is analysed waits for it.
        worklist: cases to review in order (``--worklist``): Previous / Next, progress per reviewer, the
            ground truth shown once the verdict is saved; a page opens on its reviewer's next case.
        preload_memo: a ``review_app.preload_memo.PreloadMemo`` in which ``preload``'s analysis is kept from one
            start to the next (then pages open on it before the model has loaded).

    Returns:
        The Blocks app, not launched (see ``review_app.launch.serve``).
    """
    if examples is None:
        examples = load_examples(examples_dir, synthetic=synthetic_examples)
    h = Handlers(ReviewService(pipeline, store, overlays), examples, preload_memo=preload_memo)
    wl = WorklistHandlers(h, worklist) if worklist is not None else None
    ui: dict[str, Any] = {}
    with gr.Blocks(title="DiffVQA review", analytics_enabled=False, fill_width=True) as demo:
        banner = gr.HTML(h.banner_html() if h.checkpoint_known else h.loading_banner_html(), elem_id="banner")
        with gr.Tab("Review", id="review"):
            with gr.Row(equal_height=False, elem_id="review-row"):
                with gr.Column(scale=1, min_width=290, elem_id="inputs"):
                    if wl is not None:
                        with gr.Group(elem_id="worklist"):
                            ui["progress"] = gr.Markdown(wl.progress_text(None, ""), elem_id="worklist-progress")
                            with gr.Row():
                                previous = gr.Button("◀ Previous", elem_id="worklist-previous", size="sm")
                                next_case = gr.Button("Next ▶", variant="primary", elem_id="worklist-next", size="sm")
                    ui["example"] = gr.Dropdown([p.name for p in examples], value=None, label="Example pair",
                                                elem_id="example", info="or upload two films below")
                    ui["main_file"] = gr.File(label="Main image (current visit): PNG, JPEG or DICOM",
                                              type="filepath", elem_id="main-file", height=64)
                    ui["ref_file"] = gr.File(label="Reference image (prior visit)", type="filepath",
                                             elem_id="ref-file", height=64)
                    ui["question"] = gr.Dropdown(question_choices(), value=question_choices()[0],
                                                 allow_custom_value=True, label="Question",
                                                 info="pick one of the seven families or type", elem_id="question")
                    analyze = gr.Button("Analyse", variant="primary", elem_id="analyze")
                    ui["status"] = gr.Markdown("Choose both films: the **main** (current) and the **reference** "
                                               "(prior) visit.", elem_id="analysis-status")
                    ui["answer"] = gr.Textbox(label="Answer", lines=2, interactive=False, elem_id="answer")
                    if wl is not None:
                        ui["truth"] = gr.Textbox(label="Ground truth (benchmark)", lines=2, interactive=False,
                                                 placeholder=TRUTH_HIDDEN, elem_id="truth")
                    ui["attribution"] = gr.Markdown("", elem_id="attribution")
                    ui["theta"] = gr.Textbox(label="Registration (main onto reference)", interactive=False,
                                             elem_id="theta")
                with gr.Column(scale=3, min_width=600, elem_id="outputs"):
                    with gr.Row(elem_id="films"):
                        ui["ref_view"] = gr.Image(label="Reference (prior)", format="png", interactive=False,
                                                  height=400, elem_id="ref-view", elem_classes="visit",
                                                  buttons=["fullscreen"])
                        ui["main_view"] = gr.Image(label="Main (current)", format="png", interactive=False,
                                                   height=400, elem_id="main-view", elem_classes="visit",
                                                   buttons=["fullscreen"])
                        ui["registered"] = gr.ImageSlider(label="Registered main ⟷ reference (drag)", format="png",
                                                          interactive=False, height=400, max_height=400,
                                                          elem_id="registered", buttons=["fullscreen"])
                    with gr.Row(elem_id="display-controls"):
                        mask = gr.Radio(MASK_CHOICES, value="M", label="Overlay on the films", elem_id="mask",
                                        scale=2)
                        opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Opacity", elem_id="opacity")
                        center = gr.Slider(0.0, 1.0, value=0.5, step=0.01, label="Window centre", elem_id="center")
                        width = gr.Slider(0.05, 1.0, value=1.0, step=0.01, label="Window width", elem_id="width")
                    with gr.Row(elem_id="masks"):
                        for name, title in (("U", "U · DINO prior"), ("F", "F · adaptive"), ("M", "M · fused")):
                            with gr.Column(min_width=260, elem_classes="mask-panel"):
                                ui[f"mask_{name.lower()}"] = gr.Image(
                                    label=title, format="png", interactive=False, height=340,
                                    elem_id=f"mask-{name.lower()}", elem_classes="mask", buttons=["fullscreen"])
                                gr.Markdown(MASK_NOTES[name], elem_classes="mask-note")
                        with gr.Column(min_width=260, elem_id="subtraction-panel"):
                            ui["subtraction"] = gr.Image(
                                label="Subtraction · registered main − reference", format="png", interactive=False,
                                height=340, elem_id="subtraction", elem_classes="mask", buttons=["fullscreen"])
                            gr.HTML(subtraction_bar_html(), elem_id="subtraction-scale")
                            gr.Markdown(SUBTRACTION_NOTE, elem_classes="mask-note")
                    with gr.Row(elem_id="mask-scale-row"):
                        with gr.Column(scale=2, min_width=300):
                            gr.HTML(colour_bar_html(), label="Colour scale of U, F and M", elem_id="mask-scale")
                            gr.Markdown("One colour scale for the three masks: dark blue 0 (ignored), red 1 "
                                        "(read in full).", elem_classes="mask-note")
                        lam = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Lambda (λ)", elem_id="lambda",
                                        info=LAMBDA_INFO, scale=1, min_width=300)
            with gr.Group(elem_id="review-panel"):
                gr.Markdown("### Your review", elem_id="review-title")
                ui["review_target"] = gr.Markdown("Nothing to review yet: analyse the pair on screen first.",
                                                  elem_id="review-target")
                with gr.Row():
                    ui["analysis_id"] = gr.Number(label="Analysis #", precision=0, interactive=False,
                                                  elem_id="analysis-id", min_width=90, scale=0)
                    ui["verdict"] = gr.Radio(VERDICT_CHOICES, value=None, label="Verdict on the answer",
                                             elem_id="verdict", scale=2)
                    ui["rating"] = gr.Radio(RATING_CHOICES, value=None, label="Mask rating: does M mark the change?",
                                            elem_id="mask-rating", scale=2)
                    reviewer = gr.Textbox(label="Reviewer", elem_id="reviewer", max_length=100, scale=1,
                                          info="remembered in this browser")
                with gr.Row():
                    ui["corrected"] = gr.Textbox(label="Corrected answer", lines=2, max_length=2000,
                                                 elem_id="corrected")
                    ui["comment"] = gr.Textbox(label="Comment", lines=2, max_length=4000, elem_id="comment")
                with gr.Row():
                    ui["save"] = gr.Button("Save review", variant="primary", elem_id="save-review", scale=0,
                                           min_width=180, interactive=False)
                    ui["review_status"] = gr.Markdown("", elem_id="review-status")
                gr.Markdown("Shortcuts: **Alt+1** agree · **Alt+2** partly · **Alt+3** disagree · **Alt+S** save · "
                            "**Alt+A** analyse · **Enter** in the λ box applies it"
                            + (" · **Alt+N** next case · **Alt+P** previous case" if wl else ""), elem_id="shortcuts")
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
                with gr.Column(scale=2):
                    details = gr.Markdown("Click a row to see what its reviewer saw.", elem_id="review-details")
                    with gr.Row():
                        selected = gr.Textbox(label="Review ids to export (click rows; empty = all shown)",
                                              elem_id="selected")
                        export = gr.Button("Export zip", variant="primary", elem_id="export", scale=0, min_width=160)
                    export_file = gr.File(label="Export", interactive=False, elem_id="export-file", height=90)
                picture = gr.Image(label="What the reviewer saw", format="png", interactive=False, height=320,
                                   elem_id="review-picture", scale=2, buttons=["fullscreen"])
        analysis_tab(store)  # Error analysis: charts, CSV and the /error_summary API (review_app/analysis_tab.py)

        # Not shown: the review id of the last save, the reviewer's name in this browser's storage, and the
        # triggers of the scripting API (/analyze, /reanswer, /record_review, /list_reviews), which raise errors
        # for scripts where the screen's own handlers write them into the status lines.
        review_id = gr.Number(visible=False, precision=0, elem_id="review-id")
        reviewer_memory = gr.BrowserState("", storage_key="diffvqa-reviewer", secret=BROWSER_STATE_SECRET)
        api_strip = gr.Image(visible=False, format="png")
        api_analyze, api_reanswer, api_save, api_list = (gr.Button(visible=False) for _ in range(4))

        display = [mask, opacity, center, width]
        screen = [ui[name] for name in SCREEN]
        review = [ui[name] for name in REVIEW]
        images = [ui[name] for name in IMAGES]
        analysis_id, status = ui["analysis_id"], ui["status"]
        files = [ui["main_file"], ui["ref_file"]]
        review_form = [ui["verdict"], ui["corrected"], ui["rating"], ui["comment"], reviewer]
        filters = [f_type, f_verdict, f_reviewer, f_since, f_until]

        analysing = analyze.click(h.analyze_on_screen, [*files, ui["question"], lam, *display], [*screen, *review],
                                  api_visibility="private", concurrency_id="model")
        refusing = lam.release(h.redraw_on_screen, [analysis_id, *files, lam, *display], [*images, status],
                               api_visibility="private", show_progress="hidden")
        reanswering = refusing.then(h.reanswer_on_screen, [analysis_id, lam, ui["verdict"], ui["rating"],
                                                          ui["review_status"], *display], [*screen, *review],
                                    api_visibility="private", concurrency_id="model")
        pending = [analysing, refusing, reanswering]  # a change of the inputs cancels what would answer the old ones
        picking = ui["example"].input(h.pick_example, [ui["example"], ui["question"], *display],
                            [ui[name] for name in (*EXAMPLE, *SCREEN, *REVIEW)], api_visibility="private",
                            cancels=pending)
        # always_last: an upload while the other film's event still runs is answered after it with both films (the
        # default, "once", dropped it and left "Choose both films" beside two films; seen under load)
        uploading = gr.on([ui["main_file"].upload, ui["main_file"].clear, ui["ref_file"].upload, ui["ref_file"].clear],
                          h.inputs_changed, [*files, *display], [ui["example"], ui["attribution"], *screen, *review],
                          api_visibility="private", trigger_mode="always_last", cancels=pending)
        asking = ui["question"].input(h.question_changed, [ui["example"], ui["question"], *files, *display],
                             [ui["attribution"], *screen, *review], api_visibility="private",
                             trigger_mode="always_last", cancels=pending)
        gr.on([mask.change, opacity.release, center.release, width.release], h.redraw_on_screen,
              [analysis_id, *files, lam, *display], [*images, status], api_visibility="private",
              show_progress="hidden")
        saving = ui["save"].click(h.save_on_screen, [analysis_id, *review_form, lam, *display],
                                  [ui["review_status"], review_id], api_visibility="private", concurrency_limit=8)
        saving.then(None, [review_id], None, js=REVIEW_SAVED_JS)
        reviewer.change(h.remember_reviewer, reviewer, reviewer_memory, api_visibility="private",
                       trigger_mode="always_last", show_progress="hidden")

        api_outputs = [ui["answer"], ui["theta"], analysis_id, ui["ref_view"], ui["main_view"], ui["registered"],
                       api_strip, status, ui["review_status"]]
        api_analyze.click(h.analyze, [*files, ui["question"], lam, *display], api_outputs, api_name="analyze",
                          concurrency_id="model")
        api_reanswer.click(h.reanswer, [analysis_id, lam, *display], api_outputs, api_name="reanswer",
                           concurrency_id="model")
        api_save.click(h.record_review, [analysis_id, *review_form, lam, *display], [ui["review_status"], review_id],
                       api_name="record_review", concurrency_limit=8)

        gr.on([refresh.click, disagreements_tab.select], h.list_reviews_on_screen, [*filters, selected],
              [table, count], api_visibility="private")
        api_list.click(h.list_reviews, filters, [table, count], api_name="list_reviews")
        table.select(h.toggle_selected, [selected, table], [selected, table, picture, details],
                     api_visibility="private")
        export.click(h.export, [*filters, selected], export_file, api_name="export_disagreements")
        if wl is None:
            demo.load(h.reviewer_on_load, [reviewer_memory], reviewer, api_visibility="private")
        else:  # the worklist: Previous / Next, the truth after the verdict, /next_case
            position = gr.State(-1)
            case_outputs = [position, ui["progress"], ui["truth"], *(ui[name] for name in (*EXAMPLE, *SCREEN, *REVIEW))]
            assert len(case_outputs) == len(WORKLIST_SCREEN) + len(EXAMPLE) + len(SCREEN) + len(REVIEW)
            for button, step in ((next_case, wl.next_on_screen), (previous, wl.previous_on_screen)):
                button.click(step, [position, reviewer, lam, *display], case_outputs, api_visibility="private",
                             concurrency_id="model", cancels=pending)
            demo.load(wl.resume_on_load, [reviewer_memory, lam, *display], [reviewer, *case_outputs],
                      api_visibility="private")  # one event: a .then after a load event could hang its stream
            saving.then(wl.reveal_truth, [position, review_id, reviewer], [ui["truth"], ui["progress"]],
                        api_visibility="private")
            for changed in (picking, uploading, asking):  # the truth belonged to the case that was on screen
                changed.then(wl.truth_cleared, None, ui["truth"], api_visibility="private", show_progress="hidden")
            after, api_next = gr.Number(visible=False, precision=0), gr.Button(visible=False)
            api_next.click(wl.next_case, [reviewer, after, lam], [after, ui["progress"], ui["question"], ui["answer"],
                                                                  ui["theta"], analysis_id, status],
                           api_name="next_case", concurrency_id="model")
            demo.load(None, js=NEXT_JS)
        if not h.checkpoint_known:  # the model is loading in its own process: the banner says which once it is in
            demo.load(h.banner_html, None, banner, api_visibility="private", show_progress="hidden")
        if preload is not None:
            h.start_preload(preload, question_choices()[0])
            demo.load(h.preloaded, None, [ui[name] for name in (*EXAMPLE, *SCREEN, *REVIEW)],
                      api_visibility="private")
    return demo


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
    parser.add_argument("--no-preload", action="store_true",
                        help="open on an empty screen instead of an analysed synthetic example")
    parser.add_argument("--device", default="auto", metavar="auto|cpu|cuda",
                        help="where the model runs (default auto: CUDA when PyTorch sees a GPU, else the CPU)")
    parser.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"),
                        help="auto (default): bf16 autocast on a GPU, fp32 on a CPU")
    parser.add_argument("--worklist", metavar="DIR", help="review the cases of a benchmark folder (Medical-Diff-VQA "
                        "layout or python -m train synth's) in order, each reviewer from where they left off")
    parser.add_argument("--split", default="test", help="with --worklist: the split to review (default test; all)")
    parser.add_argument("--question-type", default="difference",
                        help="with --worklist: the question family to review (default difference; all)")
    parser.add_argument("--limit", type=int, metavar="N", help="with --worklist: only its first N cases")
    return parser.parse_args(argv)


def preload_pair(examples: Sequence[ExamplePair]) -> ExamplePair | None:
    """The example shown analysed when a page opens: the first synthetic pair, else the first pair, else None."""
    synthetic = [pair for pair in examples if pair.attribution == SYNTH_ATTRIBUTION]
    return (synthetic or list(examples) or [None])[0]


def main(argv: Sequence[str] | None = None, model: Any = None) -> int:
    """Parse the options, open the model and the database, and serve the app until interrupted.

    ``model``: a ``ModelProcess`` already loading what ``argv`` asks for (``python app.py`` starts it before
    importing Gradio); None starts one here.
    """
    from review_app.auth import load_auth
    from review_app.launch import serve
    from review_app.model_process import ModelProcess, ModelProcessError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    model = model or ModelProcess(args.checkpoint, args.device, args.precision)
    try:
        print(f"Loading the model ({args.checkpoint or 'the bundled demo'}) in its own process ...", flush=True)
        odd_checkpoint = bool(args.checkpoint) and not getattr(model, "knows_checkpoint", True)  # files not all there
        if odd_checkpoint or (args.device, args.precision) != ("auto", "auto"):
            model.wait_ready()  # the model process's verdict (a pickle file, no CUDA, ...) before opening anything
        auth = load_auth(args.auth) if args.auth else None
        examples = load_examples(args.examples, synthetic=not args.no_synthetic_examples)
        worklist = (Worklist.from_folder(args.worklist, args.split, args.question_type, args.limit)
                    if args.worklist else None)
        store = FeedbackStore(args.db)
    except (OSError, ValueError, ModelProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        model.close()
        return 2
    print(f"feedback database: {store.display_url}", flush=True)
    preload = None if args.no_preload or worklist else preload_pair(examples)
    memo = model.preload_memo(data_dir() / "preload") if preload is not None else None
    demo = build_demo(model, store, examples=examples, worklist=worklist, preload=preload, preload_memo=memo)
    _, url, _ = serve(demo, host=args.host, port=args.port, auth=auth, examples=examples,
                      folders=worklist.folders if worklist else (), prevent_thread_lock=True, quiet=True)
    print(f"DiffVQA review app on {url}  (Ctrl+C to stop)" + ("" if model.ready else "; the model is loading"),
          flush=True)
    try:
        model.wait_ready()
    except ModelProcessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        demo.close()
        model.close()
        return 2
    print(f"The model is loaded ({time.perf_counter() - STARTED:.1f} s after the start).", flush=True)
    try:
        demo.block_thread()
    finally:
        model.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(model=EARLY_MODEL))
