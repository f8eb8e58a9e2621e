"""The synthetic longitudinal benchmark: format, grammar, ground truth, determinism, and the reader on it."""

from __future__ import annotations

import filecmp
import json

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from diffvqa_core.data import DiffVQADataset, layout
from diffvqa_core.data.findings import CATALOGUE, Finding
from diffvqa_core.data.grammar import (
    DIFFERENCE_ANSWER, difference_answer, difference_answer_problems, join_items, parse_difference_answer,
)
from diffvqa_core.data.synthetic import generate_benchmark
from diffvqa_core.data.vocabulary import LEVEL_WORDS, LOCATION_WORDS, QUESTION_TYPES, TYPE_WORDS
from train.__main__ import main as train_main

PAIRS, SIZE, SEED = 16, 128, 3


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    return generate_benchmark(tmp_path_factory.mktemp("synth"), PAIRS, seed=SEED, size=SIZE, progress=False)


def _questions(root) -> pd.DataFrame:
    return pd.read_csv(root / layout.QUESTIONS_CSV, dtype=str, keep_default_na=False)


def _sidecar(root, study_id, ref_id) -> dict:
    return json.loads(layout.sidecar_path(root, study_id, ref_id).read_text())


def test_catalogue_draws_only_benchmark_vocabulary():
    words = " ".join(LOCATION_WORDS).split()
    for spec in CATALOGUE.values():
        assert set(spec.levels) <= set(LEVEL_WORDS) and set(spec.types) <= set(TYPE_WORDS)
        assert all(word in words for location in spec.locations for word in location.split())


def test_lists_are_joined_as_the_benchmark_does():
    assert join_items(["edema"]) == "edema"
    assert join_items(["edema", "pneumonia"]) == "edema, and pneumonia"
    assert join_items(["edema", "hernia", "pneumonia"]) == "edema, hernia, and pneumonia"


def test_difference_answer_orders_level_changes_additions_removals():
    ref = {"edema": Finding("edema", "bilateral", "mild"), "granuloma": Finding("granuloma", "left upper lung")}
    main = {"edema": Finding("edema", "bilateral", "severe"), "pleural effusion": Finding("pleural effusion", "left"),
            "atelectasis": Finding("atelectasis", "bibasilar", "mild")}
    assert difference_answer(main, ref) == (
        "the level of edema has changed from mild to severe. "
        "the main image has additional findings of pleural effusion, and atelectasis than the reference image. "
        "the main image is missing the finding of granuloma than the reference image. ")
    assert difference_answer(ref, ref) == "nothing has changed."


def test_difference_answer_problems_name_what_the_benchmark_could_not_write():
    assert difference_answer_problems("nothing has changed.") == []
    assert difference_answer_problems("the level of edema has changed from mild to severe.") == []  # no end space
    assert difference_answer_problems("  ") == ["the answer is empty"]
    assert difference_answer_problems("the main image has") == ["not a sentence of the benchmark's difference grammar"]
    assert difference_answer_problems("the level of edema has changed from moderate to moderate. ") == [
        "says the level of edema changed from moderate to moderate"]
    assert difference_answer_problems("the level of edema has changed from moderate. ") == [
        "not a sentence of the benchmark's difference grammar"]
    assert difference_answer_problems("the level of edema has changed from moderate to huge. ") == [
        "unknown level 'huge' for edema"]
    assert difference_answer_problems(
        "the main image has an additional finding of dragon than the reference image. ") == ["unknown finding 'dragon'"]
    assert difference_answer_problems(
        "the main image has an additional finding of edema than the reference image. "
        "the main image is missing the finding of edema than the reference image. ") == [
        "says edema is both new and missing"]


def test_files_follow_the_benchmark_schema(synth_root):
    questions = _questions(synth_root)
    studies = pd.read_csv(synth_root / layout.STUDIES_CSV, dtype=str)
    assert list(questions.columns) == list(layout.QUESTION_COLUMNS)
    assert list(studies.columns) == list(layout.STUDY_COLUMNS)
    assert (questions["question_type"] == "difference").sum() == PAIRS
    assert set(questions["question_type"]) <= set(QUESTION_TYPES)
    assert questions.groupby("subject_id")["split"].nunique().max() == 1  # split by patient
    assert (synth_root / "README.txt").read_text().startswith("Synthetic")
    for row in studies.itertuples():
        film = cv2.imread(str(layout.image_path(synth_root, row.subject_id, row.study_id, row.dicom_id)), 0)
        assert film.shape == (SIZE, SIZE)


def test_every_difference_answer_matches_grammar_and_ground_truth(synth_root):
    questions = _questions(synth_root)
    for row in questions[questions["question_type"] == "difference"].itertuples():
        assert DIFFERENCE_ANSWER.match(row.answer), row.answer
        assert difference_answer_problems(row.answer) == [], row.answer
        truth = _sidecar(synth_root, row.study_id, row.ref_id)
        main = {f["name"]: f for f in truth["findings_main"]}
        ref = {f["name"]: f for f in truth["findings_ref"]}
        levels, added, removed = parse_difference_answer(row.answer)
        true_levels = {(n, ref[n]["level"], main[n]["level"]) for n in set(main) & set(ref)
                       if main[n]["level"] != ref[n]["level"]}
        if row.question.startswith("what has changed in the"):  # regional form: one located level change
            assert len(levels) == 1 and set(levels) <= true_levels and not added and not removed
        else:
            assert set(levels) == true_levels and len(levels) == len(true_levels)
            assert sorted(added) == sorted(set(main) - set(ref)) and sorted(removed) == sorted(set(ref) - set(main))
            assert (row.answer == "nothing has changed.") == (not (levels or added or removed))


