"""``python -m train fit --init-from CHECKPOINT``: fine-tune a trained model, e.g. on the reviewers' corrections.

Not in the paper: the review loop of issue 17. ``python -m train corrections`` writes the corrections in the
benchmark's layout; this continues a trained model on such a folder::

    python -m train fit --init-from demo --data-root corrections/ --output runs/finetuned
    python -m train fit --init-from runs/demo/best --data-root corrections/ --val-root data/synthetic \\
        --mix-root data/synthetic --mix-ratio 2 --steps 200

What it takes from the checkpoint and what it changes:

* The architecture and the weights: the model is the checkpoint (``DiffVQAModel.from_pretrained``; ``demo`` is
  the bundled model), so no pretrained part is fetched. Its config is recorded whole under ``model:``.
* The training settings of the run that made it (``train_state.json``, when the checkpoint has one; for the
  bundled demo model, which has none, its recipe ``train/configs/demo_continued.yaml``; the defaults of ``TrainConfig``
  otherwise), then the fine-tune's own: one stage with everything trainable
  (``epochs_stage1: 0``), a tenth of the learning rate, no family weighting, and lambda (eq. 7) held at the
  checkpoint's ``lambda_end`` (the model finished training there; restarting the schedule at 1 would retrain it
  on the prior alone). A ``--config`` YAML overrides any of these except ``model``.
* A handful of rows is enough: ``--steps`` optimiser steps in ``--validations`` epochs, the training rows
  repeated (every row equally often) to fill them. Validation uses the val split of ``--data-root`` (the
  ``corrections`` export holds some pairs out) or of ``--val-root``.
* ``--mix-root`` mixes ``--mix-ratio`` original training rows per corrected row into every epoch (a fixed,
  seeded sample of that folder's train split) so the model does not forget what it knew. Ground-truth
  targets of synthetic data are dropped when only one part has them.

When the checkpoint's change heads answer the difference questions (``difference_readout: change_heads``, not
in the paper), rows without synthetic labels get the labels their (corrected) answer states
(``change_readout.labels_from_answer``), so that a correction reaches the part that answers.

Before and after, the answer loss (the ``lm`` term: the corrected answers under teacher forcing) on the
training and validation rows is printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from train.config import TrainConfig, _read_settings

GROUND_TRUTH_KEYS = ("gt_theta", "change_mask", "finding_labels", "pair_labels")
FINETUNE_DEFAULTS: dict[str, Any] = {
    "epochs_stage1": 0, "question_weights": None, "question_types": None, "epoch_samples": None,
    "warmup_ratio": 0.1, "save_every_steps": 10**9,
}
LEARNING_RATE_FACTOR = 0.1
DEMO_RECIPE = Path(__file__).resolve().parent / "configs" / "demo_continued.yaml"  # the bundled model has no state
RUN_SPECIFIC = ("model", "model_preset", "data_root", "init_weights", "output_dir")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The fine-tuning flags of ``python -m train fit`` (used with ``--init-from``)."""
    group = parser.add_argument_group("fine-tuning (--init-from; see train/finetune.py)")
    group.add_argument("--init-from", metavar="CHECKPOINT",
                       help="fine-tune this trained model folder ('demo' = the bundled model); --config optional")
    group.add_argument("--steps", type=int, default=60, help="optimiser steps of the fine-tune (default 60)")
    group.add_argument("--validations", type=int, default=2, help="epochs, each ending in validation (default 2)")
    group.add_argument("--val-root", metavar="DIR", help="validate on this folder's val split (default: DATA_ROOT's)")
    group.add_argument("--mix-root", metavar="DIR", help="mix this folder's training rows in, so nothing is forgotten")
    group.add_argument("--mix-ratio", type=float, default=1.0, help="original rows per corrected row (default 1)")
    group.add_argument("--learning-rate", type=float,
                       help=f"default: {LEARNING_RATE_FACTOR:g} x the checkpoint's training learning rate")


