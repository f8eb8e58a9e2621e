"""The model in its own process (review_app.model_process): the app's UI process never imports PyTorch, the model
process answers exactly as the pipeline does in-process, its errors come back by kind with their message, and a
model that cannot load says why."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from app_support import REPO

QUESTION = "what has changed compared to the reference image?"


def test_importing_the_app_leaves_pytorch_to_the_model_process() -> None:
    code = "import sys, app; print(sorted(m for m in ('torch', 'transformers', 'timm') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def model() -> Iterator[object]:
    from review_app.model_process import ModelProcess

    process = ModelProcess(None, "cpu", "auto")
    yield process
    process.close()


def test_the_model_process_answers_as_the_pipeline_does_in_process(model) -> None:
    from diffvqa_core import DiffVQAPipeline
    from diffvqa_core.bench import test_pair

    model.wait_ready(timeout=180)
    local = DiffVQAPipeline.from_pretrained(None)
    assert model.ready and model.is_demo and model.checkpoint_sha256 == local.checkpoint_sha256
    assert model.config.to_dict() == local.config.to_dict() and model.checkpoint_name == "demo_model"
    main, ref = test_pair(5, size=256)
    remote, here = model.analyze(main, ref, QUESTION), local.analyze(main, ref, QUESTION)
    assert remote.answer == here.answer and remote.answered_by == here.answered_by
    np.testing.assert_allclose(remote.theta, here.theta, atol=1e-5)
    np.testing.assert_allclose(remote.fused_mask, here.fused_mask, atol=1e-5)
    again = model.reanalyze(remote, lam=0.2)
    assert again.lam == pytest.approx(0.2) and again.handle != remote.handle
    assert again.answer == local.reanalyze(here, lam=0.2).answer
    np.testing.assert_allclose(model.fuse(remote, 0.3), local.fuse(here, 0.3), atol=1e-6)
    with pytest.raises(ValueError, match="lambda"):
        model.fuse(remote, 1.5)


def test_a_forgotten_analysis_is_made_again_from_its_films(model) -> None:
    from dataclasses import replace

    from diffvqa_core.bench import test_pair

    main, ref = test_pair(6, size=256)
    first = model.analyze(main, ref, QUESTION)
    forgotten = replace(first, handle=10**9)  # as if the model process had dropped it from its memory
    answer = model.reanalyze(forgotten, lam=0.7)
    assert answer.lam == pytest.approx(0.7) and answer.question == QUESTION
    assert answer.answer == model.reanalyze(first, lam=0.7).answer


def test_errors_in_the_model_process_come_back_by_kind_with_their_message(model) -> None:
    from diffvqa_core.bench import test_pair
    from diffvqa_core.imaging import ImageReadError

    main, ref = test_pair(7, size=256)
    with pytest.raises(ValueError, match="the question is empty"):
        model.analyze(main, ref, "   ")
    with pytest.raises(ImageReadError):
        model.analyze(b"not an image", ref, QUESTION)
    with pytest.raises(ValueError, match="lambda"):
        model.analyze(main, ref, QUESTION, 2.0)
    assert model.analyze(main, ref, QUESTION).answer  # still serving after both


def test_a_model_that_cannot_load_says_why_and_its_process_ends(tmp_path: Path) -> None:
    from review_app.model_process import ModelProcess, ModelProcessError

    process = ModelProcess(str(tmp_path), "cpu", "auto")
    try:
        with pytest.raises(ModelProcessError, match="config.json|model.safetensors|checkpoint"):
            process.wait_ready(timeout=180)
        assert not process.ready
        with pytest.raises(ModelProcessError):
            process.analyze(np.zeros((64, 64)), np.zeros((64, 64)), QUESTION)
    finally:
        process.close()
    assert process._process.wait(timeout=30) is not None


def test_the_checkpoint_is_known_from_its_files_before_the_model_loads(tmp_path: Path) -> None:
    from diffvqa_core.checkpoint_files import DEMO_CHECKPOINT, checkpoint_facts, file_sha256

    facts = checkpoint_facts(None)
    assert facts is not None and facts["is_demo"] and facts["checkpoint_name"] == "demo_model"
    assert facts["checkpoint_sha256"] == file_sha256(DEMO_CHECKPOINT / "model.safetensors")
    assert checkpoint_facts(tmp_path) is None  # no files: only loading it can say what is wrong


def test_the_example_s_analysis_is_kept_between_starts_and_read_back_without_the_model(model, tmp_path: Path) -> None:
    from diffvqa_core.bench import test_pair
    from feedback_db import FeedbackStore
    from review_app.preload_memo import KEPT, PreloadMemo
    from review_app.service import ReviewService

    main, ref = test_pair(8, size=256)
    files = []
    for name, film in (("main.png", main), ("ref.png", ref)):
        import cv2

        cv2.imwrite(str(tmp_path / name), (film * 255).astype(np.uint8))
        files.append(str(tmp_path / name))
    memo = model.preload_memo(tmp_path / "memo")
    assert memo is not None
    with FeedbackStore(f"sqlite:///{tmp_path / 'f.sqlite3'}") as store:
        service = ReviewService(model, store)
        first = service.analyze(*files, QUESTION, 0.5, pin=True, memo=memo)
        assert len(list((tmp_path / "memo").glob("*.npz"))) == 1

        class NoModel:  # the model still loading: a memo hit must not ask it
            def __getattr__(self, name):
                if name in ("analyze", "reanalyze"):
                    raise AssertionError("the model was asked")
                return getattr(model, name)

        service.pipeline = NoModel()
        assert service.memoized(*files, QUESTION, 0.5, memo)
        again = service.analyze(*files, QUESTION, 0.5, pin=True, memo=memo)
        assert again.analysis_id != first.analysis_id and again.answer == first.answer
        assert again.theta_words == first.theta_words
        service.pipeline = model  # a re-answer of a remembered analysis analyses its films again
        assert service.reanswer(again.analysis_id, 0.3).lam == pytest.approx(0.3)
    other = PreloadMemo(tmp_path / "memo", memo.identity + "x")  # another checkpoint, code or library version
    assert other.get(other.key(main, ref, QUESTION, 0.5)) is None
    assert memo.get(memo.key(main, ref, QUESTION, 0.4)) is None and memo.get(memo.key(ref, main, QUESTION, 0.5)) is None
    for seed in range(KEPT + 2):
        memo.put(memo.key(main, ref, f"{QUESTION} {seed}", 0.5), model.analyze(main, ref, QUESTION))
    assert len(list((tmp_path / "memo").glob("*.npz"))) == KEPT
    (tmp_path / "memo" / "broken.npz").write_bytes(b"not a zip")
    assert memo.get("broken") is None


def test_the_example_s_pictures_are_kept_beside_its_analysis_and_copied_out_for_serving(tmp_path: Path) -> None:
    """review_app.preload_memo keeps the drawn pictures of the example to open on: read back as copies in a fresh
    folder (Gradio serves those), missing on any change of films, question or lambda, the newest KEPT kept, and a
    damaged folder drawn again rather than served."""
    from review_app.preload_memo import KEPT, PICTURES, PreloadMemo

    films = []
    for name in ("main.png", "ref.png"):
        (tmp_path / name).write_bytes(name.encode())
        films.append(tmp_path / name)
    drawn = tmp_path / "drawn"
    drawn.mkdir()
    for name in ("a.png", "b-0.png", "b-1.png"):
        (drawn / name).write_bytes(f"picture {name}".encode())
    pictures = {"a": str(drawn / "a.png"), "b": (str(drawn / "b-0.png"), str(drawn / "b-1.png")), "c": None}
    memo = PreloadMemo(tmp_path / "memo", "identity")
    key = memo.picture_key(*films, QUESTION, 0.5)
    out = tmp_path / "out"
    out.mkdir()
    assert memo.get_pictures(key, out) is None
    memo.put_pictures(key, pictures)
    kept = memo.get_pictures(key, out)
    assert kept is not None and kept["c"] is None
    assert Path(kept["a"]).parent == out and Path(kept["a"]).read_bytes() == b"picture a.png"
    assert [Path(p).read_bytes() for p in kept["b"]] == [b"picture b-0.png", b"picture b-1.png"]
    assert len({key, memo.picture_key(*films, QUESTION, 0.4), memo.picture_key(*reversed(films), QUESTION, 0.5),
                PreloadMemo(tmp_path / "memo", "other").picture_key(*films, QUESTION, 0.5)}) == 4
    (tmp_path / "memo" / PICTURES / key / "a.png").unlink()
    assert memo.get_pictures(key, out) is None  # damaged: drawn again
    for lam in range(KEPT + 2):
        memo.put_pictures(memo.picture_key(*films, QUESTION, lam / 10), pictures)
    assert len([f for f in (tmp_path / "memo" / PICTURES).iterdir()]) == KEPT


def test_the_app_imports_gradio_without_rewriting_its_type_stubs() -> None:
    """review_app.fast_gradio_import: importing app.py swaps Gradio's per-import stub writer for a no-op, and the
    components keep their events."""
    script = ("import app, gradio as gr, gradio.component_meta as meta\n"
              "print(meta.create_or_modify_pyi.__name__, callable(gr.Button.click), callable(gr.Image.upload))")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["_no_stub_writing", "True", "True"]


def test_a_later_start_opens_on_the_kept_pictures_without_drawing_them(model, tmp_path: Path) -> None:
    """Handlers.preload with the memo: the first start draws the example's pictures and keeps them; the next one
    shows the same pictures (copies) without asking the model or drawing anything."""
    import cv2

    from diffvqa_core.bench import test_pair
    from feedback_db import FeedbackStore
    from review_app.examples import ExamplePair
    from review_app.handlers import EXAMPLE, IMAGES, SCREEN, Handlers
    from review_app.service import ReviewService

    model.wait_ready(timeout=180)
    main, ref = test_pair(9, size=256)
    for name, film in (("main.png", main), ("ref.png", ref)):
        cv2.imwrite(str(tmp_path / name), (film * 255).astype(np.uint8))
    pair = ExamplePair("synthetic 1", tmp_path / "main.png", tmp_path / "ref.png", "test pair", QUESTION, "")
    memo = model.preload_memo(tmp_path / "memo")
    with FeedbackStore(f"sqlite:///{tmp_path / 'f.sqlite3'}") as store:
        first = Handlers(ReviewService(model, store), [pair], preload_memo=memo).preload(pair, QUESTION)
        service = ReviewService(model, store)
        service.render = lambda *a, **k: pytest.fail("the kept pictures were drawn again")

        class NoModel:
            def __getattr__(self, name):
                if name in ("analyze", "reanalyze"):
                    raise AssertionError("the model was asked")
                return getattr(model, name)

        service.pipeline = NoModel()
        again = Handlers(service, [pair], preload_memo=memo).preload(pair, QUESTION)
    at = {name: len(EXAMPLE) + i for i, name in enumerate(SCREEN)}
    assert again[at["answer"]] == first[at["answer"]] and again[at["analysis_id"]] != first[at["analysis_id"]]
    for name in IMAGES:
        before, after = first[at[name]], again[at[name]]
        pairs = zip(before, after) if isinstance(before, tuple) else [(before, after)]
        for one, other in pairs:
            assert one != other and Path(one).read_bytes() == Path(other).read_bytes(), name