def test_abnormality_answers_list_the_main_findings(synth_root):
    questions = _questions(synth_root)
    for row in questions[questions["question"] == "what abnormalities are seen in this image?"].itertuples():
        names = {f["name"] for f in _sidecar(synth_root, row.study_id, row.ref_id)["findings_main"]}
        assert set(row.answer.split(", ")) == names


def _film(root, studies, study_id) -> np.ndarray:
    row = studies.loc[study_id]
    film = cv2.imread(str(layout.image_path(root, row.subject_id, study_id, row.dicom_id)), 0).astype(np.float32)
    return (film - film.mean()) / film.std()  # exposure differs between visits


def test_inverse_ground_truth_affine_realigns_main_to_reference(synth_root):
    studies = pd.read_csv(synth_root / layout.STUDIES_CSV, dtype=str).set_index("study_id")
    pairs = _questions(synth_root)[["study_id", "ref_id"]].drop_duplicates().itertuples(index=False)
    unchanged = [p for p in pairs if not cv2.imread(str(layout.change_mask_path(synth_root, *p)), 0).any()]
    assert unchanged, "the fixture seed should produce a pair without finding change"
    pair = max(unchanged, key=lambda p: np.abs(np.array(_sidecar(synth_root, *p)["theta_gt"]) - np.eye(2, 3)).sum())
    main, ref = _film(synth_root, studies, pair.study_id), _film(synth_root, studies, pair.ref_id)
    theta = torch.tensor(_sidecar(synth_root, *pair)["theta_gt"], dtype=torch.float64)
    inverse = torch.linalg.inv(torch.cat([theta, torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)]))[:2]
    grid = F.affine_grid(inverse[None].float(), [1, 1, SIZE, SIZE], align_corners=False)
    aligned = F.grid_sample(torch.from_numpy(main)[None, None], grid, padding_mode="border", align_corners=False)[0, 0]
    inner = (slice(8, -8), slice(8, -8))  # away from the border fill
    before = float(np.mean((main - ref)[inner] ** 2))
    after = float(np.mean((aligned.numpy() - ref)[inner] ** 2))
    assert after < 0.7 * before


def test_change_masks_mark_only_pairs_whose_findings_changed(synth_root):
    questions = _questions(synth_root)
    for row in questions[questions["question_type"] == "difference"].itertuples():
        mask = cv2.imread(str(layout.change_mask_path(synth_root, row.study_id, row.ref_id)), 0)
        assert mask.shape == (SIZE, SIZE) and set(np.unique(mask)) <= {0, 255}
        assert bool(mask.any()) == (row.answer != "nothing has changed."), row.answer


def test_generation_is_deterministic_whatever_the_workers(synth_root, tmp_path):
    again = generate_benchmark(tmp_path / "again", PAIRS, seed=SEED, size=SIZE, workers=2, progress=False)
    files = sorted(p.relative_to(synth_root) for p in synth_root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    match, mismatch, errors = filecmp.cmpfiles(synth_root, again, [str(f) for f in files], shallow=False)
    assert not mismatch and not errors


def test_reader_loads_the_generated_benchmark_with_ground_truth(synth_root):
    ds = DiffVQADataset(synth_root, split=None, image_size=64)
    assert ds.has_ground_truth and ds.missing == 0 and len(ds) == len(_questions(synth_root))
    item = ds[0]
    assert item["gt_theta"].shape == (2, 3) and item["gt_theta"].dtype == torch.float32
    assert item["change_mask"].shape == (64, 64) and set(item["change_mask"].unique().tolist()) <= {0.0, 1.0}
    assert item["main"].shape == (3, 64, 64)


def test_command_line_writes_a_benchmark(tmp_path, capsys):
    assert train_main(["synth", "--out", str(tmp_path), "--pairs", "2", "--size", "96", "--workers", "1"]) == 0
    assert "wrote 2 pairs" in capsys.readouterr().out
    assert (_questions(tmp_path)["question_type"] == "difference").sum() == 2


@pytest.mark.parametrize("finding", [Finding("pleural effusion", "left", "small"), Finding("cardiomegaly", "", "mild")])
def test_fluid_and_a_larger_heart_stay_visible_on_a_bright_real_film(finding):
    from diffvqa_core.data.lesions import MIN_FILL_DENSITY, findings_density
    from diffvqa_core.data.phantom import background_anatomy

    # A washed-out bedside film: the lungs are already near the heart's density.
    anatomy = background_anatomy(np.full((128, 128), 0.8, np.float32), 128)
    delta = findings_density({finding.name: finding}, anatomy, (0, 0))
    assert delta.max() >= 0.9 * MIN_FILL_DENSITY  # above the benchmark's change threshold: it shows, and is labelled


def test_background_fraction_draws_some_patients_on_real_films(tmp_path):
    film = tmp_path / "films"
    film.mkdir()
    cv2.imwrite(str(film / "bright.png"), np.full((64, 64), 230, np.uint8))
    root = generate_benchmark(tmp_path / "mixed", 12, seed=1, size=64, backgrounds=film, background_fraction=0.5,
                              progress=False)
    studies = pd.read_csv(root / layout.STUDIES_CSV, dtype=str)
    means = [cv2.imread(str(layout.image_path(root, r.subject_id, r.study_id, r.dicom_id)), 0).mean()
             for r in studies.itertuples()]
    on_film = [m > 150 for m in means]  # the flat bright film vs a phantom with dark lungs and air around the body
    assert any(on_film) and not all(on_film)
    assert "a share of 0.5" in (root / "README.txt").read_text()