def run(args: argparse.Namespace) -> int:
    """``fit --init-from``: returns 0, or 2 with a message on a usage error."""
    from diffvqa_core.weights import set_weights_dir
    from train.fit import fit
    from train.preflight import ScorerUnavailableError

    try:
        set_weights_dir(args.weights_dir)
        checkpoint = checkpoint_directory(args.init_from)
        model = load_model(checkpoint)
        config = finetune_config(checkpoint, model, args)
        train_set, val_set = open_sets(config, args)
        train_set.answer_labels = heads_answer(model)
        config = dataclasses.replace(config, epoch_samples=_epoch_rows(config, args))
        train_set = TrainingRows.repeated(train_set, config.epoch_samples)
        before = _losses(model, train_set, val_set, config)
        print(f"fine-tuning {checkpoint} on {train_set.unique_rows} rows of {config.data_root}"
              f"{f' (with {train_set.mixed_rows} from {args.mix_root})' if args.mix_root else ''}; validation: "
              f"{len(val_set)} rows; {args.steps} steps at lambda {model.config.lambda_end:g}, "
              f"learning rate {config.learning_rate:g}")
        fit(config, resume=args.resume, device=args.device, model=None if args.resume else model,
            train_set=train_set, val_set=val_set, max_steps=args.max_steps)
        from diffvqa_core import DiffVQAModel

        after = _losses(DiffVQAModel.from_pretrained(Path(config.output_dir) / "last"), train_set, val_set, config)
        for name in before:
            print(f"answer loss on the {name} rows: {before[name]:.4f} -> {after[name]:.4f}")
    except (FileNotFoundError, ValueError, ScorerUnavailableError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def checkpoint_directory(name: str) -> Path:
    """The checkpoint folder of ``--init-from`` ("demo": assets/demo_model)."""
    from train.warm_start import resolve_init_checkpoint

    directory = resolve_init_checkpoint(name)
    if not directory.is_dir():
        raise FileNotFoundError(f"--init-from {name}: no checkpoint folder at {directory}")
    return directory


def load_model(checkpoint: Path):
    """The checkpoint's model, its lambda schedule pinned at ``lambda_end`` (see the module docstring)."""
    from diffvqa_core import DiffVQAModel

    model = DiffVQAModel.from_pretrained(checkpoint)
    model.config.lambda_start = model.config.lambda_end
    return model


def finetune_config(checkpoint: Path, model, args: argparse.Namespace) -> TrainConfig:
    """The fine-tune's TrainConfig: the checkpoint's run, the fine-tune defaults, ``--config``, then the flags.

    Raises:
        ValueError: ``--config`` changes the model, or a bad value.
    """
    from train.checkpoint import TRAIN_STATE

    base: dict[str, Any] = {}
    if (checkpoint / TRAIN_STATE).is_file():
        base = json.loads((checkpoint / TRAIN_STATE).read_text(encoding="utf-8")).get("train_config", {})
    elif checkpoint.resolve() == _demo_checkpoint().resolve() and DEMO_RECIPE.is_file():
        base = {k: v for k, v in _read_settings(DEMO_RECIPE).items() if k not in RUN_SPECIFIC}  # its recipe
    base_config = TrainConfig.from_dict(base, source=str(checkpoint / TRAIN_STATE))
    settings = {**base_config.to_dict(), **FINETUNE_DEFAULTS,
                "learning_rate": base_config.learning_rate * LEARNING_RATE_FACTOR,
                "init_weights": str(checkpoint), "output_dir": "runs/finetune"}
    if args.config:
        chosen = _read_settings(Path(args.config))
        if chosen.pop("model", None):
            raise ValueError(f"{args.config}: 'model' cannot change when fine-tuning: the architecture is the "
                             f"checkpoint's ({checkpoint})")
        settings.update(chosen)
    if args.steps < 1 or args.validations < 1:
        raise ValueError("--steps and --validations must be at least 1")
    flags = {"data_root": args.data_root, "output_dir": args.output, "mixed_precision": args.mixed_precision,
             "seed": args.seed, "learning_rate": args.learning_rate}
    settings.update({k: v for k, v in flags.items() if v is not None})
    settings["model"] = model.config.to_dict()
    settings["epochs_stage2"] = args.validations
    return TrainConfig.from_dict(settings, source="fine-tune settings")


def heads_answer(model) -> bool:
    """Whether the model's change heads answer difference questions and train on their labels, so that a
    corrected difference answer must reach them (``difference_readout: change_heads``, not in the paper)."""
    cfg = model.config
    return cfg.change_encoder and cfg.difference_readout == "change_heads" and cfg.alpha_change_labels > 0


def _demo_checkpoint() -> Path:
    from diffvqa_core.pipeline import DEMO_CHECKPOINT

    return DEMO_CHECKPOINT


def open_sets(config: TrainConfig, args: argparse.Namespace):
    """(training rows, the corrections plus any mixed-in originals; validation rows)."""
    from train.batches import open_split

    size = config.model_config().image_size
    kinds = {"question_types": config.question_types, "image_size": size}
    corrections = open_split(config.data_root, "train", augment=config.augment, seed=config.seed, **kinds)
    val_root = args.val_root or config.data_root
    try:
        val_set = open_split(val_root, "val", augment=False, **kinds)
    except ValueError as error:
        raise ValueError(f"{error}. Hold some corrections out (`corrections --val-fraction`) or name a folder "
                         "to validate on with --val-root") from error
    parts = [(corrections, list(range(len(corrections))))]
    if args.mix_root:
        if args.mix_ratio <= 0:
            raise ValueError("--mix-ratio must be > 0")
        original = open_split(args.mix_root, "train", augment=config.augment, seed=config.seed, **kinds)
        count = min(len(original), max(1, round(args.mix_ratio * len(corrections))))
        chosen = torch.randperm(len(original), generator=torch.Generator().manual_seed(config.seed))[:count]
        parts.append((original, sorted(chosen.tolist())))
    return TrainingRows(parts), val_set


def _epoch_rows(config: TrainConfig, args: argparse.Namespace) -> int:
    """Rows per epoch so that ``--validations`` epochs take ``--steps`` steps (on one process)."""
    return math.ceil(args.steps / args.validations) * config.train_batch_size


class TrainingRows(Dataset):
    """Rows of several benchmark splits as one training set, optionally repeated whole to a length.

    ``rows`` and ``missing`` are what the trainer reads besides items. When only some parts carry synthetic
    ground truth, its keys are dropped from every item (a batch must have the same keys throughout).
    """

    def __init__(self, parts: list[tuple[Any, list[int]]], copies: int = 1) -> None:
        self.parts = [dataset for dataset, _ in parts]
        once = [(p, i) for p, (_, indices) in enumerate(parts) for i in indices]
        self.index = once * copies
        self.unique_rows = len(once)
        self.mixed_rows = len(once) - len(parts[0][1])
        self.rows = [self.parts[p].rows[i] for p, i in self.index]
        self.missing = sum(getattr(d, "missing", 0) for d in self.parts)
        truth = {bool(getattr(d, "has_ground_truth", False)) for d in self.parts}
        self.has_ground_truth = truth == {True}
        self.drop = GROUND_TRUTH_KEYS if len(truth) > 1 else ()
        # A model whose change heads answer the difference questions (difference_readout) learns a corrected
        # difference answer through them: rows without synthetic labels get the labels their answer states.
        self.answer_labels = False

    @classmethod
    def repeated(cls, rows: TrainingRows, at_least: int) -> TrainingRows:
        """``rows`` repeated whole until it holds at least ``at_least`` rows."""
        parts = [(d, []) for d in rows.parts]
        for p, i in rows.index[: rows.unique_rows]:
            parts[p][1].append(i)
        repeated = cls(parts, copies=max(1, math.ceil(at_least / max(rows.unique_rows, 1))))
        repeated.answer_labels = rows.answer_labels
        return repeated

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: int) -> dict[str, Any]:
        part, row = self.index[index]
        item = {k: v for k, v in self.parts[part][row].items() if k not in self.drop}
        if self.answer_labels and "finding_labels" not in item:
            from diffvqa_core.change_readout import labels_from_answer

            findings, pair = labels_from_answer(item["question"], item["answer"])
            item["finding_labels"], item["pair_labels"] = torch.from_numpy(findings), torch.from_numpy(pair)
        return item


