"""Does a prior's CLS-patch attention point at what changed? (eq. 4 measured on the synthetic benchmark).

For each changed pair of a synthetic benchmark root (``python -m train synth``), the prior branch of the
model (``diffvqa_core.masks.DinoPrior``: A = cosine(CLS, patch), min-max scaled per image, resized to the
image) gives U = max(A_main, A_ref), which is scored against the ground-truth change mask with the project's
metrics (pooled-pixel AUROC and the pointing game, ``diffvqa_core.metrics``). The main film is first put in
the reference frame with the ground-truth pose, so the numbers measure the prior, not a registration.

Maps compared: the pretrained prior, a random-weight ViT of the same config (same initialisation seed as
the pretraining run, so the only difference is training), a centred Gaussian (the "look at the middle of
the chest" baseline) and the blurred absolute difference of the registered pair (a trivial change detector,
for scale: it sees the change directly, which the prior is not designed to do).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm.auto import tqdm

from diffvqa_core.config import DiffVQAConfig
from diffvqa_core.data import affine, layout
from diffvqa_core.imaging import read_image
from diffvqa_core.masks import DinoPrior
from diffvqa_core.metrics import mask_auroc, pointing_game


@dataclasses.dataclass
class ChangedPair:
    """One synthetic pair with a non-empty change mask, all (S, S) float32 in the reference frame."""

    main: np.ndarray  # registered with the ground-truth pose
    ref: np.ndarray
    change_mask: np.ndarray  # 0/1


def prior_fields(prior_dir: str | Path) -> dict:
    """``DiffVQAConfig`` fields that load a prior saved by ``pretrain-prior`` with its own preprocessing.

    Reads the input side, mean and standard deviation from ``preprocessor_config.json`` beside the weights.
    """
    processor = json.loads((Path(prior_dir) / "preprocessor_config.json").read_text())
    return {
        "prior": str(prior_dir),
        "prior_pretrained": True,
        "prior_image_size": int(processor["size"]["height"]),
        "prior_mean": tuple(processor["image_mean"]),
        "prior_std": tuple(processor["image_std"]),
    }


def load_changed_pairs(root: str | Path, size: int, limit: int | None = None) -> list[ChangedPair]:
    """Read the pairs of a synthetic benchmark root whose change mask is not empty.

    Args:
        root: benchmark root holding ``files/`` and ``ground_truth/``.
        size: side the films and masks are resized to.
        limit: keep at most this many pairs (in sorted sidecar order).

    Returns:
        The changed pairs, the main film warped into the reference frame with ``inverse(theta_gt)``.

    Raises:
        FileNotFoundError: when the root has no ground-truth sidecars.
    """
    root = Path(root)
    sidecars = sorted((root / layout.GROUND_TRUTH_DIR).glob("*.json"))
    if not sidecars:
        raise FileNotFoundError(f"no ground-truth sidecars under {root / layout.GROUND_TRUTH_DIR}")
    pairs = []
    for sidecar in sidecars:
        truth = json.loads(sidecar.read_text())
        study, ref_study, subject = truth["study_id"], truth["ref_id"], truth["subject_id"]
        change = read_image(layout.change_mask_path(root, study, ref_study)) > 0.5
        if not change.any():
            continue
        main = read_image(_film(root, subject, study))
        main = affine.warp(main, affine.invert(np.asarray(truth["theta_gt"])))
        ref = read_image(_film(root, subject, ref_study))
        change = (_resize(change.astype(np.float32), size) > 0.5).astype(np.float32)
        pairs.append(ChangedPair(main=_resize(main, size), ref=_resize(ref, size), change_mask=change))
        if limit is not None and len(pairs) >= limit:
            break
    return pairs


def _film(root: Path, subject: str, study: str) -> Path:
    (path,) = (root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}").glob("*.jpg")
    return path


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    return cv2.resize(image.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)


@torch.no_grad()
def union_prior(prior: DinoPrior, pairs: list[ChangedPair], batch_size: int = 16) -> list[np.ndarray]:
    """U = max(A_main, A_ref) (eq. 4) for each pair, (S, S) in [0, 1]."""
    maps = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        main = torch.stack([torch.from_numpy(p.main) for p in chunk]).unsqueeze(1).expand(-1, 3, -1, -1)
        ref = torch.stack([torch.from_numpy(p.ref) for p in chunk]).unsqueeze(1).expand(-1, 3, -1, -1)
        union = torch.maximum(prior(main), prior(ref))  # (b, 1, S, S)
        maps.extend(union[:, 0].numpy())
    return maps


def centre_gaussian(size: int, sigma: float = 0.25) -> np.ndarray:
    """A centred isotropic Gaussian, ``sigma`` in units of the image side."""
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size - 0.5
    return np.exp(-(xx**2 + yy**2) / (2 * sigma**2)).astype(np.float32)


def absolute_difference(pair: ChangedPair, blur_fraction: float = 0.03) -> np.ndarray:
    """|main - ref| of the registered pair, Gaussian-blurred (sigma as a fraction of the side)."""
    sigma = blur_fraction * pair.main.shape[0]
    return cv2.GaussianBlur(np.abs(pair.main - pair.ref), (0, 0), sigma)


def score(maps: list[np.ndarray], pairs: list[ChangedPair]) -> dict[str, float]:
    """Pooled-pixel AUROC and pointing-game hit rate of ``maps`` against the pairs' change masks."""
    masks = [p.change_mask for p in pairs]
    hits = [pointing_game(m, c) for m, c in zip(maps, masks)]
    return {"auroc": round(mask_auroc(maps, masks), 4), "pointing_game": round(float(np.mean(hits)), 4)}


