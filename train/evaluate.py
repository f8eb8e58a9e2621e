"""``python -m train evaluate``: answer a split and score it exactly as the published baselines do.

Writes into ``--out``:

- ``predictions.csv``: row_id, question_type, question, reference, prediction (one row per question);
- ``metrics.json``: {"all": {...}, "<question_type>": {...}} with Bleu_1..Bleu_4, METEOR, ROUGE_L, CIDEr from
  ``diffvqa_core.metrics.score_by_question_type`` (PTBTokenizer, corpus level, keyed by row id, each type
  rescored on its own); on data with synthetic ground truth also "registration" and "mask"
  (see ``train.pair_scores``); with difference questions also "difference_changes" (precision, recall, F1 and
  exact-set accuracy of the changes the answers name, and the fraction of answers the benchmark could have
  written: ``diffvqa_core.metrics.change_agreement``, with exact answers on changed pairs and "nothing has
  changed." precision / recall); "well_formed": per question family, the fraction of answers the benchmark's
  answer grammar accepts (``diffvqa_core.answer_grammar``); "constant_baseline": the same scores for the
  most frequent training answer to each question text (``train.constant_baseline``), and
  "difference_cider_vs_constant", the model's difference CIDEr as a multiple of that baseline's;
- ``settings.json``: checkpoint, split, decoding and row count, for provenance.

``--checkpoint demo`` evaluates the bundled demo model (``assets/demo_model``). Answers are held to the benchmark's
answer grammar (not in the paper) unless ``--no-grammar`` is given: the paper's protocol decodes freely.

``--device auto`` (the default) answers on the GPU when there is one, under bf16 autocast unless ``--precision
fp32``; batches of ``--batch-size`` pairs (default 64 on a GPU, 8 on a CPU) are answered together, every stage
batched and greedy decoding stopping when every answer of the batch has ended. Before the model is loaded, the
scorer is checked (``train.preflight``): a machine without Java stops in seconds, not after the answers.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from train.answering import Decoding, answer_batch
from train.batches import evaluation_loader, open_split
from diffvqa_core.devices import DEVICE_CHOICES, PRECISION_CHOICES
from train.pair_scores import PairScores
from train.preflight import ScorerUnavailableError, check_scorer


PREDICTION_COLUMNS = ("row_id", "question_type", "question", "reference", "prediction")
GPU_BATCH_SIZE = 64  # pairs answered together on a GPU: a choice, not tuned (bench / gpu-check measure it)
CPU_BATCH_SIZE = 8


class OtherPairReference(torch.utils.data.Dataset):
    """Row i of ``dataset`` with the reference film of row j, the first row from i + len/2 on (cyclically)
    whose subject differs: the same question on a main image paired with a stranger's prior."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset
        self.has_ground_truth = False  # the change masks no longer describe the pair shown
        rows = dataset.rows
        self.partner = []
        for i, row in enumerate(rows):
            j = (i + len(rows) // 2) % len(rows)
            for _ in range(len(rows)):
                if rows[j]["subject_id"] != row["subject_id"]:
                    break
                j = (j + 1) % len(rows)
            else:
                raise ValueError("--swap-references needs rows from at least two patients")
            self.partner.append(j)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        item = dict(self.dataset[index])
        item["ref"] = self.dataset.film(self.dataset.rows[self.partner[index]]["ref_id"])
        for key in ("gt_theta", "change_mask", "finding_labels", "pair_labels"):
            item.pop(key, None)
        return item


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the flags of ``python -m train evaluate``."""
    parser.add_argument("--checkpoint", required=True, help="model directory (e.g. OUTPUT/best) or 'demo'")
    parser.add_argument("--data-root", required=True, help="benchmark directory (real or synthetic)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test", "all"),
                        help="which rows to answer ('all': every row, for a set made with a fresh seed)")
    parser.add_argument("--question-type", action="append", dest="question_types", metavar="T",
                        help="keep only this question family (repeatable; default: all)")
    parser.add_argument("--num-beams", type=int, default=1, help="1 = greedy (EKAID); PLURAL used 10, VED 2")
    parser.add_argument("--no-repeat-ngram-size", type=int, default=0, help="PLURAL used 3 with 10 beams")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="longest answer in tokens (default: the model's max_answer_len, as in training)")
    parser.add_argument("--no-grammar", action="store_true",
                        help="decode freely, as the paper's protocol (default: answers held to the benchmark's "
                             "answer grammar, not in the paper)")
    parser.add_argument("--decoder-only", action="store_true",
                        help="the decoder answers every question, also where the model's difference_readout gives "
                             "the whole-image difference question to the change encoder's heads (not in the paper)")
    parser.add_argument("--lam", type=float, help="fusion weight lambda of eq. 7 (default: the model's, 0.5)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"pairs answered together (default: {GPU_BATCH_SIZE} on a GPU, {CPU_BATCH_SIZE} on a CPU)")
    parser.add_argument("--max-samples", type=int, help="score only the first N rows of the split")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="image-reading processes (default: 2 on a CPU, up to 8 on a GPU)")
    parser.add_argument("--device", default="auto", metavar="|".join(DEVICE_CHOICES),
                        help="auto (default): CUDA when PyTorch sees a GPU, else the CPU; or cuda:N")
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default="auto",
                        help="auto (default): bf16 autocast on a GPU, fp32 on a CPU")
    parser.add_argument("--bf16", action="store_true", help="the same as --precision bf16 (also on a CPU with "
                        "AVX-512 bf16)")
    parser.add_argument("--swap-references", action="store_true",
                        help="control: give each question the reference film of another patient's pair (do the "
                             "answers depend on the images?); registration and mask scores are then skipped")
    parser.add_argument("--out", required=True, help="directory for predictions.csv and metrics.json")


def run(args: argparse.Namespace) -> int:
    """Runs the evaluation from parsed flags; returns the exit status (2 with a message on a usage error)."""
    try:
        evaluate(args)
    except (FileNotFoundError, ValueError, ScorerUnavailableError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def resolve_checkpoint(name: str) -> Path:
    """The checkpoint directory for ``--checkpoint`` ("demo" = the bundled demo model)."""
    from diffvqa_core.pipeline import DEMO_CHECKPOINT

    if name == "demo":
        if not DEMO_CHECKPOINT.is_dir():
            raise FileNotFoundError(f"the bundled demo checkpoint is missing at {DEMO_CHECKPOINT}")
        return DEMO_CHECKPOINT
    return Path(name)


def evaluate(args: argparse.Namespace) -> dict:
    """Generates answers for the chosen rows, writes the three output files and returns the metrics."""
    from diffvqa_core import DiffVQAModel
    from diffvqa_core.devices import inference_dtype, resolve_device, synchronize
    from diffvqa_core.metrics import change_agreement, score_by_question_type
    from diffvqa_core.pipeline import inference_context

    device = resolve_device(args.device)
    dtype = inference_dtype(device, "bf16" if args.bf16 else args.precision)
    batch_size = args.batch_size or (GPU_BATCH_SIZE if device.type == "cuda" else CPU_BATCH_SIZE)
    num_workers = args.num_workers if args.num_workers is not None else (
        min(8, os.cpu_count() or 1) if device.type == "cuda" else 2)
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    check_scorer()
    checkpoint = resolve_checkpoint(args.checkpoint)
    model = DiffVQAModel.from_pretrained(checkpoint)
    model.to(device).eval()
    dataset = open_split(args.data_root, None if args.split == "all" else args.split,
                         question_types=args.question_types,
                         image_size=model.config.image_size, augment=False)
    if args.swap_references:
        dataset = OtherPairReference(dataset)
    loader = evaluation_loader(dataset, batch_size=batch_size, num_workers=num_workers, limit=args.max_samples)
    max_new_tokens = args.max_new_tokens or model.config.max_answer_len
    decoding = Decoding(args.num_beams, max_new_tokens, args.no_repeat_ngram_size, args.lam,
                        grammar=not args.no_grammar, readout=not args.decoder_only)
    pair_scores = PairScores() if dataset.has_ground_truth else None
    rows = []
    started = time.perf_counter()
    with inference_context(dtype, device):  # one region: under bf16 each weight is cast once, not per token
        for batch in tqdm(loader, desc=f"evaluate {args.split}", unit="batch"):
            result = answer_batch(model, batch, device, decoding)
            rows.extend(zip(batch["row_id"], batch["question_type"], batch["question"], batch["answer"],
                            result.answers))
            if pair_scores is not None:
                pair_scores.add(batch, result)
    synchronize(device)
    seconds = time.perf_counter() - started

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "predictions.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(PREDICTION_COLUMNS)
        writer.writerows(rows)
    metrics = score_by_question_type((r[0], r[1], r[3], r[4]) for r in rows)
    difference = [(r[3], r[4]) for r in rows if r[1] == "difference"]
    if difference:
        metrics["difference_changes"] = change_agreement(difference)
    metrics["well_formed"] = well_formed_by_family(rows)
    metrics.update(constant_baseline_scores(args.data_root, rows, metrics))
    if pair_scores is not None:
        metrics.update(pair_scores.summary())
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    settings = {"checkpoint": str(checkpoint), "data_root": str(args.data_root), "split": args.split,
                "question_types": args.question_types, "rows": len(rows), "num_beams": args.num_beams,
                "no_repeat_ngram_size": args.no_repeat_ngram_size, "max_new_tokens": max_new_tokens,
                "lam": model.config.inference_lambda if args.lam is None else args.lam,
                "bf16": dtype == torch.bfloat16, "device": str(device), "batch_size": batch_size,
                "swap_references": args.swap_references, "grammar": not args.no_grammar,
                "difference_readout": "decoder" if args.decoder_only else model.config.difference_readout,
                "answering_seconds": round(seconds, 3), "cases_per_s": len(rows) / seconds if seconds > 0 else None}
    (out / "settings.json").write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    overall = metrics["all"]
    print(f"answered {len(rows)} rows in {seconds:.1f} s ({settings['cases_per_s']:.1f} cases/s, batches of "
          f"{batch_size}, {device}, {'bf16' if dtype == torch.bfloat16 else 'fp32'}, image reading included)")
    print("all: " + ", ".join(f"{k} {v:.4f}" for k, v in overall.items()))
    return metrics


def well_formed_by_family(rows: list[tuple]) -> dict[str, float]:
    """Per question family (and "all"), the fraction of predictions the benchmark's answer grammar accepts for
    their question (questions of no known form are not counted)."""
    from diffvqa_core.answer_grammar import AnswerGrammar

    counts: dict[str, list[int]] = {}
    for _, family, question, _, prediction in rows:
        grammar = AnswerGrammar.for_question(question)
        if grammar is None:
            continue
        for key in (family, "all"):
            counts.setdefault(key, []).append(int(grammar.accepts(prediction)))
    return {key: sum(values) / len(values) for key, values in counts.items()}


def constant_baseline_scores(data_root: str, rows: list[tuple], metrics: dict) -> dict:
    """The constant-answer baseline scored on the same rows, and the model's difference CIDEr as a multiple of it."""
    from diffvqa_core.metrics import change_agreement, score_by_question_type
    from train.constant_baseline import ConstantAnswers

    answer = ConstantAnswers(data_root)
    baseline_rows = [(r[0], r[1], r[3], answer(r[2], r[1])) for r in rows]
    baseline = score_by_question_type(baseline_rows)
    difference = [(r[2], r[3]) for r in baseline_rows if r[1] == "difference"]
    out = {"constant_baseline": baseline}
    if difference:
        baseline["difference_changes"] = change_agreement(difference)
        model_cider, baseline_cider = metrics["difference"]["CIDEr"], baseline["difference"]["CIDEr"]
        out["difference_cider_vs_constant"] = model_cider / baseline_cider if baseline_cider else None
    return out
