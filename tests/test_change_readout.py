"""Difference answers read from the change encoder's heads (``difference_readout: change_heads``, not in the paper)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from diffvqa_core import DiffVQAConfig
from diffvqa_core.change import ChangeOutput
from diffvqa_core.change_readout import answers_from_heads, question_region
from diffvqa_core.data.finding_labels import CHANGES, HEAD_SIZES, LABELLED_FINDINGS, LOCATIONS, PAIR_COLUMNS
from diffvqa_core.data.vocabulary import LEVEL_WORDS, NOTHING_CHANGED
from tests.test_change_encoder import CHANGE_MODEL
from tests.tiny_model_support import build_tiny_model

WHOLE = "what has changed compared to the reference image?"


def heads(batch: int = 1) -> ChangeOutput:
    """Logits of a reading where nothing changed and nothing is present."""
    count = len(LABELLED_FINDINGS)
    finding = {c: torch.zeros(batch, count, n) for c, n in HEAD_SIZES.items() if c not in PAIR_COLUMNS}
    finding["change"][..., CHANGES.index("unchanged")] = 5.0
    finding["present_ref"][:] = finding["present_main"][:] = -5.0
    return ChangeOutput(torch.zeros(batch, 1, 4, 4), torch.zeros(batch, count + 1, 8), finding, {})


def test_question_region_reads_the_benchmark_regions():
    assert question_region("what has changed in the left lung area?") == "left"
    assert question_region("what has changed in the right lower lung area?") == "right lower lung"
    with pytest.raises(ValueError):
        question_region(WHOLE)


def test_whole_image_answer_names_what_the_heads_read_and_the_threshold_decides():
    out = heads()
    edema = LABELLED_FINDINGS.index("edema")
    change = out.finding_logits["change"]
    change[0, edema] = torch.log(torch.tensor([0.55, 0.40, 0.03, 0.02]))  # "unchanged" at 0.55
    out.finding_logits["level_main"][0, edema, LEVEL_WORDS.index("severe")] = 3.0
    assert answers_from_heads(out, [WHOLE], unchanged_below=0.5) == [NOTHING_CHANGED]
    said = answers_from_heads(out, [WHOLE, "is there edema?"], unchanged_below=0.6)
    assert said == ["the main image has an additional finding of edema than the reference image.", None]


def test_the_pair_gate_decides_whether_anything_changed_and_then_names_the_likeliest_change():
    out = heads(3)
    edema, effusion = LABELLED_FINDINGS.index("edema"), LABELLED_FINDINGS.index("pleural effusion")
    change = out.finding_logits["change"]
    change[0, edema] = torch.log(torch.tensor([0.2, 0.78, 0.01, 0.01]))  # clearly added, but the gate says no
    change[1, edema] = torch.log(torch.tensor([0.8, 0.18, 0.01, 0.01]))  # below the threshold, gate says yes
    change[1, effusion] = torch.log(torch.tensor([0.9, 0.01, 0.08, 0.01]))  # less likely than edema
    change[2] = change[1]
    out.pair_logits["any_change"] = torch.logit(torch.tensor([[0.1], [0.9], [0.3]]))
    ungated = answers_from_heads(out, [WHOLE] * 3, 0.7)
    assert ungated == ["the main image has an additional finding of edema than the reference image.",
                       NOTHING_CHANGED, NOTHING_CHANGED]
    gated = answers_from_heads(out, [WHOLE] * 3, 0.7, any_change_from=0.5)
    assert gated == [NOTHING_CHANGED, "the main image has an additional finding of edema than the reference image.",
                     NOTHING_CHANGED]
    assert answers_from_heads(out, [WHOLE] * 3, 0.7, any_change_from=0.05) == [ungated[0], gated[1], gated[1]]


def test_regional_answer_is_the_level_change_of_a_finding_in_that_region():
    out = heads()
    effusion = LABELLED_FINDINGS.index("pleural effusion")
    out.finding_logits["change"][0, effusion, CHANGES.index("level")] = 4.0
    out.finding_logits["location"][0, effusion, LOCATIONS.index("left")] = 3.0
    out.finding_logits["level_ref"][0, effusion, LEVEL_WORDS.index("small")] = 3.0
    out.finding_logits["level_main"][0, effusion, LEVEL_WORDS.index("small")] = 4.0  # same word: not a change
    out.finding_logits["level_main"][0, effusion, LEVEL_WORDS.index("moderate")] = 2.0
    assert answers_from_heads(out, ["what has changed in the left lung area?"], 0.5) == [
        "the level of pleural effusion has changed from small to moderate."]
    # no finding with levels lies in the "left apical" region but pneumothorax: it is named even if less likely
    assert answers_from_heads(out, ["what has changed in the left apical area?"], 0.5)[0].startswith(
        "the level of pneumothorax has changed from")


def test_model_answers_difference_questions_from_its_heads_only_when_configured():
    model = build_tiny_model(**CHANGE_MODEL, difference_readout="change_heads", change_threshold=0.6).eval()
    main, ref = torch.rand(2, 3, 192, 192), torch.rand(2, 3, 192, 192)
    state = model.visual_state(main, ref)
    questions = [WHOLE, "is there edema?"]
    out = model.answer(state, questions, 0.5, max_new_tokens=4)
    assert out.from_change_heads == [True, False]
    assert out.answers[0] == answers_from_heads(state.change, questions, 0.6)[0]
    decoder = model.answer(state, questions, 0.5, max_new_tokens=4, readout=False)
    assert decoder.from_change_heads == [False, False] and decoder.answers[1] == out.answers[1]
    only_heads = model.answer(state, [WHOLE, WHOLE], 0.5, max_new_tokens=4)  # the decoder is not run at all
    assert only_heads.answers == [out.answers[0], answers_from_heads(state.change, [WHOLE] * 2, 0.6)[1]]


def test_readout_is_off_in_the_paper_and_needs_a_change_encoder():
    assert DiffVQAConfig.from_preset("paper").difference_readout == "decoder"
    tiny = DiffVQAConfig.from_preset("tiny")
    with pytest.raises(ValueError, match="change_encoder"):
        dataclasses.replace(tiny, difference_readout="change_heads")
    with pytest.raises(ValueError, match="difference_readout"):
        dataclasses.replace(tiny, difference_readout="heads")
    with pytest.raises(ValueError, match="change_threshold"):
        dataclasses.replace(tiny, **CHANGE_MODEL, difference_readout="change_heads", change_threshold=1.0)
    assert DiffVQAConfig.from_preset("paper").change_gate is None
    with pytest.raises(ValueError, match="change_gate"):
        dataclasses.replace(tiny, **CHANGE_MODEL, difference_readout="change_heads", change_gate=1.5)
    with pytest.raises(ValueError, match="difference_readout"):
        dataclasses.replace(tiny, **CHANGE_MODEL, change_gate=0.5)


def test_review_status_says_when_the_change_heads_read_the_answer():
    from review_app.handlers import Handlers
    from review_app.service import AnalysisResult

    result = AnalysisResult(analysis_id=3, answer=NOTHING_CHANGED, theta_words="", lam=0.5,
                            question_type="difference", views=None, answered_by="change heads")
    assert "read from the change encoder's findings" in Handlers._status_of(result, 0.2, "Analysed")
    decoded = dataclasses.replace(result, answered_by="decoder")
    assert "change encoder" not in Handlers._status_of(decoded, 0.2, "Analysed")


def test_reading_both_ways_is_the_same_reading_of_the_pair_whichever_visit_comes_first():
    from diffvqa_core.change import ChangeEncoder, read_both_ways
    from tests.test_change_encoder import SMALL

    torch.manual_seed(4)
    encoder = ChangeEncoder(SMALL).eval()
    a, b = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ab, ba, plain = read_both_ways(encoder, a, b), read_both_ways(encoder, b, a), encoder(a, b)
    swapped = [CHANGES.index(c) for c in ("unchanged", "missing", "added", "level")]
    assert torch.allclose(ab.finding_logits["change"], ba.finding_logits["change"][..., swapped], atol=1e-6)
    assert torch.allclose(ab.finding_logits["present_ref"], ba.finding_logits["present_main"], atol=1e-6)
    assert torch.allclose(ab.finding_logits["level_main"], ba.finding_logits["level_ref"], atol=1e-6)
    assert torch.equal(ab.mask_logits, plain.mask_logits) and torch.equal(ab.tokens, plain.tokens)
    assert not torch.allclose(ab.finding_logits["change"], plain.finding_logits["change"])


def test_model_reads_both_ways_only_when_configured():
    model = build_tiny_model(**CHANGE_MODEL, change_read_both_ways=True).eval()
    main, ref = torch.rand(1, 3, 192, 192), torch.rand(1, 3, 192, 192)
    with torch.no_grad():
        state = model.visual_state(main, ref)
        forward = model.change_encoder(ref, state.registration.registered_main)
    assert torch.equal(state.change.tokens, forward.tokens)
    assert not torch.allclose(state.change.finding_logits["change"], forward.finding_logits["change"])
    assert not DiffVQAConfig.from_preset("paper").change_read_both_ways


def test_labels_from_an_answer_are_what_it_states_of_each_finding():
    import numpy as np

    from diffvqa_core.change_readout import labels_from_answer
    from diffvqa_core.data.finding_labels import FINDING_COLUMNS, IGNORE, encode_pair
    from diffvqa_core.data.findings import first_visit, next_visit
    from diffvqa_core.data.grammar import difference_answer

    rng = np.random.default_rng(5)
    change, present = FINDING_COLUMNS.index("change"), [FINDING_COLUMNS.index(c) for c in ("present_ref",
                                                                                             "present_main")]
    for _ in range(100):
        ref = first_visit(rng)
        main = next_visit(ref, rng)
        truth, truth_pair = encode_pair(main, ref, "PA")
        rows, pair = labels_from_answer(WHOLE, difference_answer(main, ref))
        assert np.array_equal(rows[:, change], truth[:, change])
        stated = rows[:, present] != IGNORE
        assert np.array_equal(rows[:, present][stated], truth[:, present][stated])
        assert pair[0] == truth_pair[0] and pair[1] == IGNORE
    regional, _ = labels_from_answer("what has changed in the left lung area?",
                                     "the level of pleural effusion has changed from small to moderate.")
    effusion = LABELLED_FINDINGS.index("pleural effusion")
    assert regional[effusion, change] == CHANGES.index("level")
    assert (np.delete(regional, effusion, axis=0) == IGNORE).all()  # the other findings: not said
    for question, answer in (("is there edema?", "yes"), (WHOLE, "the level of edema has changed from mild to mild.")):
        rows, pair = labels_from_answer(question, answer)
        assert (rows == IGNORE).all() and (pair == IGNORE).all()


def test_a_batch_that_states_nothing_adds_no_label_loss():
    from diffvqa_core.change import change_label_loss
    from diffvqa_core.data.finding_labels import FINDING_COLUMNS, IGNORE

    out = heads(2)
    out.finding_logits["change"].requires_grad_(True)
    out.pair_logits.update({c: torch.zeros(2, HEAD_SIZES[c]) for c in PAIR_COLUMNS})
    rows = torch.full((2, len(LABELLED_FINDINGS), len(FINDING_COLUMNS)), IGNORE)
    loss = change_label_loss(out, rows, torch.full((2, 2), IGNORE))
    assert loss.item() == 0.0 and loss.requires_grad


def test_fine_tune_rows_carry_the_labels_their_answers_state_when_the_heads_answer(tmp_path):
    from diffvqa_core.data.synthetic import generate_benchmark
    from train.batches import open_split
    from train.finetune import TrainingRows, heads_answer

    root = generate_benchmark(tmp_path / "synth", 4, seed=3, size=128, workers=1, progress=False)
    (root / "ground_truth").rename(tmp_path / "hidden")  # as a corrections export: no synthetic ground truth
    rows = TrainingRows([(open_split(root, None, question_types=["difference"], image_size=64, augment=False),
                          [0, 1])])
    assert "finding_labels" not in rows[0]
    rows.answer_labels = True
    again = TrainingRows.repeated(rows, 6)
    item = again[1]
    assert again.answer_labels and item["finding_labels"].shape == (len(LABELLED_FINDINGS), 7)
    assert heads_answer(build_tiny_model(**CHANGE_MODEL, difference_readout="change_heads"))
    assert not heads_answer(build_tiny_model(**CHANGE_MODEL))


@pytest.mark.slow
def test_fine_tuning_on_answers_without_ground_truth_teaches_the_heads_that_answer(tmp_path):
    """`fit --init-from` on corrections (answers only, no synthetic ground truth): when the change heads answer the
    difference questions, the corrected answers reach them (their label loss on those rows falls). ~2 min."""
    from diffvqa_core import DiffVQAModel
    from diffvqa_core.change import change_label_loss
    from diffvqa_core.change_readout import labels_from_answer
    from diffvqa_core.data.synthetic import generate_benchmark
    from train.__main__ import main
    from train.answering import images_to
    from train.batches import collate, open_split
    from train_support import one_torch_thread

    root = generate_benchmark(tmp_path / "synth", 40, seed=9, size=128, workers=1, progress=False)
    (root / "ground_truth").rename(tmp_path / "hidden")
    model = build_tiny_model(**CHANGE_MODEL, difference_readout="change_heads")
    model.save_pretrained(tmp_path / "ckpt")
    rows = open_split(root, "train", question_types=["difference"], image_size=192, augment=False)
    batch = collate([rows[i] for i in range(min(8, len(rows)))])
    labels = [labels_from_answer(q, a) for q, a in zip(batch["question"], batch["answer"])]
    findings = torch.stack([torch.from_numpy(f) for f, _ in labels])
    pairs = torch.stack([torch.from_numpy(p) for _, p in labels])

    def label_loss(checkpoint) -> float:
        trained = DiffVQAModel.from_pretrained(checkpoint)
        with torch.no_grad():
            main_image, ref = images_to(batch, torch.device("cpu"))
            return change_label_loss(trained.visual_state(main_image, ref).change, findings, pairs).item()

    (tmp_path / "ft.yaml").write_text("train_batch_size: 4\neval_batch_size: 4\nnum_workers: 0\n"
                                      "eval_max_new_tokens: 6\nval_max_batches: 1\nquestion_types: [difference]\n")
    with one_torch_thread():
        before = label_loss(tmp_path / "ckpt")
        assert main(["fit", "--init-from", str(tmp_path / "ckpt"), "--data-root", str(root), "--config",
                     str(tmp_path / "ft.yaml"), "--output", str(tmp_path / "run"), "--steps", "16",
                     "--validations", "1", "--learning-rate", "2e-3", "--device", "cpu"]) == 0
        after = label_loss(tmp_path / "run" / "last")
    assert after < 0.8 * before, (before, after)
