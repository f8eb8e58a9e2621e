"""Answer metrics (the benchmark's pycocoevalcap protocol), mask localisation and registration error."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from diffvqa_core.metrics import (
    ANSWER_METRICS,
    change_agreement,
    compose_affine,
    corner_displacement,
    invert_affine,
    mask_auroc,
    pointing_game,
    score_answers,
    score_by_question_type,
    stated_changes,
)

ROWS = [
    ("r0", "difference", "the main image has an additional finding of edema than the reference image. ",
     "the main image has an additional finding of edema than the reference image. "),
    ("r1", "difference", "nothing has changed.",
     "the main image is missing the finding of edema than the reference image."),
    ("r2", "difference", "the level of pleural effusion has changed from small to moderate. ",
     "the level of pleural effusion has changed from small to large. "),
    ("r3", "difference", "the main image is missing the findings of atelectasis, and edema than the reference image. ",
     "nothing has changed."),
    ("r4", "presence", "yes", "yes"),
    ("r5", "presence", "no", "yes"),
    ("r6", "presence", "yes", "no"),
    ("r7", "location", "left lower lobe", "the left lower lobe"),
    ("r8", "location", "bilateral area", "left side"),
    ("r9", "level", "mild to moderate", "moderate"),
    ("r10", "view", "PA view", "PA view"),  # the "view" subset is answered perfectly
    ("r11", "view", "is this AP view? yes", "is this AP view? yes"),
]


def _refs_preds(rows) -> tuple[dict, dict]:
    return {r[0]: r[2] for r in rows}, {r[0]: r[3] for r in rows}


def _direct_pycocoevalcap(corpora: dict[str, tuple[dict, dict]]) -> dict[str, tuple[dict, dict]]:
    """The baselines' recipe written out by hand, per corpus: scores and CIDEr's per-row scores."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    meteor, results = Meteor(), {}
    for name, (references, predictions) in corpora.items():
        tokenizer = PTBTokenizer()
        gts = tokenizer.tokenize({k: [{"caption": v}] for k, v in references.items()})
        res = tokenizer.tokenize({k: [{"caption": v}] for k, v in predictions.items()})
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        scores = dict(zip(ANSWER_METRICS[:4], bleu))
        scores["METEOR"], _ = meteor.compute_score(gts, res)
        scores["ROUGE_L"], _ = Rouge().compute_score(gts, res)
        scores["CIDEr"], per_row = Cider().compute_score(gts, res)
        results[name] = scores, dict(zip(gts.keys(), per_row))
    del meteor
    return results


@pytest.fixture(scope="module")
def by_type() -> dict:
    return score_by_question_type(ROWS)


@pytest.fixture(scope="module")
def direct() -> dict[str, tuple[dict, dict]]:
    presence = [r for r in ROWS if r[1] == "presence"]
    return _direct_pycocoevalcap({"all": _refs_preds(ROWS), "presence": _refs_preds(presence)})


def test_score_answers_equals_pycocoevalcap_called_directly(direct):
    scores = score_answers(*_refs_preds(ROWS))
    assert list(scores) == list(ANSWER_METRICS)
    assert scores == pytest.approx(direct["all"][0], abs=1e-12)


def test_score_by_question_type_equals_pycocoevalcap_on_each_subset(by_type, direct):
    assert list(by_type) == ["all", "difference", "level", "location", "presence", "view"]
    assert by_type["all"] == pytest.approx(direct["all"][0], abs=1e-12)
    assert by_type["presence"] == pytest.approx(direct["presence"][0], abs=1e-12)


def test_a_subset_is_rescored_not_sliced(by_type, direct):
    _, cider_per_row = direct["all"]
    sliced = np.mean([cider_per_row[r[0]] for r in ROWS if r[1] == "difference"])
    assert by_type["difference"]["CIDEr"] != pytest.approx(sliced, abs=1e-3)


def test_perfect_predictions_give_bleu_rouge_and_meteor_of_one(by_type):
    for name in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "METEOR"):
        assert by_type["view"][name] == pytest.approx(1.0, abs=1e-6), name