@torch.no_grad()
def answer_loss(model, dataset, *, lam: float | None = None, batch_size: int = 8, limit: int | None = None) -> float:
    """Mean answer loss (the ``lm`` term, teacher forcing) of ``model`` on ``dataset``'s rows, in eval mode.

    Args:
        model: a DiffVQAModel (left in eval mode).
        dataset: a benchmark split or :class:`TrainingRows` (each distinct row once).
        lam: fusion weight of eq. 7 (default: the model's inference_lambda).
        batch_size: rows per forward pass.
        limit: only the first ``limit`` rows.

    Returns:
        The row-weighted mean of the per-batch ``lm`` term, on unaugmented films.
    """
    from train.batches import collate

    readers = [d for d in getattr(dataset, "parts", [dataset]) if getattr(d, "augment", False)]
    for reader in readers:
        reader.augment = False
    try:
        return _answer_loss(model, dataset, lam, batch_size, limit, collate)
    finally:
        for reader in readers:
            reader.augment = True


def _answer_loss(model, dataset, lam: float | None, batch_size: int, limit: int | None, collate) -> float:
    model.eval()
    device = next(model.parameters()).device
    lam = model.config.inference_lambda if lam is None else lam
    count = getattr(dataset, "unique_rows", len(dataset))
    count = count if limit is None else min(count, limit)
    total = 0.0
    for start in range(0, count, batch_size):
        batch = collate([dataset[i] for i in range(start, min(start + batch_size, count))])
        text = {k: v.to(device) for k, v in model.tokenize(list(batch["question"]), list(batch["answer"])).items()}
        out = model(batch["main"].to(device), batch["ref"].to(device), text["question_ids"], text["question_mask"],
                    text["answer_ids"], text["answer_mask"], lam=lam)
        total += float(out.terms["lm"]) * len(batch["question"])
    return total / max(count, 1)


def _losses(model, train_set, val_set, config: TrainConfig) -> dict[str, float]:
    lam = model.config.lambda_end
    return {"training": answer_loss(model, train_set, lam=lam, batch_size=config.eval_batch_size, limit=64),
            "validation": answer_loss(model, val_set, lam=lam, batch_size=config.eval_batch_size, limit=64)}
