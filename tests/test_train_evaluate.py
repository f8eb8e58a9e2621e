"""``python -m train evaluate``: predictions.csv, official metrics (checked against pycocoevalcap itself),
registration and mask scores on synthetic ground truth, clear errors."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from diffvqa_core.answer_grammar import AnswerGrammar
from diffvqa_core.metrics import change_agreement
from train_support import SMALL_MODEL, make_synthetic_set, one_torch_thread
from train.__main__ import main as train_main

pytestmark = pytest.mark.slow  # builds a model, generates, and runs the Java scorers (~20 s)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_synthetic_set(tmp_path_factory.mktemp("synth"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A small random-weight model saved as a checkpoint directory."""
    import torch

    from diffvqa_core import DiffVQAConfig, DiffVQAModel

    torch.manual_seed(0)
    config = DiffVQAConfig.from_dict({**DiffVQAConfig.from_preset("tiny").to_dict(), **SMALL_MODEL})
    directory = tmp_path_factory.mktemp("model")
    DiffVQAModel(config).save_pretrained(directory)
    return directory


def _evaluate(checkpoint, data_root, out, *extra):
    with one_torch_thread():
        return train_main(["evaluate", "--checkpoint", str(checkpoint), "--data-root", str(data_root),
                           "--split", "test", "--max-new-tokens", "8", "--num-workers", "0", "--out", str(out),
                           *extra])


