"""``python -m train results-table``: the README's table read from `train evaluate` outputs."""

from __future__ import annotations

import json

from train.__main__ import main


def _scores(cider: float) -> dict:
    return {"Bleu_1": 0.5, "Bleu_4": 0.3, "METEOR": 0.25, "ROUGE_L": 0.45, "CIDEr": cider}


def _evaluation(tmp_path, name: str, cider: float, config: dict, *, after: float = 1.5, fused: float = 0.7,
                predictions: list[str] | None = None, f1: float = 0.25):
    checkpoint = tmp_path / f"{name}_model"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps(config))
    out = tmp_path / name
    out.mkdir()
    metrics = {"all": _scores(cider + 0.5), "difference": _scores(cider),
               "registration": {"pairs": 10, "before_px": 4.0, "after_px": after},
               "mask": {"changed_pairs": 8, "prior": {"pointing_game": 0.4, "auroc": 0.7},
                        "adaptive": {"pointing_game": 0.5, "auroc": 0.6},
                        "fused": {"pointing_game": fused, "auroc": 0.8}}}
    metrics["difference_changes"] = {"questions": 3, "precision": 0.5, "recall": 0.2, "f1": f1, "exact": 0.125,
                                     "exact_changed": 0.5, "nothing_precision": 0.8, "nothing_recall": 0.9}
    metrics["well_formed"] = {"difference": 1.0, "presence": 1.0, "all": 1.0}
    metrics["difference_cider_vs_constant"] = cider
    (out / "metrics.json").write_text(json.dumps(metrics))
    lines = ["row_id,question_type,question,reference,prediction"]
    lines += [f"{i},difference,q,ref,{answer}" for i, answer in enumerate(predictions or ["a", "b", "c"])]
    (out / "predictions.csv").write_text("\n".join(lines) + "\n")
    (out / "settings.json").write_text(json.dumps({"checkpoint": str(checkpoint)}))
    return out


def test_table_marks_what_a_row_switched_off_and_checks_the_targets(tmp_path, capsys):
    full = _evaluation(tmp_path, "full", 1.6, {}, after=1.0, fused=0.85)
    question = _evaluation(tmp_path, "question", 1.0, {"use_images": False})
    unregistered = _evaluation(tmp_path, "unreg", 1.2, {"use_registration": False}, after=4.0)
    plain = _evaluation(tmp_path, "plain", 1.3, {"use_saliency_mask": False})
    out = tmp_path / "table.md"
    assert main(["results-table", "--row", f"full model={full}", "--row", f"question only={question}",
                 "--row", f"unregistered={unregistered}", "--row", f"no saliency (M = 1)={plain}",
                 "--full", "full model", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.read_text() == text
    rows = [line for line in text.splitlines() if line.startswith("| full model |")]
    assert "| 1.600 | 0.500 |" in rows[0] and rows[0].endswith("| 2.100 |")  # diff CIDEr, all BLEU-1 ... all CIDEr
    assert rows[1] == "| full model | 0.250 | 0.125 | 0.500 | 0.800 | 0.900 | 1.000 | 1.60 |"
    assert "| 4.00 | 1.00 | 75% |" in rows[2]
    question_rows = [line for line in text.splitlines() if line.startswith("| question only |")]
    assert question_rows[2].count("n/a") == 8  # no registration "after", no U, F or M
    unregistered_rows = [line for line in text.splitlines() if line.startswith("| unregistered |")]
    assert "| 4.00 | n/a | n/a |" in unregistered_rows[2]
    plain_rows = [line for line in text.splitlines() if line.startswith("| no saliency (M = 1) |")]
    assert plain_rows[2].endswith("| n/a | n/a |") and "0.400" in plain_rows[2]  # M = 1, U still measured
    assert "- difference change F1 >= 0.60: 0.250 [MISSED]" in text
    assert "- 'nothing has changed.' recall >= 0.9: 0.900 [met]" in text
    assert "- difference CIDEr / constant-answer baseline >= 1.5 x: 1.60 [met]" in text
    assert "- corner error after registration / before <= 0.30: 0.25 [met]" in text
    assert "- fused mask M pointing game on changed pairs >= 0.8: 0.850 [met]" in text
    assert "- adaptive mask F AUROC >= 0.95: 0.600 [MISSED]" in text


def test_a_row_over_several_seeds_shows_mean_and_standard_deviation(tmp_path, capsys):
    one = _evaluation(tmp_path, "seed1", 1.6, {}, f1=0.2)
    two = _evaluation(tmp_path, "seed2", 2.0, {}, f1=0.4)
    assert main(["results-table", "--row", f"full={one},{two}", "--full", "full"]) == 0
    text = capsys.readouterr().out
    assert "| 1.800 ± 0.283 |" in text  # difference CIDEr over the two seeds
    assert "| full | 0.300 ± 0.141 |" in text
    assert "- difference change F1 >= 0.60: 0.300 [MISSED]" in text


def test_a_missing_evaluation_is_a_clear_error(tmp_path, capsys):
    assert main(["results-table", "--row", f"full={tmp_path / 'nowhere'}"]) == 2
    assert "run `python -m train evaluate" in capsys.readouterr().err
    assert main(["results-table", "--row", "no-equals-sign"]) == 2


def test_swapped_rows_count_the_difference_answers_that_change(tmp_path, capsys):
    full = _evaluation(tmp_path, "full", 1.6, {}, predictions=["a", "b", "c"], f1=0.3)
    swapped = _evaluation(tmp_path, "full_swapped", 1.1, {}, predictions=["a", "x", "y"], f1=0.1)
    assert main(["results-table", "--row", f"full model={full}", "--swapped", f"full model={swapped}"]) == 0
    assert "| full model | 2 of 3 | 1.600 | 1.100 | 0.300 | 0.100 |" in capsys.readouterr().out
    assert main(["results-table", "--row", f"full model={full}", "--swapped", f"other={swapped}"]) == 2
    assert "names no --row" in capsys.readouterr().err
    fewer = _evaluation(tmp_path, "fewer", 1.1, {}, predictions=["a", "x"])
    assert main(["results-table", "--row", f"full model={full}", "--swapped", f"full model={fewer}"]) == 2
    assert "different difference questions" in capsys.readouterr().err
