"""Corrections as training data: the review store -> a benchmark folder -> a fine-tune of a trained model.

Cases come from the 20-pair synthetic benchmark of the trainer tests; the "model" said "nothing has changed."
to difference questions whose true answer names changes, and a reviewer corrected it to that true answer.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import cv2
import pandas as pd
import pytest

from diffvqa_core.data import layout
from feedback_db import FeedbackStore
from feedback_support import analysis_values
from train.corrections import PROVENANCE_CSV, export_corrections
from train_support import make_synthetic_set

WRONG = "nothing has changed."


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_set(tmp_path_factory.mktemp("synthetic") / "data")


def difference_cases(root: Path, split: str = "train") -> list[dict]:
    """The split's difference rows whose answer names a change, with the SHA-256 and path of both films."""
    questions = pd.read_csv(root / layout.QUESTIONS_CSV, dtype=str, keep_default_na=False)
    studies = pd.read_csv(root / layout.STUDIES_CSV, dtype=str, keep_default_na=False).set_index("study_id")
    rows = questions[(questions["split"] == split) & (questions["question_type"] == "difference")
                     & (questions["answer"] != WRONG)]
    cases = []
    for row in rows.to_dict("records"):
        paths = [layout.image_path(root, studies.loc[s, "subject_id"], s, studies.loc[s, "dicom_id"])
                 for s in (row["study_id"], row["ref_id"])]
        cases.append({**row, "main_path": paths[0], "ref_path": paths[1],
                      "main_sha256": sha(paths[0]), "ref_sha256": sha(paths[1])})
    return cases


def record(store: FeedbackStore, case: dict, *, answer: str = WRONG, **review) -> int:
    analysis_id = store.record_analysis(**analysis_values(
        main_sha256=case["main_sha256"], ref_sha256=case["ref_sha256"], question=case["question"],
        question_type=case["question_type"], answer=answer))
    return store.record_review(analysis_id=analysis_id, **review)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FeedbackStore]:
    with FeedbackStore(f"sqlite:///{tmp_path / 'feedback.sqlite3'}") as opened:
        yield opened


def test_export_writes_the_benchmark_layout_with_the_corrected_answers(store, synthetic, tmp_path) -> None:
    cases = difference_cases(synthetic)[:5]
    for case in cases:
        record(store, case, reviewer="Dr. A", verdict="disagree", corrected_answer=case["answer"])
    out = tmp_path / "corrections"
    report = export_corrections(store, synthetic, out, val_fraction=0.2)
    films = {c[k] for c in cases for k in ("main_sha256", "ref_sha256")}  # a patient's visits chain: pairs share films
    assert (report.rows, report.train_rows, report.val_rows, report.films) == (5, 4, 1, len(films))

    from diffvqa_core.data.reader import DiffVQADataset

    rows = DiffVQADataset(out, split=None, image_size=32).rows
    assert sorted(r["answer"] for r in rows) == sorted(c["answer"] for c in cases)
    assert DiffVQADataset(out, split="val", image_size=32).missing == 0
    exported = {sha(p) for p in (out / "files").rglob("*.jpg")}
    assert exported == films  # copied byte for byte
    provenance = pd.read_csv(out / PROVENANCE_CSV)
    assert set(provenance["model_answer"]) == {WRONG} and set(provenance["reviewer"]) == {"Dr. A"}


def test_export_follows_the_latest_review_and_says_what_it_left_out(store, synthetic, tmp_path) -> None:
    first, second, third, fourth = difference_cases(synthetic)[:4]
    record(store, first, reviewer="A", verdict="disagree", corrected_answer=first["answer"])
    superseded = record(store, second, reviewer="A", verdict="disagree", corrected_answer=second["answer"])
    store.record_review(analysis_id=superseded, reviewer="A", verdict="agree")  # the same reviewer changed their mind
    no_answer = record(store, third, reviewer="A", verdict="partly")
    free_text = record(store, fourth, reviewer="B", verdict="disagree", corrected_answer="more fluid on the left")
    lost = dict(first, main_sha256="e" * 64)
    missing = record(store, lost, reviewer="B", verdict="disagree", corrected_answer=first["answer"])
    report = export_corrections(store, [synthetic], tmp_path / "out", val_fraction=0.0)
    assert report.rows == 1 and report.val_rows == 0
    assert (report.no_answer, report.free_text, report.images_missing) == ([no_answer], [free_text], [missing])
    assert "left out 1 review(s) without a corrected answer" in report.describe()