def evaluate_against_random(prior_dir: str | Path, data_root: str | Path, pairs: int = 64, seed: int = 0,
                            eval_size: int = 128) -> dict:
    """Score a saved prior, a random-weight ViT of the same config and two simple baselines.

    Args:
        prior_dir: output of ``pretrain-prior`` (Dinov2Model + preprocessor_config.json).
        data_root: synthetic benchmark root with ground truth.
        pairs: number of changed pairs to use.
        seed: initialisation seed of the random ViT (use the pretraining seed: same starting weights).
        eval_size: side at which maps and masks are compared.

    Returns:
        ``{"summary": {name: {"auroc", "pointing_game"}}, "n_pairs", "changed_fraction", "settings"}``.
    """
    data = load_changed_pairs(data_root, eval_size, limit=pairs)
    config = dataclasses.replace(DiffVQAConfig(), **prior_fields(prior_dir))
    pretrained = DinoPrior(config, pretrained=True)
    torch.manual_seed(seed)
    random_config = dataclasses.replace(
        config, prior_pretrained=False, prior_overrides=pretrained.backbone.config.to_diff_dict()
    )
    random_vit = DinoPrior(random_config, pretrained=False)
    centre = centre_gaussian(eval_size)
    summary = {}
    for name, maps in tqdm(
        [
            ("pretrained_prior", lambda: union_prior(pretrained, data)),
            ("random_vit", lambda: union_prior(random_vit, data)),
            ("centre_gaussian", lambda: [centre] * len(data)),
            ("abs_difference", lambda: [absolute_difference(p) for p in data]),
        ],
        desc="evaluate prior",
    ):
        summary[name] = score(maps(), data)
    return {
        "summary": summary,
        "n_pairs": len(data),
        "changed_fraction": round(float(np.mean([p.change_mask.mean() for p in data])), 4),
        "settings": {"prior_dir": str(prior_dir), "data_root": str(data_root), "eval_size": eval_size,
                     "random_seed": seed, "registration": "ground-truth pose (oracle)"},
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m train.dino.evaluate_prior PRIOR_DIR DATA_ROOT [--pairs N] [--out FILE]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m train.dino.evaluate_prior", description=__doc__.splitlines()[0])
    parser.add_argument("prior_dir", type=Path, help="output directory of pretrain-prior")
    parser.add_argument("data_root", type=Path, help="synthetic benchmark root with ground_truth/")
    parser.add_argument("--pairs", type=int, default=64, help="changed pairs to score")
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed of the random-weight ViT")
    parser.add_argument("--out", type=Path, default=None, help="write the report here as JSON")
    args = parser.parse_args(argv)
    report = evaluate_against_random(args.prior_dir, args.data_root, pairs=args.pairs, seed=args.seed)
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
