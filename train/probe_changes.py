"""``python -m train probe-changes``: how much "what changed" a trained model's image features carry.

A diagnostic for synthetic data (it needs the ground-truth sidecars). For every distinct (main, reference)
pair of a split it computes, once, the model's image tokens and pools each visit's tokens (mean and max over
tokens), giving per pair the vector [pool(a), pool(b), pool(a) - pool(b)] for two sets of features:

- ``unmasked``: a = f_main, b = f_ref, phi on the registered main and the reference (eq. 3);
- ``decoder``: the two image slots the decoder reads (eq. 10): f_mask_main and f_mask_ref, or
  another second slot as ``reference_tokens`` says (``DiffVQAModel.image_slots``); with M = 1 and the
  paper's slots they are the unmasked ones.

A linear probe (L2-regularised logistic regression, one output per finding and direction, fitted with
L-BFGS on the training split's pairs) then predicts which findings were added (in the main study, not in the
reference) and which were removed; the score is the test split's AUROC, averaged over the findings that occur
in both classes. It measures evidence, not answers: a model whose ``decoder`` features probe well but whose
answers do not change with the pair (``evaluate --swap-references``) has the evidence and does not use it.

Writes ``--out`` (JSON): {"unmasked": {"added_auroc", "removed_auroc"}, "decoder": {...}, "pairs": {...},
settings}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

FEATURE_SETS = ("unmasked", "decoder")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the flags of ``python -m train probe-changes``."""
    parser.add_argument("--checkpoint", required=True, help="model directory (e.g. OUTPUT/best) or 'demo'")
    parser.add_argument("--data-root", required=True, type=Path, help="synthetic benchmark root (train synth)")
    parser.add_argument("--out", required=True, type=Path, help="JSON file to write")
    parser.add_argument("--train-pairs", type=int, default=1200, help="pairs of the train split the probe fits")
    parser.add_argument("--test-pairs", type=int, default=400, help="pairs of the test split it is scored on")
    parser.add_argument("--lam", type=float, help="fusion weight lambda of eq. 7 (default: the model's)")
    parser.add_argument("--weight-decay", type=float, default=0.01, help="L2 weight of the probe")
    parser.add_argument("--batch-size", type=int, default=32)


def run(args: argparse.Namespace) -> int:
    from diffvqa_core import DiffVQAModel
    from train.evaluate import resolve_checkpoint

    model = DiffVQAModel.from_pretrained(resolve_checkpoint(args.checkpoint))
    if not model.config.use_images:
        raise SystemExit("probe-changes: this model reads no images (question-only), there is nothing to probe")
    lam = model.config.inference_lambda if args.lam is None else args.lam
    result = probe_changes(model, args.data_root, train_pairs=args.train_pairs, test_pairs=args.test_pairs,
                           lam=lam, weight_decay=args.weight_decay, batch_size=args.batch_size)
    result["settings"] = {"checkpoint": str(args.checkpoint), "data_root": str(args.data_root), "lam": lam,
                          "weight_decay": args.weight_decay}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    for name in FEATURE_SETS:
        print(f"{name:9s} added AUROC {result[name]['added_auroc']:.3f}  removed AUROC "
              f"{result[name]['removed_auroc']:.3f}")
    return 0


def probe_changes(model, data_root: Path, *, train_pairs: int, test_pairs: int, lam: float,
                  weight_decay: float, batch_size: int = 32) -> dict:
    """Fits the probe on ``train_pairs`` pairs of the train split and scores ``test_pairs`` of the test split.

    Returns:
        {"unmasked": {"added_auroc", "removed_auroc"}, "decoder": {...}, "pairs": {"train", "test"}}.
    """
    from diffvqa_core.metrics import mean_auroc

    model.eval()
    x_train, y_train = pair_features(model, data_root, "train", train_pairs, lam, batch_size)
    x_test, y_test = pair_features(model, data_root, "test", test_pairs, lam, batch_size)
    result: dict = {"pairs": {"train": len(y_train), "test": len(y_test)}}
    names = y_train.shape[1] // 2
    for name in FEATURE_SETS:
        scores = fit_linear_probe(x_train[name], y_train, x_test[name], weight_decay)
        result[name] = {"added_auroc": mean_auroc(scores[:, :names], y_test[:, :names].numpy()),
                        "removed_auroc": mean_auroc(scores[:, names:], y_test[:, names:].numpy())}
    return result