def test_two_reviewers_on_one_question_export_the_latest_correction(store, synthetic, tmp_path) -> None:
    (case,) = difference_cases(synthetic)[:1]
    record(store, case, reviewer="A", verdict="disagree", corrected_answer=WRONG + " ")
    record(store, case, reviewer="B", verdict="partly", corrected_answer=case["answer"])
    report = export_corrections(store, synthetic, tmp_path / "out", val_fraction=0.0, verdicts=["disagree", "partly"])
    assert report.rows == 1 and report.conflicts == 1
    (answer,) = pd.read_csv(tmp_path / "out" / layout.QUESTIONS_CSV)["answer"]
    assert answer.strip() == case["answer"].strip()


def test_an_agree_exports_the_confirmed_answer_only_when_asked(store, synthetic, tmp_path) -> None:
    (case,) = difference_cases(synthetic)[:1]
    record(store, case, answer=case["answer"], reviewer="A", verdict="agree")
    assert export_corrections(store, synthetic, tmp_path / "a", val_fraction=0.0).reviews_considered == 0
    report = export_corrections(store, synthetic, tmp_path / "b", val_fraction=0.0, verdicts=["agree"])
    assert report.rows == 1


def test_png_films_are_found_by_hash_and_written_as_jpeg(store, synthetic, tmp_path) -> None:
    (case,) = difference_cases(synthetic)[:1]
    films = tmp_path / "films"
    films.mkdir()
    for key in ("main", "ref"):
        png = films / f"{key}.png"
        cv2.imwrite(str(png), cv2.imread(str(case[f"{key}_path"]), cv2.IMREAD_GRAYSCALE))
        case[f"{key}_sha256"] = sha(png)
    record(store, case, reviewer="A", verdict="disagree", corrected_answer=case["answer"])
    report = export_corrections(store, films, tmp_path / "out", val_fraction=0.0)
    assert report.rows == 1 and report.converted == 2
    for path in (tmp_path / "out" / "files").rglob("*.jpg"):
        assert path.read_bytes()[:3] == b"\xff\xd8\xff"