def test_mismatched_ids_raise():
    with pytest.raises(ValueError, match="same row ids"):
        score_answers({"a": "yes", "b": "no"}, {"a": "yes", "c": "no"})


def test_empty_input_raises():
    with pytest.raises(ValueError):
        score_answers({}, {})


def test_duplicated_row_id_raises():
    with pytest.raises(ValueError, match="duplicated"):
        score_by_question_type([("a", "view", "PA view", "PA view"), ("a", "view", "AP view", "AP view")])


def test_question_type_named_all_raises():
    with pytest.raises(ValueError, match="all"):
        score_by_question_type([{"row_id": 1, "question_type": "all", "reference": "yes", "prediction": "no"}])


# ----------------------------------------------------------------------------------- pointing game


def _square_change(size: int = 16) -> np.ndarray:
    change = np.zeros((size, size), dtype=bool)
    change[4:8, 10:14] = True
    return change


def test_pointing_game_hits_when_the_maximum_is_inside_the_change():
    mask = np.zeros((16, 16))
    mask[5, 11] = 1.0
    assert pointing_game(mask, _square_change()) is True


def test_pointing_game_misses_when_the_maximum_is_outside_the_change():
    mask = np.zeros((16, 16))
    mask[12, 2] = 1.0
    assert pointing_game(mask, _square_change()) is False


def test_pointing_game_takes_the_first_maximum_on_ties():
    mask = np.zeros((16, 16))
    mask[0, 0] = mask[5, 11] = 1.0  # (0, 0) comes first in row-major order and is unchanged
    assert pointing_game(mask, _square_change()) is False


def test_pointing_game_resizes_the_mask_to_the_change_mask():
    mask = np.zeros((8, 8), dtype=np.float32)
    mask[2:4, 5:7] = 1.0  # the same region at half resolution
    assert pointing_game(mask, _square_change()) is True


def test_pointing_game_refuses_an_empty_change_mask():
    with pytest.raises(ValueError, match="empty"):
        pointing_game(np.ones((16, 16)), np.zeros((16, 16)))


# ------------------------------------------------------------------------------------------ AUROC


def test_auroc_of_a_perfect_mask_is_one():
    change = _square_change()
    assert mask_auroc(change.astype(float), change) == 1.0


def test_auroc_of_a_constant_mask_is_one_half():
    assert mask_auroc(np.full((16, 16), 0.3), _square_change()) == 0.5


def test_auroc_of_an_inverted_mask_is_zero():
    change = _square_change()
    assert mask_auroc(1.0 - change.astype(float), change) == 0.0


def test_auroc_pools_pixels_over_images_and_counts_ties_as_one_half():
    rng = np.random.default_rng(0)
    masks = [rng.integers(0, 4, (6, 6)) / 3.0 for _ in range(3)]  # heavy ties
    changes = [rng.random((6, 6)) > 0.6 for _ in range(3)]
    scores = np.concatenate([m.ravel() for m in masks])
    labels = np.concatenate([c.ravel() for c in changes])
    pos, neg = scores[labels], scores[~labels]
    brute = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg)])
    assert mask_auroc(masks, changes) == pytest.approx(brute, abs=1e-12)
    assert mask_auroc(np.stack(masks), np.stack(changes)) == pytest.approx(brute, abs=1e-12)


def test_auroc_resizes_masks_to_the_change_mask():
    change = _square_change(32)
    change[:] = False
    change[8:16, 20:28] = True
    half = change[::2, ::2].astype(np.float32)
    assert mask_auroc(half, change) > 0.95


def test_auroc_needs_both_classes():
    with pytest.raises(ValueError):
        mask_auroc(np.ones((4, 4)), np.ones((4, 4)))


# ---------------------------------------------------------------------------------- registration

IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
POSE = np.array([[1.03, -0.05, 0.04], [0.06, 0.97, -0.02]])