@pytest.fixture(scope="module")
def evaluation(checkpoint, data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    assert _evaluate(checkpoint, data_root, out) == 0
    with open(out / "predictions.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return rows, json.loads((out / "metrics.json").read_text())


def test_predictions_cover_every_test_row(evaluation, data_root):
    import pandas as pd

    rows, _ = evaluation
    questions = pd.read_csv(data_root / "mimic_pair_questions.csv", dtype=str, keep_default_na=False)
    test = questions[questions["split"] == "test"]
    assert list(rows[0]) == ["row_id", "question_type", "question", "reference", "prediction"]
    assert sorted(r["row_id"] for r in rows) == sorted(test.index.astype(str))
    assert sorted(r["reference"] for r in rows) == sorted(test["answer"])


def test_metrics_equal_pycocoevalcap_on_the_written_predictions(evaluation):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    rows, metrics = evaluation

    def official(subset):
        tokenizer = PTBTokenizer()
        refs = tokenizer.tokenize({r["row_id"]: [{"caption": r["reference"]}] for r in subset})
        preds = tokenizer.tokenize({r["row_id"]: [{"caption": r["prediction"]}] for r in subset})
        bleu, _ = Bleu(4).compute_score(refs, preds)
        scores = {f"Bleu_{i + 1}": b for i, b in enumerate(bleu)}
        scores["METEOR"] = Meteor().compute_score(refs, preds)[0]
        scores["ROUGE_L"] = Rouge().compute_score(refs, preds)[0]
        scores["CIDEr"] = Cider().compute_score(refs, preds)[0]
        return scores

    types = sorted({r["question_type"] for r in rows})
    extra = {"difference_changes", "difference_cider_vs_constant"} if "difference" in types else set()
    assert set(metrics) == {"all", *types, "registration", "mask", "well_formed", "constant_baseline", *extra}
    assert metrics["all"] == pytest.approx(official(rows), abs=1e-9)
    kind = max(types, key=[r["question_type"] for r in rows].count)  # one subset suffices: each Java run is slow
    assert metrics[kind] == pytest.approx(official([r for r in rows if r["question_type"] == kind]), abs=1e-9)


def test_synthetic_ground_truth_gives_registration_and_mask_scores(evaluation):
    _, metrics = evaluation
    registration = metrics["registration"]
    assert registration["pairs"] >= 1 and registration["before_px"] > 0 and registration["after_px"] >= 0
    mask = metrics["mask"]
    assert mask["changed_pairs"] >= 1
    for name in ("fused", "prior", "adaptive"):
        assert 0.0 <= mask[name]["pointing_game"] <= 1.0 and 0.0 <= mask[name]["auroc"] <= 1.0


def test_question_type_filter_scores_only_that_family(checkpoint, data_root, tmp_path):
    assert _evaluate(checkpoint, data_root, tmp_path, "--question-type", "difference") == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) == {"all", "difference", "registration", "mask", "difference_changes", "well_formed",
                            "constant_baseline", "difference_cider_vs_constant"}
    rows = list(csv.DictReader((tmp_path / "predictions.csv").open(encoding="utf-8")))
    assert metrics["difference_changes"] == change_agreement((r["reference"], r["prediction"]) for r in rows)
    # answers are held to the benchmark's grammar by default: with only 8 new tokens most are cut short, but none
    # leaves the grammar (an untrained model decoding freely writes word salad)
    grammar = AnswerGrammar.for_question(rows[0]["question"])
    assert all(grammar.allows_prefix(r["prediction"]) for r in rows)
    assert set(metrics["well_formed"]) == {"difference", "all"}
    baseline = metrics["constant_baseline"]
    assert set(baseline) == {"all", "difference", "difference_changes"}
    ratio = metrics["difference_cider_vs_constant"]
    if baseline["difference"]["CIDEr"]:
        assert ratio == pytest.approx(metrics["difference"]["CIDEr"] / baseline["difference"]["CIDEr"])
    else:  # a set this small can leave the baseline with no n-gram right
        assert ratio is None


def test_checkpoint_of_another_architecture_is_a_clear_error(checkpoint, data_root, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    config = json.loads((broken / "config.json").read_text())
    config["mask_head_hidden"] = 48
    (broken / "config.json").write_text(json.dumps(config))
    assert _evaluate(broken, data_root, tmp_path / "out") == 2
    assert "mask_head" in capsys.readouterr().err


def test_wrong_data_root_is_a_clear_error(checkpoint, tmp_path, capsys):
    assert _evaluate(checkpoint, tmp_path, tmp_path / "out") == 2
    assert "mimic_pair_questions.csv not found" in capsys.readouterr().err


def test_swapped_references_come_from_another_patient(data_root):
    from train.batches import open_split
    from train.evaluate import OtherPairReference

    dataset = open_split(data_root, "train", question_types=None, image_size=64, augment=False)
    swapped = OtherPairReference(dataset)
    assert not swapped.has_ground_truth
    for index in range(0, len(dataset), 7):
        partner = swapped.partner[index]
        assert dataset.rows[partner]["subject_id"] != dataset.rows[index]["subject_id"]
        item = swapped[index]
        assert "change_mask" not in item and "gt_theta" not in item
        assert (item["ref"] == dataset[partner]["ref"]).all() and (item["main"] == dataset[index]["main"]).all()


def test_evaluation_with_swapped_references_skips_pair_scores(checkpoint, data_root, tmp_path):
    out = tmp_path / "swapped"
    # the 20-pair set's test split holds one patient; its training split has several (argparse keeps the last --split)
    assert _evaluate(checkpoint, data_root, out, "--swap-references", "--split", "train", "--max-samples", "4") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert "registration" not in metrics and "mask" not in metrics
    assert json.loads((out / "settings.json").read_text())["swap_references"] is True


def test_constant_baseline_answers_the_most_frequent_training_answer_of_the_question_text():
    from train.constant_baseline import most_frequent_answers

    rows = [{"question": "is there edema?", "question_type": "presence", "answer": a} for a in ("no", "yes", "no")]
    rows += [{"question": "what level is the edema?", "question_type": "level", "answer": "mild"}]
    by_question, by_family, overall = most_frequent_answers(rows)
    assert by_question == {"is there edema?": "no", "what level is the edema?": "mild"}
    assert by_family == {"presence": "no", "level": "mild"} and overall == "no"
    with pytest.raises(ValueError, match="training rows"):
        most_frequent_answers([])


def test_batched_evaluation_records_device_batch_size_and_speed(checkpoint, data_root, tmp_path, capsys):
    out = tmp_path / "batched"
    assert _evaluate(checkpoint, data_root, out, "--batch-size", "2", "--device", "cpu") == 0  # 3 rows: 2 batches
    settings = json.loads((out / "settings.json").read_text())
    assert settings["device"] == "cpu" and settings["batch_size"] == 2 and settings["rows"] == 3
    assert settings["bf16"] is False and settings["cases_per_s"] > 0
    assert "cases/s, batches of 2, cpu, fp32" in capsys.readouterr().out