def test_export_refuses_a_folder_that_holds_files(store, synthetic, tmp_path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        export_corrections(store, synthetic, tmp_path / "out")


def test_the_command_line_exports_and_exits_2_when_nothing_is_left(store, synthetic, tmp_path, capsys) -> None:
    from train.__main__ import main

    assert main(["corrections", "--db", store.url, "--images-from", str(synthetic),
                 "--out", str(tmp_path / "none")]) == 2
    (case,) = difference_cases(synthetic)[:1]
    record(store, case, reviewer="A", verdict="disagree", corrected_answer=case["answer"])
    assert main(["corrections", "--db", store.url, "--images-from", str(synthetic),
                 "--out", str(tmp_path / "one")]) == 0
    assert "wrote 1 rows (1 train, 0 val)" in capsys.readouterr().out
    shutil.rmtree(tmp_path / "one")


# ------------------------------------------------------------------------------------------ fine-tune

def small_checkpoint(directory: Path) -> Path:
    """A small model (every module of the tiny preset) saved as a checkpoint folder without a train state."""
    import dataclasses

    import torch

    from diffvqa_core import DiffVQAConfig, DiffVQAModel
    from train_support import SMALL_MODEL

    torch.manual_seed(0)
    config = DiffVQAConfig.from_dict({**DiffVQAConfig.from_preset("tiny").to_dict(), **SMALL_MODEL})
    model = DiffVQAModel(dataclasses.replace(config, image_encoder_pretrained=False, prior_pretrained=False))
    model.save_pretrained(directory)
    return directory


def test_init_from_demo_means_the_bundled_model_with_its_recipe() -> None:
    import argparse

    from diffvqa_core.pipeline import DEMO_CHECKPOINT
    from train.finetune import checkpoint_directory, finetune_config, load_model

    assert checkpoint_directory("demo") == DEMO_CHECKPOINT
    args = argparse.Namespace(config=None, steps=10, validations=2, data_root="D", output=None, mixed_precision=None,
                              seed=None, learning_rate=None)
    config = finetune_config(DEMO_CHECKPOINT, load_model(DEMO_CHECKPOINT), args)
    # train/configs/demo_continued.yaml trained it at 2.5e-4 with grammar-held validation; the fine-tune takes a tenth.
    assert config.learning_rate == pytest.approx(2.5e-5) and config.eval_grammar and config.train_batch_size == 8
    assert config.init_weights == str(DEMO_CHECKPOINT) and config.data_root == "D"
    with pytest.raises(FileNotFoundError, match="no checkpoint folder"):
        checkpoint_directory("/no/such/checkpoint")


def test_finetune_settings_come_from_the_checkpoint_then_config_then_flags(tmp_path) -> None:
    import argparse
    import json

    from train.finetune import finetune_config, load_model

    checkpoint = small_checkpoint(tmp_path / "ckpt")
    (checkpoint / "train_state.json").write_text(json.dumps(
        {"state": {}, "train_config": {"learning_rate": 5e-4, "train_batch_size": 8, "question_weights":
                                       {"difference": 2}, "eval_grammar": True}}))
    (tmp_path / "ft.yaml").write_text("train_batch_size: 2\n")
    args = argparse.Namespace(config=str(tmp_path / "ft.yaml"), steps=10, validations=2, data_root="D", output=None,
                              mixed_precision=None, seed=None, learning_rate=None)
    model = load_model(checkpoint)
    config = finetune_config(checkpoint, model, args)
    assert config.learning_rate == pytest.approx(5e-5) and config.train_batch_size == 2 and config.eval_grammar
    assert (config.epochs_stage1, config.epochs_stage2, config.question_weights) == (0, 2, None)
    assert config.model_config() == model.config and model.config.lambda_start == model.config.lambda_end
    (tmp_path / "bad.yaml").write_text("model: {image_size: 32}\n")
    with pytest.raises(ValueError, match="cannot change"):
        finetune_config(checkpoint, model, argparse.Namespace(**{**vars(args), "config": str(tmp_path / "bad.yaml")}))


# Not marked slow (~33 s): issue 17 asks for this loop to be tested, and CI runs the default selection.
def test_reviews_to_export_to_finetune_lower_the_corrected_answers_loss(store, synthetic, tmp_path) -> None:
    """The loop closes: the corrected answers' loss falls; an unrelated validation split's loss stays bounded."""
    from diffvqa_core import DiffVQAModel
    from train.__main__ import main
    from train.batches import open_split
    from train.finetune import answer_loss
    from train_support import one_torch_thread

    for case in difference_cases(synthetic)[:6]:
        record(store, case, reviewer="A", verdict="disagree", corrected_answer=case["answer"])
    out = tmp_path / "corrections"
    assert export_corrections(store, synthetic, out, val_fraction=0.0).rows == 6
    checkpoint = small_checkpoint(tmp_path / "ckpt")
    (tmp_path / "ft.yaml").write_text("train_batch_size: 4\neval_batch_size: 4\nnum_workers: 0\n"
                                      "eval_max_new_tokens: 6\nval_max_batches: 1\n")
    with one_torch_thread():
        before = DiffVQAModel.from_pretrained(checkpoint)
        corrected = open_split(out, "train", question_types=None, image_size=before.config.image_size, augment=False)
        unrelated = open_split(synthetic, "val", question_types=None, image_size=before.config.image_size,
                               augment=False)
        lam = before.config.lambda_end
        loss_before = answer_loss(before, corrected, lam=lam), answer_loss(before, unrelated, lam=lam)
        status = main(["fit", "--init-from", str(checkpoint), "--data-root", str(out), "--val-root", str(synthetic),
                       "--mix-root", str(synthetic), "--mix-ratio", "0.5", "--config", str(tmp_path / "ft.yaml"),
                       "--output", str(tmp_path / "run"), "--steps", "24", "--validations", "1",
                       "--learning-rate", "1e-3", "--device", "cpu"])
        assert status == 0
        after = DiffVQAModel.from_pretrained(tmp_path / "run" / "last")
        loss_after = answer_loss(after, corrected, lam=lam), answer_loss(after, unrelated, lam=lam)
    # Measured (2-core CPU): corrected 6.60 -> 5.08, unrelated 6.67 -> 5.81 (a random start learns the language too).
    assert loss_after[0] < 0.85 * loss_before[0], (loss_before, loss_after)
    assert loss_after[1] < 1.25 * loss_before[1], (loss_before, loss_after)
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()