@torch.no_grad()
def pair_features(model, data_root: Path, split: str, limit: int, lam: float,
                  batch_size: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Pooled features of the first ``limit`` distinct pairs of a split, and their change labels.

    Returns:
        ({"unmasked": (P, 6C), "decoder": (P, 6C)}, (P, 2 * findings) labels: added, then removed).
    """
    from diffvqa_core.data.reader import DiffVQADataset

    dataset = DiffVQADataset(data_root, split=split, image_size=model.config.image_size)
    if not dataset.has_ground_truth:
        raise ValueError(f"{data_root} has no ground-truth sidecars: probe-changes needs a synthetic set")
    pairs = sorted({(row["study_id"], row["ref_id"]) for row in dataset.rows})[:limit]
    if not pairs:
        raise ValueError(f"no {split} pairs under {data_root}")
    features: dict[str, list[torch.Tensor]] = {name: [] for name in FEATURE_SETS}
    for start in tqdm(range(0, len(pairs), batch_size), desc=f"features ({split})", unit="batch"):
        chunk = pairs[start:start + batch_size]
        main = torch.stack([dataset.film(study) for study, _ in chunk])
        ref = torch.stack([dataset.film(reference) for _, reference in chunk])
        state = model.visual_state(main, ref)
        fused = model.fuse(state.prior.union, state.adaptive.fused, lam)
        masked = model.masked_encode(state, fused, with_mask_image=False)
        features["unmasked"].append(_pair_vector(state.features_main, state.features_ref))
        features["decoder"].append(_pair_vector(*model.image_slots(masked, state)))
    labels = torch.from_numpy(np.stack([change_labels(data_root, study, reference) for study, reference in pairs]))
    return {name: torch.cat(parts).float() for name, parts in features.items()}, labels


def _pair_vector(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """(B, N, C) tokens of each slot -> (B, 6C): [pool(first), pool(second), difference], pool = mean | max."""
    pooled_first = torch.cat([first.mean(1), first.amax(1)], dim=-1)
    pooled_second = torch.cat([second.mean(1), second.amax(1)], dim=-1)
    return torch.cat([pooled_first, pooled_second, pooled_first - pooled_second], dim=-1)


def change_labels(data_root: Path, study_id: str, ref_id: str) -> np.ndarray:
    """(2 * findings,) float: 1 where a finding is in the main study only (added) / the reference only (removed)."""
    from diffvqa_core.data import layout
    from diffvqa_core.data.vocabulary import FINDINGS

    record = json.loads(layout.sidecar_path(Path(data_root), study_id, ref_id).read_text(encoding="utf-8"))
    main = {finding["name"] for finding in record["findings_main"]}
    reference = {finding["name"] for finding in record["findings_ref"]}
    labels = np.zeros((2, len(FINDINGS)), np.float32)
    for name in main - reference:
        labels[0, FINDINGS.index(name)] = 1.0
    for name in reference - main:
        labels[1, FINDINGS.index(name)] = 1.0
    return labels.reshape(-1)


def fit_linear_probe(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
                     weight_decay: float) -> np.ndarray:
    """Standardises with the training statistics, fits multi-label logistic regression, returns test logits."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    weight = torch.zeros(x_train.shape[1], y_train.shape[1], requires_grad=True)
    bias = torch.zeros(y_train.shape[1], requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = x_train @ weight + bias
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y_train)
        loss = loss + weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return (x_test @ weight + bias).detach().numpy()
