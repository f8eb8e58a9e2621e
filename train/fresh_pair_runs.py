"""What the commands that train on freshly simulated pairs share (``pretrain-change``, ``pretrain-registration``):
their data options, the fixed validation pairs, the training loader and the learning-rate schedule.

The pairs themselves come from ``train.online_pairs.OnlinePairs``; each command passes the options of its own
stream (``residual=False`` for the registration, which reads the unregistered main film; ``residual_scale`` for the
change encoder).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def add_stream_arguments(parser: argparse.ArgumentParser, *, generation_size: Sequence[int],
                         val_pairs: int) -> None:
    """The data options: which films, how many validation pairs, how many simulating processes and threads."""
    parser.add_argument("--generation-size", type=int, nargs="+", default=list(generation_size),
                        help="side(s) at which films are drawn, one per patient (train synth's default is 512)")
    parser.add_argument("--backgrounds", type=Path, help="folder of real frontal films used as anatomy")
    parser.add_argument("--background-fraction", type=float, default=0.5,
                        help="share of training patients drawn on a real film (with --backgrounds)")
    parser.add_argument("--val-backgrounds", type=Path,
                        help="real films for the validation pairs (default: --backgrounds); keep them out of "
                             "--backgrounds to score unseen films")
    parser.add_argument("--val-pairs", type=int, default=val_pairs, help="validation pairs per kind (phantom, real)")
    parser.add_argument("--workers", type=int, default=1, help="processes simulating pairs")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")


def images_in(folder: Path | None) -> list[str]:
    """The PNG/JPEG files of a folder, sorted (empty for None)."""
    if folder is None:
        return []
    found = sorted(str(p) for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise FileNotFoundError(f"no PNG/JPEG images in {folder}")
    return found


def collate(items: list[dict]) -> dict:
    """Stacks the tensors of a list of ``OnlinePairs`` items; lists the rest."""
    return {key: torch.stack([i[key] for i in items]) if isinstance(items[0][key], torch.Tensor)
            else [i[key] for i in items] for key in items[0]}


def validation_pairs(args: argparse.Namespace, seed: int, image_size: int, **stream) -> dict[str, list[dict]]:
    """Fixed validation pairs of ``seed`` (patients far from any training stream's), without augmentation: on
    phantoms, and on real films (``--val-backgrounds``, else ``--backgrounds``) when there are any."""
    from train.online_pairs import OnlinePairs

    kinds = [("phantom", [], 0.0)]
    real = images_in(args.val_backgrounds or args.backgrounds)
    if real:
        kinds.append(("real", real, 1.0))
    sets = {}
    for name, backgrounds, fraction in kinds:
        pairs = OnlinePairs(seed, image_size, generation_size=args.generation_size, backgrounds=backgrounds,
                            background_fraction=fraction, augment=False, offset=10**9, limit=args.val_pairs,
                            **stream)
        sets[name] = list(tqdm(pairs, total=args.val_pairs, desc=f"validation pairs ({name})", unit="pair"))
    return sets


def training_loader(args: argparse.Namespace, image_size: int, **stream) -> DataLoader:
    """The endless training stream of ``--seed`` in batches of ``--batch-size``, simulated by ``--workers``."""
    from train.online_pairs import OnlinePairs

    pairs = OnlinePairs(args.seed, image_size, generation_size=args.generation_size,
                        backgrounds=images_in(args.backgrounds),
                        background_fraction=args.background_fraction if args.backgrounds else 0.0, **stream)
    return DataLoader(pairs, batch_size=args.batch_size, num_workers=args.workers, collate_fn=collate,
                      persistent_workers=args.workers > 0, prefetch_factor=4 if args.workers else None)


def warmup_cosine(optimizer: torch.optim.Optimizer, steps: int, warmup: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``steps``."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(s, steps) / steps)))
