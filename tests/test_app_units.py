"""The review app's parts without a server: CLI, launch safety, auth file, examples, rendering, question types,
inert text."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app_support import REPO

import app  # noqa: E402  (app_support puts the repository root on sys.path)
from review_app import auth, examples, launch, rendering
from review_app.handlers import inert, parse_ids
from review_app.questions import question_choices, question_type


def test_importing_app_launches_nothing_and_help_works() -> None:
    result = subprocess.run([sys.executable, "app.py", "--help"], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0
    for flag in ("--checkpoint", "--db", "--examples", "--host", "--port", "--auth"):
        assert flag in result.stdout


def test_cli_defaults_bind_loopback_on_7860() -> None:
    args = app.parse_args([])
    assert (args.host, args.port, args.checkpoint, args.db, args.auth) == ("127.0.0.1", 7860, None, None, None)


def test_missing_demo_checkpoint_falls_back_to_random_tiny_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from diffvqa_core import DiffVQAPipeline

    def no_demo(path: Any = None) -> Any:
        raise FileNotFoundError("no diffvqa checkpoint")

    monkeypatch.setattr(DiffVQAPipeline, "from_pretrained", staticmethod(no_demo))
    from review_app.model_process import load_pipeline

    pipeline = load_pipeline(None)
    assert pipeline.checkpoint_sha256 == "random-init"


class _FakeDemo:
    def __init__(self) -> None:
        self.kwargs: dict[str, Any] = {}

    def queue(self, **_: Any) -> _FakeDemo:
        return self

    def launch(self, **kwargs: Any) -> tuple[None, str, str]:
        self.kwargs = kwargs
        return None, "", ""


def test_serve_never_shares_limits_uploads_and_files(tmp_path: Path) -> None:
    pair = examples.ExamplePair("p", tmp_path / "pairs" / "a.png", tmp_path / "pairs" / "b.png", "x")
    demo = _FakeDemo()
    launch.serve(demo, examples=[pair])  # type: ignore[arg-type]
    kwargs = demo.kwargs
    assert kwargs["server_name"] == "127.0.0.1" and kwargs["share"] is False
    assert kwargs["max_file_size"] == launch.MAX_UPLOAD
    assert kwargs["allowed_paths"] == [str(tmp_path / "pairs")]
    assert kwargs["show_error"] is True


def test_exposed_host_without_auth_warns(capsys: pytest.CaptureFixture[str]) -> None:
    launch.serve(_FakeDemo(), host="0.0.0.0")  # type: ignore[arg-type]
    assert "WITHOUT a login" in capsys.readouterr().out
    launch.serve(_FakeDemo(), host="0.0.0.0", auth=lambda user, password: True)  # type: ignore[arg-type]
    launch.serve(_FakeDemo(), host="127.0.0.1")  # type: ignore[arg-type]
    assert "WITHOUT a login" not in capsys.readouterr().out


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("::1", True), ("localhost", True),
                                                ("0.0.0.0", False), ("192.168.1.5", False), ("example.org", False)])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert launch.is_loopback(host) is loopback


def test_auth_file_accepts_plain_and_hashed_passwords(tmp_path: Path) -> None:
    path = tmp_path / "users.txt"
    path.write_text(f"# reviewers\nann:plain secret\nbob:{auth.hash_password('s3cret', iterations=1000)}\n")
    check = auth.load_auth(path)
    assert check("ann", "plain secret") and check("bob", "s3cret")
    assert not check("bob", "wrong") and not check("eve", "plain secret") and not check("ann", "")


def test_auth_file_without_users_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "users.txt"
    path.write_text("# nobody\n")
    with pytest.raises(ValueError, match="no users"):
        auth.load_auth(path)


def test_manifest_folder_lists_pairs_with_attribution_and_stays_inside(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    for name in ("a.png", "b.png"):
        (tmp_path / "img" / name).write_bytes(b"x")
    (tmp_path / "manifest.csv").write_text("pair_id,main_file,ref_file,attribution\n"
                                           "p1,img/a.png,img/b.png,Example source CC BY\n"
                                           "p2,../../etc/passwd,img/b.png,evil\n"
                                           "p3,img/missing.png,img/b.png,gone\n")
    pairs = examples.load_examples(tmp_path, synthetic=False)
    assert [(p.main.name, p.ref.name, p.attribution) for p in pairs] == [("a.png", "b.png", "Example source CC BY")]


def test_examples_folder_without_manifest_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="manifest.csv"):
        examples.load_examples(tmp_path, synthetic=False)


def test_shared_real_pairs_have_attribution(mhh_pairs_dir: Path) -> None:
    pairs = examples.read_manifest_folder(mhh_pairs_dir)
    assert len(pairs) >= 10
    assert all("Hannover Medical School" in p.attribution and p.main.is_file() for p in pairs)


def test_warp_with_identity_is_a_no_op_and_inverse_undoes_theta() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((40, 60)).astype(np.float32)
    identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert np.allclose(rendering.warp_normalised(image, identity, image.shape), image, atol=1e-5)
    theta = np.array([[0.98, 0.05, 0.03], [-0.04, 1.02, -0.02]])
    both = np.concatenate([theta, [[0, 0, 1]]]) @ np.concatenate([rendering.invert_theta(theta), [[0, 0, 1]]])
    assert np.allclose(both[:2], identity)


def test_warp_matches_affine_grid_and_grid_sample() -> None:
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(1)
    image = rng.random((24, 40)).astype(np.float32)
    theta = np.array([[0.97, 0.06, 0.1], [-0.05, 1.03, -0.08]], np.float32)
    grid = F.affine_grid(torch.from_numpy(theta)[None], [1, 1, 24, 40], align_corners=False)
    expected = F.grid_sample(torch.from_numpy(image)[None, None], grid, mode="bilinear", padding_mode="border",
                             align_corners=False)[0, 0].numpy()
    assert np.abs(rendering.warp_normalised(image, theta, image.shape) - expected).max() < 2e-2


def test_overlay_leaves_the_film_grey_where_the_mask_is_zero() -> None:
    gray = np.full((8, 8), 100, np.uint8)
    mask = np.zeros((8, 8), np.float32)
    mask[0, 0] = 1.0
    out = rendering.heat_overlay(gray, mask, opacity=0.8)
    assert (out[1:, 1:] == 100).all() and len(set(out[0, 0].tolist())) > 1


def test_mask_summary_is_size_independent() -> None:
    mask = np.zeros((10, 20), np.float32)
    mask[5, 15] = 0.9
    summary = rendering.mask_summary({"M": mask})["M"]
    assert summary["max"] == pytest.approx(0.9) and summary["argmax_permille"] == [550, 775]


@pytest.mark.parametrize(("question", "family"), [
    ("what has changed compared to the reference image?", "difference"),
    ("is there evidence of pleural effusion in this image?", "presence"),
    ("what level is the edema?", "level"),
    ("Which view is this image taken?", "view"),
    ("tell me a joke", "other"),
])
def test_question_type_follows_the_benchmark_grammar(question: str, family: str) -> None:
    assert question_type(question) == family


def test_every_picker_question_has_its_family() -> None:
    assert all(question_type(q) != "other" for q in question_choices())
    assert question_type(question_choices()[0]) == "difference"


def test_inert_escapes_html_and_markdown() -> None:
    text = inert('<img src=x onerror=alert(1)> **bold** [link](http://x)')
    assert "<" not in text and "**" not in text and "](" not in text


def test_parse_ids() -> None:
    assert parse_ids("3, 7 #12;3") == [3, 7, 12]
    assert parse_ids("") == []


class _Config:
    image_encoder = "swin_base_patch4_window12_384"
    image_size = 384


class _Pipeline:
    config = _Config()

    def __init__(self, name: str, digest: str, is_demo: bool) -> None:
        self.checkpoint_name, self.checkpoint_sha256, self.is_demo = name, digest, is_demo


@pytest.mark.parametrize(("name", "digest", "is_demo", "expected"), [
    ("demo_model", "ab" * 32, True, "trained on synthetic data, not for clinical use"),
    ("random-init", "random-init", False, "random weights, answers are meaningless"),
    ("run-7 <b>", "cd" * 32, False, "Research use only"),
])
def test_banner_names_the_checkpoint_and_its_status(name: str, digest: str, is_demo: bool, expected: str) -> None:
    from feedback_db import FeedbackStore
    from review_app.handlers import Handlers
    from review_app.service import ReviewService

    with FeedbackStore("sqlite://") as store:
        banner = Handlers(ReviewService(_Pipeline(name, digest, is_demo), store), []).banner_html()
    assert expected in banner
    assert "<b>run-7 <b>" not in banner  # the checkpoint name is escaped
    if digest != "random-init":
        assert digest[:12] in banner


@pytest.mark.parametrize(("question_type", "answer", "flagged"), [
    ("difference", "the level of edema has changed from moderate to moderate.", True),
    ("difference", "the level of edema has changed from mild to severe.", False),
    ("difference", "the main image has <b>", True),
    ("presence", "the main image has", False),  # only difference answers have a grammar to check
])
def test_status_flags_a_difference_answer_the_benchmark_could_not_write(question_type: str, answer: str,
                                                                         flagged: bool) -> None:
    from types import SimpleNamespace

    from review_app.handlers import Handlers
    from review_app.service import AnalysisResult

    picture = np.zeros((4, 4, 3), np.uint8)
    views = SimpleNamespace(reference=picture, main=picture, registered=picture, reference_plain=picture,
                            mask_strip=picture)
    result = AnalysisResult(analysis_id=3, answer=answer, theta_words="", lam=0.5, question_type=question_type,
                            views=views)
    outputs = Handlers(service=None, examples=[])._result_outputs(result, 0.1, "Analysed")
    status = outputs[-2]
    assert status.startswith("Analysed as analysis \\#3")
    assert ("not a well-formed answer" in status) == flagged
    assert "<b>" not in status
    if flagged and "moderate" in answer:
        assert "changed from moderate to moderate" in status


def test_synthetic_examples_are_generated_once_with_their_question_and_truth(tmp_path: Path) -> None:
    pairs = examples.ensure_synthetic_examples(tmp_path, pairs=2, seed=3)
    assert len(pairs) == 2
    assert all(p.main.is_file() and p.ref.is_file() and p.main != p.ref for p in pairs)
    assert all(question_type(p.question) == "difference" and p.truth for p in pairs)
    assert "no patient data" in pairs[0].attribution
    assert examples.ensure_synthetic_examples(tmp_path, pairs=2, seed=3) == pairs  # cached, not regenerated


# -- rendering: films at their own resolution, masks on one scale, captions ---------------------------------------
@pytest.mark.parametrize(("shape", "expected"), [((700, 640), (700, 640)), ((2000, 3000), (683, 1024))])
def test_films_render_at_their_resolution_up_to_1024(shape: tuple[int, int], expected: tuple[int, int]) -> None:
    film = np.random.default_rng(0).random(shape).astype(np.float32)
    masks = {k: np.full((24, 24), 0.5, np.float32) for k in ("U", "F", "M")}
    views = rendering.render_views(film, film, np.array([[1.0, 0, 0], [0, 1.0, 0]]), masks, rendering.Display(), 0.5)
    for image in (views.main, views.reference, views.registered, views.reference_plain):
        assert image.shape == (*expected, 3)
    assert set(views.mask_tiles) == {"U", "F", "M"}
    assert max(views.mask_tiles["U"].shape[:2]) == rendering.MASK_TILE_SIDE


def test_mask_panels_share_one_absolute_colour_scale() -> None:
    film = np.full((64, 64), 128, np.uint8)
    masks = {"U": np.zeros((8, 8), np.float32), "F": np.zeros((8, 8), np.float32), "M": np.ones((8, 8), np.float32)}
    tiles = rendering.mask_tiles(film, masks, side=32)
    assert np.array_equal(tiles["U"], tiles["F"])  # the same value is the same colour in every panel
    assert not np.array_equal(tiles["U"], tiles["M"])
    weak = rendering.mask_tiles(film, {**masks, "F": np.full((8, 8), 0.05, np.float32)}, side=32)["F"]
    assert np.abs(weak.astype(int) - np.full_like(weak, 128)).max() > 20  # a weak mask still shows its colour


def test_colour_bar_runs_from_zero_to_one() -> None:
    bar = rendering.colour_bar_html()
    assert "linear-gradient" in bar and "0 · ignored" in bar and "1 · read in full" in bar


def test_caption_is_burnt_into_a_bottom_corner_only() -> None:
    image = np.zeros((200, 300, 3), np.uint8)
    left = rendering.caption(image, "registered main", corner="left")
    right = rendering.caption(image, "reference", corner="right")
    assert left[100:, :150].max() > 0 and left[:100].max() == 0 and left[:, 200:].max() == 0
    assert right[100:, 150:].max() > 0 and right[:100].max() == 0 and right[:, :100].max() == 0
    assert image.max() == 0  # the original is untouched


# -- input sanity: DICOM that is not a frontal radiograph --------------------------------------------------------
def _pydicom_file(name: str) -> Path:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        from feedback_support import missing

        missing(f"pydicom test file {name} is not installed", "DIFFVQA_REQUIRE_DICOM_CASES")
    return Path(path)


@pytest.mark.parametrize(("name", "modality"), [("CT_small.dcm", "CT"), ("MR_small.dcm", "MR")])
def test_a_dicom_that_is_not_a_radiograph_is_named_for_what_it_is(name: str, modality: str) -> None:
    from diffvqa_core.imaging import not_a_radiograph

    reason = not_a_radiograph(_pydicom_file(name))
    assert reason and f"Modality {modality}" in reason
    assert not_a_radiograph(_pydicom_file(name).read_bytes()) == reason


def test_a_lateral_radiograph_is_flagged_and_a_frontal_one_or_a_png_is_not(tmp_path: Path) -> None:
    import pydicom

    from diffvqa_core.imaging import lateral_view, not_a_radiograph

    lateral = _pydicom_file("6154")  # pydicom's CR example, ViewPosition LL
    assert not_a_radiograph(lateral) is None
    assert "lateral view (DICOM ViewPosition LL)" in lateral_view(lateral)
    dataset = pydicom.dcmread(lateral)
    dataset.ViewPosition = "PA"
    frontal = tmp_path / "frontal.dcm"
    dataset.save_as(frontal)
    assert lateral_view(frontal) is None and not_a_radiograph(frontal) is None
    png = tmp_path / "film.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 200)
    assert lateral_view(png) is None and not_a_radiograph(png) is None
    assert lateral_view(tmp_path / "missing.dcm") is None


def test_analysis_refuses_a_ct_slice_and_stores_nothing(screen) -> None:
    from reliability_support import row_counts

    handlers, pair = screen
    before = row_counts(handlers.service.store.engine)
    values = _named(handlers.analyze_on_screen(str(_pydicom_file("CT_small.dcm")), pair[1], QUESTION, 0.5),
                    (*SCREEN, *REVIEW))
    assert "not a radiograph (DICOM Modality CT)" in values["status"].replace("\\", "")
    assert values["analysis_id"] is None and values["save"]["interactive"] is False
    assert row_counts(handlers.service.store.engine) == before


# -- the screen handlers: what is saved is what is shown ---------------------------------------------------------
QUESTION = "what has changed compared to the reference image?"
from review_app.handlers import REVIEW, SCREEN  # noqa: E402


@pytest.fixture(scope="module")
def screen(tmp_path_factory: pytest.TempPathFactory, mhh_pairs_dir: Path):
    """Handlers over the tiny random model and a SQLite store, with one real pair as an example that has a
    (made-up) question and ground truth."""
    from app_support import single_thread_tiny_pipeline
    from feedback_db import FeedbackStore, OverlayCache
    from review_app.handlers import Handlers
    from review_app.service import ReviewService

    tmp = tmp_path_factory.mktemp("screen")
    real = examples.read_manifest_folder(mhh_pairs_dir, limit=1)[0]
    pair = examples.ExamplePair("with truth", real.main, real.ref, "Example source", QUESTION, "nothing has changed.")
    for pipe in single_thread_tiny_pipeline():
        with FeedbackStore(f"sqlite:///{tmp / 'f.sqlite3'}") as store:
            yield Handlers(ReviewService(pipe, store, OverlayCache(tmp / "overlays")), [pair]), (str(real.main),
                                                                                                str(real.ref))


def _named(outputs: tuple, names: tuple) -> dict:
    assert len(outputs) == len(names)
    return dict(zip(names, outputs))


def test_changed_films_empty_the_screen_and_disable_save(screen) -> None:
    handlers, (main, ref) = screen
    values = _named(handlers.inputs_changed(main, None, "M", 0.5, 0.5, 1.0), ("example", "attribution", *SCREEN,
                                                                              *REVIEW))
    assert values["example"] is None and values["attribution"] == ""
    assert values["answer"] == "" and values["analysis_id"] is None and values["registered"] is None
    assert values["main_view"] is not None and values["ref_view"] is None  # the chosen film stays visible
    assert values["verdict"] is None and values["corrected"] == "" and values["save"]["interactive"] is False
    assert "Choose both films" in values["status"]


def test_a_failed_analysis_is_a_sentence_not_an_exception(screen, tmp_path: Path) -> None:
    handlers, (main, ref) = screen
    text = tmp_path / "scan.png"
    text.write_text("not a film at all, just words\n" * 4)
    values = _named(handlers.analyze_on_screen(str(text), ref, QUESTION, 0.5), (*SCREEN, *REVIEW))
    assert values["status"].startswith("⚠") and "not an image" in values["status"]
    assert values["analysis_id"] is None and values["answer"] == "" and values["save"]["interactive"] is False
    assert values["ref_view"] is not None  # the readable film stays on screen


def test_save_without_an_analysis_on_screen_stores_nothing(screen) -> None:
    handlers, _ = screen
    before = handlers.service.store.count_reviews()
    message, review_id = handlers.save_on_screen(None, "agree", "x", None, "", "Dr. Unit")
    assert review_id is None and "analyse the pair" in message
    assert handlers.service.store.count_reviews() == before


def test_a_new_lambda_gives_a_new_analysis_keeps_the_text_and_clears_the_verdict(screen) -> None:
    handlers, (main, ref) = screen
    first = _named(handlers.analyze_on_screen(main, ref, QUESTION, 0.5), (*SCREEN, *REVIEW))
    assert first["save"]["interactive"] is True and f"analysis \\#{first['analysis_id']}" in first["review_target"]
    saved = "✔ Saved review \\#1 of analysis \\#1: **agree** by Dr. Unit at 10:00:00 UTC."
    again = _named(handlers.reanswer_on_screen(first["analysis_id"], 0.5, "agree", 4, saved), (*SCREEN, *REVIEW))
    assert all(value == {"__type__": "update"} for value in again.values())  # the same lambda: nothing changes
    new = _named(handlers.reanswer_on_screen(first["analysis_id"], 0.2, "agree", 4, saved), (*SCREEN, *REVIEW))
    assert new["analysis_id"] != first["analysis_id"] and "Re-answered" in new["status"]
    assert new["verdict"] is None and new["rating"] is None
    assert new["corrected"] == {"__type__": "update"} and new["comment"] == {"__type__": "update"}  # kept
    assert "Saved review" in new["review_status"] and "choose your verdict" in new["review_status"]
    assert f"analysis \\#{new['analysis_id']}" in new["review_target"]


def test_a_reanswer_that_fails_changes_only_the_status_line(screen) -> None:
    handlers, _ = screen
    values = _named(handlers.reanswer_on_screen(10**6, 0.3, "agree", None, ""), (*SCREEN, *REVIEW))
    assert "no longer in memory" in values["status"]
    assert all(value == {"__type__": "update"} for name, value in values.items() if name != "status")


def test_ground_truth_shows_only_beside_the_examples_own_question(screen) -> None:
    handlers, (main, ref) = screen
    picked = _named(handlers.pick_example("with truth", "", "M", 0.5, 0.5, 1.0),
                    ("main_file", "ref_file", "question", "example", "attribution", *SCREEN, *REVIEW))
    assert picked["question"] == QUESTION and "Ground truth" in picked["attribution"]
    assert picked["save"]["interactive"] is False
    other = handlers.question_changed("with truth", "what level is the edema?", main, ref, "M", 0.5, 0.5, 1.0)
    assert "Ground truth" not in other[0] and "Example source" in other[0]


def test_selected_rows_are_highlighted() -> None:
    from review_app.handlers import SELECTED_STYLE, TABLE_COLUMNS, Handlers

    rows = [[3, *([""] * (len(TABLE_COLUMNS) - 1))], [7, *([""] * (len(TABLE_COLUMNS) - 1))]]
    html = Handlers.highlight(rows, "7").to_html()
    assert html.count(SELECTED_STYLE.split(";")[0]) >= 1
    styled = Handlers.highlight(rows, "7")
    styled._compute()
    rows_styled = {key[0] for key, value in styled.ctx.items() if value}
    assert rows_styled == {1}


def test_load_test_reads_the_comment_column_of_the_table() -> None:
    from review_app.handlers import TABLE_COLUMNS
    from review_app.loadtest import COMMENT_COLUMN

    assert TABLE_COLUMNS[COMMENT_COLUMN] == "comment"
    assert TABLE_COLUMNS[0] == "review" and TABLE_COLUMNS[6] == "correction"  # what API scripts index


def test_the_app_opens_on_the_first_synthetic_pair_unless_told_not_to(tmp_path: Path) -> None:
    real = examples.ExamplePair("real", tmp_path / "a.png", tmp_path / "b.png", "CC BY")
    synthetic = [examples.ExamplePair(f"synthetic {i}", tmp_path / "c.png", tmp_path / "d.png",
                                      examples.SYNTH_ATTRIBUTION) for i in (1, 2)]
    assert app.preload_pair([real, *synthetic]) is synthetic[0]
    assert app.preload_pair([real]) is real and app.preload_pair([]) is None
    assert app.parse_args(["--no-preload"]).no_preload and not app.parse_args([]).no_preload


def test_a_bad_date_filter_is_a_sentence_in_the_count_line(screen) -> None:
    handlers, _ = screen
    table, count = handlers.list_reviews_on_screen(None, ["disagree"], "", "30/11/2026", "", "")
    assert table == {"__type__": "update"} and "must look like 2026-11-30" in count.replace("\\", "")