def test_corner_displacement_is_zero_for_an_identity_ground_truth():
    assert corner_displacement(IDENTITY, height=384, width=384) == 0.0
    assert corner_displacement(IDENTITY, IDENTITY, height=384, width=384) == 0.0


def test_corner_displacement_is_zero_when_the_prediction_inverts_the_ground_truth():
    assert corner_displacement(POSE, invert_affine(POSE), height=300, width=400) == pytest.approx(0.0, abs=1e-9)


def test_corner_displacement_of_a_pure_translation():
    shift = np.array([[1.0, 0.0, 0.1], [0.0, 1.0, -0.05]])  # 0.1 * 400/2 = 20 px, 0.05 * 300/2 = 7.5 px
    assert corner_displacement(shift, height=300, width=400) == pytest.approx(np.hypot(20.0, 7.5))


def test_compose_and_invert_affine_round_trip():
    np.testing.assert_allclose(compose_affine(POSE, invert_affine(POSE)), IDENTITY, atol=1e-12)
    np.testing.assert_allclose(compose_affine(IDENTITY, POSE), POSE)


def test_composition_order_matches_torch_affine_grid_resampling():
    """registered = main sampled by theta_pred, main = canonical sampled by theta_gt."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    def warp(image, theta):
        grid = F.affine_grid(torch.tensor(theta, dtype=torch.float64)[None], image.shape, align_corners=False)
        return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)

    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64, dtype=torch.float64),
                            torch.linspace(-1, 1, 64, dtype=torch.float64), indexing="ij")
    canonical = (torch.sin(3 * xx) + torch.cos(2 * yy))[None, None]
    theta_pred = np.array([[0.98, 0.04, -0.03], [-0.02, 1.01, 0.05]])
    two_steps = warp(warp(canonical, POSE), theta_pred)
    one_step = warp(canonical, compose_affine(POSE, theta_pred))
    inner = (slice(None), slice(None), slice(12, 52), slice(12, 52))
    assert torch.allclose(two_steps[inner], one_step[inner], atol=5e-3)


# ------------------------------------------------------------------------ changes a difference answer names


def test_stated_changes_reads_levels_additions_and_removals():
    answer = ("the level of edema has changed from mild to moderate. the main image has additional findings of "
              "atelectasis, and pneumonia than the reference image. the main image is missing the finding of "
              "granuloma than the reference image. ")
    assert stated_changes(answer) == {("level", "edema"), ("added", "atelectasis"), ("added", "pneumonia"),
                                      ("missing", "granuloma")}
    assert stated_changes("nothing has changed.") == set()
    assert stated_changes("no idea") == set()


def test_change_agreement_counts_named_changes_not_the_sentence_frame():
    pairs = [(r[2], r[3]) for r in ROWS if r[1] == "difference"]
    # r0 exact (1 item right); r1 predicts a removal that is not there; r2 names the right level change
    # (its wrong "large" is not scored, but "large" is no level word of the benchmark: r2 is not well formed);
    # r3 misses two removals. Of the three changed pairs only r0 is right with its level words (r2's "large" is
    # wrong); "nothing has changed." is said once (r3, wrongly) and true once (r1, not said).
    assert change_agreement(pairs) == pytest.approx(
        {"questions": 4, "precision": 2 / 3, "recall": 2 / 4, "f1": 4 / 7, "exact": 2 / 4, "well_formed": 3 / 4,
         "changed_questions": 3, "exact_changed": 1 / 3, "nothing_precision": 0.0, "nothing_recall": 0.0})
    assert change_agreement([("nothing has changed.", "nothing has changed.")]) == {
        "questions": 1, "precision": 0.0, "recall": 0.0, "f1": 0.0, "exact": 1.0, "well_formed": 1.0,
        "changed_questions": 0, "exact_changed": None, "nothing_precision": 1.0, "nothing_recall": 1.0}
    unchanged_level = "the level of edema has changed from mild to mild."
    assert change_agreement([("nothing has changed.", unchanged_level), ("nothing has changed.", "the main")])[
        "well_formed"] == 0.0
    with pytest.raises(ValueError, match="no difference answers"):
        change_agreement([])
